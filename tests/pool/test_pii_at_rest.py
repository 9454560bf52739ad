"""PII at rest: after leads are pooled, claimed and expired, no table of the database
holds any of their personal data in clear, in any form it was sent or normalised to.
Also key rotation (`lead-exchange rotate-key`): every sealed value moves to the new key
and still opens, so the old key can leave the config."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from exchange.auction.offers import sweep_pool
from exchange.config import parse_config
from exchange.core.offers import sealing_context
from exchange.core.sealing import PiiKeyRing, decode_key, key_ring
from exchange.ledger.pool import create_pool, migrate
from exchange.tools.rotate_key import rotate_keys
from exchange.tools.simulator import BuyerSimulator
from tests.pool.pooling import (
    NEW_PII_KEY,
    PII_KEY,
    claim,
    direct_post,
    listing,
    pool_config,
    pull_buyer,
    pull_specs,
)
from tests.support.harness import PING_LEAD, running_exchange

# Distinctive values (no run of hex letters a bytea's hex text could hold by chance).
PEOPLE = [
    {"first_name": "Zelphyra", "last_name": "Quonksworth", "email": "Zelphyra.Q@Mailhost-Test.org",
     "phone": "(415) 555-0147", "street_address": "77 Xylophone Terrace"},
    {"first_name": "Myrtlewyn", "last_name": "Puxtonhall", "email": "MYRTLE.P@Mailhost-Test.org",
     "phone": "415.555.0182", "street_address": "9 Quiltwork Row"},
    {"first_name": "Thornquist", "last_name": "Vellowyn", "email": "t.vellowyn@Mailhost-Test.org",
     "phone": "+1 415 555 0193", "street_address": "3 Yarrowmoor Lane"},
]  # fmt: skip


def needles(person: dict[str, str]) -> set[str]:
    """Every form a value may be stored in: as sent, normalised, digits only, lower case."""
    found = set()
    for value in person.values():
        found.add(value.lower())
        digits = "".join(c for c in value if c.isdigit())
        if len(digits) >= 10:
            found.update({digits[-10:], "+1" + digits[-10:]})
    return found


async def dump_every_table(database_url: str) -> dict[str, str]:
    """Each table of the database (partitions included) as text, lower case."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT c.oid::regclass::text AS name FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%'"
        )
        dumped = {}
        for table in tables:
            name = table["name"]
            rows = await conn.fetch(f"SELECT t::text AS row FROM {name} t")
            dumped[name] = "\n".join(r["row"] for r in rows).lower()
        return dumped
    finally:
        await conn.close()


async def test_no_table_holds_pii_in_clear_after_pooling_claiming_and_expiry(
    database_url: str,
) -> None:
    async with BuyerSimulator(pull_specs("puller")) as sim:
        text = pool_config([pull_buyer(sim, "puller")], exchange={"dedupe_hash_key": "k" * 20})
        async with running_exchange(text, database_url) as ex:
            claimed = (await direct_post(ex, {**PING_LEAD, **PEOPLE[0]}))["ping_id"]
            assert (await claim(ex, "puller", claimed))[0] == 200
            await direct_post(ex, {**PING_LEAD, **PEOPLE[1]})
            ex.ctx.clock.advance(timedelta(hours=80))
            assert await sweep_pool(ex.ctx) == {"auto_insurance": 1}
            open_id = (await direct_post(ex, {**PING_LEAD, **PEOPLE[2]}))["ping_id"]
            assert [o["lead_id"] for o in await listing(ex, "puller")] == [open_id]
            await ex.ctx.writer.flush()
            dumped = await dump_every_table(database_url)
    assert "pool_offers" in dumped and "sales" in dumped
    assert PING_LEAD["zip"] in dumped["pool_offers"]  # the dump does read the rows
    for person in PEOPLE:
        for needle in needles(person):
            holding = [t for t, rows in dumped.items() if needle in rows]
            assert holding == [], f"{needle!r} in clear in {holding}"


async def test_rotate_key_reseals_every_value_under_the_new_key(database_url: str) -> None:
    async with BuyerSimulator(pull_specs("puller")) as sim:
        buyers = [pull_buyer(sim, "puller")]
        async with running_exchange(pool_config(buyers), database_url) as ex:
            ids = [(await direct_post(ex, {**PING_LEAD, **p}))["ping_id"] for p in PEOPLE]
        rotated: dict[str, Any] = {"pii_key": NEW_PII_KEY, "pii_keys_retired": [PII_KEY]}
        loaded = parse_config(pool_config(buyers, exchange=rotated), "rotated.yaml", env={})
        ring = key_ring(loaded.settings)
        assert ring is not None
        pool = await create_pool(database_url, min_size=1, max_size=2)
        try:
            done = await rotate_keys(pool, ring, batch=2)
            again = await rotate_keys(pool, ring, batch=2)
            keys = await pool.fetch("SELECT DISTINCT pii_key_id FROM pool_offers")
        finally:
            await pool.close()
        assert done.resealed["pool_offers"] == 3 and done.unreadable["pool_offers"] == 0
        assert again.resealed["pool_offers"] == 0
        assert [k["pii_key_id"] for k in keys] == [ring.current_id]
        # The old key gone from the config, every lead still opens.
        only_new = pool_config(buyers, exchange={"pii_key": NEW_PII_KEY})
        async with running_exchange(only_new, database_url) as ex:
            status, won = await claim(ex, "puller", ids[1])
    assert status == 200, won
    assert won["lead"]["first_name"] == "Myrtlewyn"
    assert won["lead"]["email"] == "myrtle.p@mailhost-test.org"


async def _seq_scans(database_url: str, table: str) -> int:
    """The table's sequential scans so far, once every closed connection's count is in."""
    last = -1
    for _ in range(50):
        conn = await asyncpg.connect(database_url)
        try:
            scans = int(
                await conn.fetchval(
                    "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = $1", table
                )
            )
        finally:
            await conn.close()
        if scans == last:
            return scans
        last = scans
        await asyncio.sleep(0.2)
    return last


async def test_rotate_key_re_seals_each_value_by_its_row_key_without_scanning_the_table(
    database_url: str,
) -> None:
    old = PiiKeyRing(decode_key(PII_KEY))
    now = datetime.now(UTC)
    rows = []
    for _ in range(2000):
        ping_id = uuid.uuid4()
        sealed = old.seal({"first_name": "Zelphyra"}, sealing_context(str(ping_id)))
        rows.append((ping_id, now, now + timedelta(hours=72), sealed.key_id, sealed.blob))
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        await pool.executemany(
            "INSERT INTO pool_offers (ping_id, seller_id, vertical, lead, start_price_cents,"
            " floor_price_cents, decay_cents_per_hour, entered_at, expires_at, pii_key_id, pii)"
            " VALUES ($1, 'acme-media', 'auto_insurance', '{}', 2000, 200, 100, $2, $3, $4, $5)",
            rows,
        )
        await pool.execute("ANALYZE pool_offers")
    finally:
        await pool.close()
    before = await _seq_scans(database_url, "pool_offers")
    ring = PiiKeyRing(decode_key(NEW_PII_KEY), [decode_key(PII_KEY)])
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        done = await rotate_keys(pool, ring, batch=500)
    finally:
        await pool.close()
    scans = await _seq_scans(database_url, "pool_offers") - before
    assert done.resealed["pool_offers"] == 2000
    # A few scans to find what is left under the old key; none per value re-sealed (a
    # whole-table scan per value makes a rotation quadratic: hours for a full pool).
    assert scans < 50, scans
