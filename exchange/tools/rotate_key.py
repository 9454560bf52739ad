"""`lead-exchange rotate-key`: re-seal every stored PII value that is not under the
current ``exchange.pii_key`` (docs/reliability.md, "PII at rest").

Rotating a key: put the new key in ``exchange.pii_key`` and the old one in
``exchange.pii_keys_retired``, restart (or roll) the exchange so new values are sealed
under the new key, run this command, then drop the old key from the config. The command
works in batches over every table that keeps sealed PII (exchange/ledger/offers.py,
``SEALED_TABLES``), each value replaced only if its row did not change meanwhile (a
claim or an expiry purging it), so it is safe while the exchange runs; run again, it
finds nothing left to do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field

import asyncpg

from exchange.core.offers import sealing_context
from exchange.core.sealing import PiiKeyRing, SealingError, key_ring
from exchange.ledger.offers import (
    existing_sealed_tables,
    replace_sealed,
    sealed_key_counts,
    sealed_not_under,
)
from exchange.ledger.pool import create_pool, migrate
from exchange.server.supervisor import load_or_exit

BATCH = 500


@dataclass
class Rotation:
    """What one run did, per table: values re-sealed, and values it could not open
    (sealed under a key in neither pii_key nor pii_keys_retired, or damaged)."""

    resealed: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, int] = field(default_factory=dict)


async def rotate_keys(pool: asyncpg.Pool, ring: PiiKeyRing, batch: int = BATCH) -> Rotation:
    """Re-seal every value of every sealed table under ``ring``'s current key."""
    done = Rotation()
    for table, key in await existing_sealed_tables(pool):
        skipped: set[str] = set()
        resealed = unreadable = 0
        while True:
            rows = await sealed_not_under(pool, table, key, ring.current_id, batch + len(skipped))
            rows = [(row_id, sealed) for row_id, sealed in rows if row_id not in skipped]
            if not rows:
                break
            for row_id, sealed in rows:
                try:
                    fresh = ring.reseal(sealed, sealing_context(row_id))
                except SealingError:
                    skipped.add(row_id)
                    unreadable += 1
                    continue
                if await replace_sealed(pool, table, key, row_id, sealed, fresh):
                    resealed += 1
        done.resealed[table] = resealed
        done.unreadable[table] = unreadable
    return done


def cmd_rotate_key(args: argparse.Namespace) -> int:
    loaded = load_or_exit(args.config)
    ring = key_ring(loaded.settings)
    if ring is None:
        print(f"{args.config}: exchange.pii_key is not set: nothing to seal with", file=sys.stderr)
        return 2
    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        print("--database-url or DATABASE_URL is needed", file=sys.stderr)
        return 2

    async def run() -> int:
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            await migrate(pool)
            done = await rotate_keys(pool, ring, args.batch)
            counts = await sealed_key_counts(pool)
        finally:
            await pool.close()
        for table, resealed in done.resealed.items():
            left = sum(n for k, n in counts.get(table, {}).items() if k != ring.current_id)
            print(
                f"{table}: {resealed} re-sealed under key {ring.current_id}, "
                f"{done.unreadable[table]} unreadable, {left} under other keys"
            )
        return 1 if any(done.unreadable.values()) else 0

    return asyncio.run(run())


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rotate = sub.add_parser(
        "rotate-key", help="re-seal stored PII under the current exchange.pii_key"
    )
    rotate.add_argument("--config", required=True)
    rotate.add_argument("--database-url", default=None)
    rotate.add_argument("--batch", type=int, default=BATCH, help="values per round")
    rotate.set_defaults(func=cmd_rotate_key)
