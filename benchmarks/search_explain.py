"""How ``GET /v1/auctions`` finds auctions in a large ledger: the plan and time of each
filter's query (exchange/ledger/search.py builds them) over millions of pings.

    python -m benchmarks.search_explain [--pings 2000000] [--buyers 5]

Fills ``pings`` (time-ordered ids over the last ``--pings`` milliseconds; 20 sellers, one
of them rare at 0.1 %; three verticals; 30 % with a sub-ID; every tenth with an external
id) and ``bid_outcomes`` (``--buyers`` rows per ping, one buyer in 1 % of auctions only)
on an embedded PostgreSQL (or DATABASE_URL's server, in a database of its own), then
runs EXPLAIN (ANALYZE, BUFFERS) on the first page (50 rows) of each filter and writes
the plans and times to benchmarks/results/search-explain.md.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import uvloop

from benchmarks.database import migrated_connection, scratch_databases
from exchange.ledger.search import AuctionFilter, search_sql

RESULTS = Path(__file__).with_name("results") / "search-explain.md"


async def _prefill(conn: asyncpg.Connection, pings: int, buyers: int) -> None:
    start = datetime.now(UTC) - timedelta(milliseconds=pings + 60_000)
    start_ms = int(start.timestamp() * 1000)
    # Ids as the exchange makes them: 48 bits of Unix milliseconds first.
    await conn.execute(
        "CREATE TEMP TABLE gen AS SELECT i,"
        " (lpad(to_hex($1::bigint + i), 12, '0') || '7' ||"
        "  substr(md5(i::text), 1, 19))::uuid AS ping_id,"
        " $2::timestamptz + i * interval '1 millisecond' AS at"
        " FROM generate_series(1, $3) AS i",
        start_ms,
        start,
        pings,
    )
    await conn.execute(
        "INSERT INTO pings (ping_id, seller_id, vertical, external_id, mode, tmax_ms, lead,"
        " status, price_cents, payout_cents, ping_tree, created_at, expires_at, duration_us,"
        " overhead_us, sub_id)"
        " SELECT ping_id,"
        "  CASE WHEN i % 1000 = 0 THEN 'rare-seller' ELSE 'seller-' || (i % 19) END,"
        "  (ARRAY['auto_insurance', 'home_insurance', 'solar'])[1 + i % 3],"
        "  CASE WHEN i % 10 = 0 THEN 'ext-' || i END, 'ping', 250, '{}',"
        "  CASE WHEN i % 10 < 7 THEN 'bid' ELSE 'no_bid' END,"
        "  CASE WHEN i % 10 < 7 THEN 1500 END, CASE WHEN i % 10 < 7 THEN 1275 END, '[]',"
        "  at, at + interval '2 minutes', 40000, 900,"
        "  CASE WHEN i % 10 < 3 THEN 'src-' || (i % 50) END"
        " FROM gen"
    )
    await conn.execute(
        "INSERT INTO external_ids (seller_id, external_id, ping_id, created_at)"
        " SELECT seller_id, external_id, ping_id, created_at FROM pings"
        " WHERE external_id IS NOT NULL"
    )
    await conn.execute(
        "INSERT INTO bid_outcomes (ping_id, buyer_id, outcome, price_cents, latency_us, rank,"
        " reason, created_at)"
        " SELECT g.ping_id, 'buyer-' || b, 'bid', 1500, 5000, b, NULL, g.at"
        " FROM gen g, generate_series(1, $1) AS b",
        buyers,
    )
    await conn.execute(
        "INSERT INTO bid_outcomes (ping_id, buyer_id, outcome, price_cents, latency_us, rank,"
        " reason, created_at)"
        " SELECT ping_id, 'rare-buyer', 'bid', 1500, 5000, 9, NULL, at FROM gen"
        " WHERE i % 100 = 0"
    )
    await conn.execute(
        "INSERT INTO posts (ping_id, seller_id, status, price_cents, payout_cents, claimed_at,"
        " finished_at) SELECT ping_id, 's', CASE WHEN i % 3 = 0 THEN 'unsold' ELSE 'sold' END,"
        " 1500, 1275, at, at FROM gen WHERE i % 10 < 7 AND i % 2 = 0"
    )
    for table in ("pings", "bid_outcomes", "posts", "external_ids"):
        await conn.execute(f"VACUUM ANALYZE {table}")


CASES: dict[str, AuctionFilter] = {
    "no filter": AuctionFilter(),
    "seller (common, 5 %)": AuctionFilter(seller="seller-3"),
    "seller (rare, 0.1 %)": AuctionFilter(seller="rare-seller"),
    "vertical": AuctionFilter(vertical="solar"),
    "status sold": AuctionFilter(status="sold"),
    "sub_id": AuctionFilter(sub_id="src-7"),
    "external_id": AuctionFilter(external_id="ext-500"),
    "buyer (in every auction)": AuctionFilter(buyer="buyer-2"),
    "buyer (in 1 %)": AuctionFilter(buyer="rare-buyer"),
    "seller + status + vertical": AuctionFilter(
        seller="seller-4", status="no_bid", vertical="home_insurance"
    ),
}


async def _explain(conn: asyncpg.Connection, where: AuctionFilter) -> tuple[str, float]:
    sql, args = search_sql(where)
    plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *args)
    lines = [r[0] for r in plan]
    started = time.perf_counter()
    for _ in range(5):
        await conn.fetch(sql, *args)
    return "\n".join(lines), (time.perf_counter() - started) / 5 * 1000


async def _run(url: str, pings: int, buyers: int) -> str:
    async with migrated_connection(url) as conn:
        await conn.execute("SET statement_timeout = 0")
        started = time.monotonic()
        await _prefill(conn, pings, buyers)
        filled = time.monotonic() - started
        outcomes = await conn.fetchval("SELECT count(*) FROM bid_outcomes")
        out = [
            "# Auction search at scale: plans",
            "",
            f"{pings:,} pings and {outcomes:,} bid outcomes (filled in {filled:.0f} s); "
            "first page of 50, newest first. Time: mean of 5 runs after the EXPLAIN, "
            "milliseconds, on this project's 2-core machine. "
            "Written by `python -m benchmarks.search_explain`.",
            "",
            "| filter | ms |",
            "|---|---:|",
        ]
        plans = []
        for name, where in CASES.items():
            plan, ms = await _explain(conn, where)
            out.append(f"| {name} | {ms:.2f} |")
            plans.append(f"### {name}\n\n```text\n{plan}\n```\n")
        return "\n".join(out) + "\n\n## Plans\n\n" + "\n".join(plans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=2_000_000)
    parser.add_argument("--buyers", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with scratch_databases("search-explain-", [f"search_explain_{os.getpid()}"]) as (_, [url]):
        text = uvloop.run(_run(url, args.pings, args.buyers))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text.split("## Plans")[0])


if __name__ == "__main__":
    main()
