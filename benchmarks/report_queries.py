"""How long the operator reports take over a ledger of millions of rows.

    python -m benchmarks.report_queries [--rows 2000000]

Fills a fresh embedded PostgreSQL with synthetic bid outcomes, post attempts, sales and
returns spread over 30 days and 20 buyers, then times the buyer and seller reports over
one day and over the whole month. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from exchange.ledger.pool import create_pool, migrate
from exchange.ledger.store import Store
from exchange.server.embedded import EmbeddedPostgres

FILL = """
INSERT INTO pings (ping_id, seller_id, vertical, mode, tmax_ms, lead, status, price_cents,
                   payout_cents, ping_tree, created_at, expires_at, duration_us, overhead_us)
SELECT gen_random_uuid(), 'seller-' || (g % 5), 'auto_insurance', 'ping', 1000, '{}'::jsonb,
       'bid', 1000, 850, '[]'::jsonb, $1 - (g % 2592000) * interval '1 second',
       $1, 1000, 100
FROM generate_series(1, $2 / 10) g;

INSERT INTO bid_outcomes (ping_id, buyer_id, outcome, price_cents, latency_us, rank, created_at)
SELECT gen_random_uuid(), 'buyer-' || (g % 20),
       (ARRAY['bid','bid','no_bid','timeout','filtered','error'])[1 + g % 6],
       500 + g % 3000, 1000 + g % 200000, 1 + g % 5,
       $1 - (g % 2592000) * interval '1 second'
FROM generate_series(1, $2) g;

INSERT INTO post_attempts (ping_id, attempt, buyer_id, outcome, price_cents, latency_us, created_at)
SELECT gen_random_uuid(), 1, 'buyer-' || (g % 20),
       (ARRAY['accepted','accepted','rejected','timeout'])[1 + g % 4], 1000, 5000,
       $1 - (g % 2592000) * interval '1 second'
FROM generate_series(1, $2 / 10) g;

INSERT INTO sales (ping_id, seller_id, buyer_id, vertical, price_cents, payout_cents, created_at)
SELECT gen_random_uuid(), 'seller-' || (g % 5), 'buyer-' || (g % 20), 'auto_insurance',
       1000 + g % 2000, 850, $1 - (g % 2592000) * interval '1 second'
FROM generate_series(1, $2 / 20) g;

INSERT INTO returns (sale_id, ping_id, buyer_id, seller_id, vertical, credit_cents,
                     payout_reversal_cents, reason, created_at)
SELECT sale_id, ping_id, buyer_id, seller_id, vertical, price_cents, payout_cents, 'test',
       created_at FROM sales WHERE sale_id % 25 = 0;
"""


def _data_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="lead-exchange-reports-"))
    folder.chmod(0o755)  # reachable by the `pgserver` user when run as root
    return folder


async def run(rows: int) -> None:
    embedded = EmbeddedPostgres(_data_dir())
    url = embedded.start()
    try:
        pool = await create_pool(url, min_size=1, max_size=2)
        await migrate(pool)
        now = datetime.now(UTC)
        started = time.perf_counter()
        async with pool.acquire() as conn:
            for statement in FILL.split(";\n\n"):
                sql = (
                    statement.replace("$2 / 10", str(rows // 10))
                    .replace("$2 / 20", str(rows // 20))
                    .replace("$2", str(rows))
                )
                if "$1" in sql:
                    await conn.execute(sql.replace("$1", "$1::timestamptz"), now, timeout=1800)
                else:
                    await conn.execute(sql, timeout=1800)
        store = Store(pool)
        await store.rebuild_rollups()
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE", timeout=600)
        print(f"filled {rows:,} bid outcomes in {time.perf_counter() - started:.0f} s")
        print("| report | range | seconds (median of 3) |\n|---|---|---|")
        for name, query in (("buyers", store.buyer_report), ("sellers", store.seller_report)):
            for label, span in (("1 day", timedelta(days=1)), ("30 days", timedelta(days=30))):
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    await query(now - span, now + timedelta(seconds=1))
                    times.append(time.perf_counter() - t0)
                print(f"| {name} | {label} | {sorted(times)[1]:.3f} |")
        await pool.close()
    finally:
        embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    asyncio.run(run(parser.parse_args().rows))


if __name__ == "__main__":
    main()
