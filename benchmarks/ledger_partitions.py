"""What a ping's ledger rows cost to write as the ledger grows: the partitioned ledger
(migration 0011, one partition per day) against the same ledger without that migration
(one table each), at growing numbers of bid outcome rows already there.

    python -m benchmarks.ledger_partitions [--sizes 1000000,20000000] [--pings 5000]
        [--days 20] [--layouts partitioned,unpartitioned] [--budget-s 1800]

Each layout has a database of its own on an embedded PostgreSQL (or DATABASE_URL's
server; its CPU is then not measured), filled to each size in turn: bid outcome rows
(and a tenth as many pings) spread evenly over the ``--days`` days before today, each day
in its own partition where there are partitions. At each size, after a VACUUM ANALYZE
(what autovacuum would have done) and a CHECKPOINT, ``--pings`` auctions of ten buyers
are written into today the way the batch writer writes them (their bid outcomes in
batches of 25 auctions with the rollups, each ping row on its own), the layouts in
alternation, twice, and PostgreSQL's CPU, the client's wall time and WAL bytes per ping
are reported.

Last, the oldest day is removed from each, as the retention does it (a dropped
partition) and as it would be without partitions (a DELETE, then the VACUUM that makes
the space reusable), with the time and WAL each took.

Bounded: the run stops filling once ``--budget-s`` has passed (the sizes reached are
printed, and what was not reached is said), and every measurement writes a fixed number
of pings.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import uvloop

from benchmarks.database import scratch_databases
from benchmarks.ledger_ids import auction_batch
from benchmarks.processes import cpu_seconds
from benchmarks.runner import Database
from exchange.auction.context import new_ping_id
from exchange.ledger.pool import _migration_files, init_connection
from exchange.ledger.rollups import INSERT_SQL, ROLLUP_ARGS
from exchange.ledger.rows import BidOutcomeRow, PingRow, encode_rows

LAYOUTS = ("partitioned", "unpartitioned")
PARTITIONING = 11  # the migration that partitions the ledger
# Rows added per INSERT while filling (one transaction each).
FILL_CHUNK = 500_000
# Row i's time: a second of day ``i % days + 1`` before today.
_SPREAD = (
    "date_trunc('day', now()) - (i % $3 + 1) * interval '1 day' + (i % 86400) * interval '1 s'"
)


@dataclass
class Measured:
    layout: str
    size: int
    round_no: int
    pg_cpu_us: float | None
    wall_us: float
    wal_bytes: float


async def _schema(conn: asyncpg.Connection, layout: str) -> None:
    """The ledger's schema as the layout has it: every migration, or every one but 0011
    (the partitioning), which leaves the same columns in one table each."""
    await conn.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for version, name, sql in _migration_files():
        if layout == "unpartitioned" and version == PARTITIONING:
            continue
        await conn.execute(sql)
        await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", version, name)


async def _fill(conn: asyncpg.Connection, layout: str, start: int, stop: int, days: int) -> None:
    """Bid outcome rows ``start`` up to ``stop`` (and pings, one per ten), row i on day
    ``i % days + 1`` before today."""
    if layout == "partitioned":
        today = datetime.now(UTC).date()
        for n in range(days + 1):
            await conn.execute("SELECT ledger_day_partition($1, $2)", "bid_outcomes",
                               today - timedelta(days=n))  # fmt: skip
            await conn.execute("SELECT ledger_day_partition($1, $2)", "pings",
                               today - timedelta(days=n))  # fmt: skip
    for lo in range(start, stop, FILL_CHUNK):
        hi = min(stop, lo + FILL_CHUNK)
        await conn.execute(
            "INSERT INTO bid_outcomes (ping_id, buyer_id, outcome, price_cents, latency_us,"
            " rank, reason, created_at) SELECT gen_random_uuid(), 'buyer-' || (i % 10), 'bid',"
            f" 1000, 5000, 1, NULL, {_SPREAD}"
            " FROM generate_series($1::bigint, $2::bigint - 1) AS i",
            lo, hi, days, timeout=3600,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO pings (ping_id, seller_id, vertical, external_id, mode, tmax_ms, lead,"
            " status, price_cents, payout_cents, ping_tree, created_at, expires_at, duration_us,"
            " overhead_us) SELECT gen_random_uuid(), 's', 'auto_insurance', NULL, 'ping', 250,"
            f" '{{}}', 'bid', 1000, 850, '[]', {_SPREAD},"
            " now(), 1, 1 FROM generate_series($1::bigint / 10, $2::bigint / 10 - 1) AS i",
            lo, hi, days, timeout=3600,
        )  # fmt: skip
    await conn.execute("VACUUM ANALYZE bid_outcomes", timeout=3600)
    await conn.execute("VACUUM ANALYZE pings", timeout=3600)


async def _measure(
    conn: asyncpg.Connection, database: Database, pings: int
) -> tuple[float | None, float, float]:
    await conn.execute("CHECKPOINT")
    postgres = database.processes()
    wal_start = await conn.fetchval("SELECT pg_current_wal_lsn()")
    cpu_start = cpu_seconds(postgres)
    wall = 0
    written = 0
    while written < pings:
        outcomes, ping_rows = auction_batch(new_ping_id)
        outcome_json = orjson.Fragment(encode_rows(BidOutcomeRow, outcomes))
        ping_json = [orjson.Fragment(encode_rows(PingRow, [row])) for row in ping_rows]
        started = time.perf_counter_ns()
        await conn.execute(INSERT_SQL["bid_outcomes"], *ROLLUP_ARGS["bid_outcomes"], outcome_json)
        for row_json in ping_json:  # the ping lane commits each ping row as it comes
            await conn.execute(INSERT_SQL["pings"], row_json)
        wall += time.perf_counter_ns() - started
        written += len(ping_rows)
    cpu = cpu_seconds(postgres) - cpu_start
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", wal_start)
    return (cpu / written * 1e6 if postgres else None), wall / written / 1000, float(wal) / written


async def _run(
    urls: dict[str, str], database: Database, args: argparse.Namespace, give_up_at: float
) -> list[Measured]:
    """Every layout filled to each size in turn; at each size the layouts are measured
    in alternation (A, B, A, B), so a busy spell of the machine falls on both."""
    conns: dict[str, asyncpg.Connection] = {}
    found: list[Measured] = []
    try:
        for layout, url in urls.items():
            conn = conns[layout] = await asyncpg.connect(url)
            await init_connection(conn)
            await _schema(conn, layout)
            await conn.execute("SET synchronous_commit = off")  # as the ledger lanes write
        have = 0
        for size in args.sizes:
            if time.monotonic() > give_up_at:
                print(f"budget spent before {size:,} rows: not measured there", flush=True)
                break
            for layout, conn in conns.items():
                started = time.monotonic()
                await _fill(conn, layout, have, size, args.days)
                table_bytes = await conn.fetchval(
                    "SELECT sum(pg_total_relation_size(c.oid))::float8 FROM pg_class c"
                    " WHERE c.relname ~ '^bid_outcomes' AND c.relkind = 'r'"
                )
                took = time.monotonic() - started
                print(f"{layout}: {size:,} bid outcome rows ({table_bytes / 1e6:,.0f} MB with"
                      f" indexes), filled in {took:.0f} s", flush=True)  # fmt: skip
            have = size
            for round_no in (1, 2):
                for layout, conn in conns.items():
                    cpu, wall, wal = await _measure(conn, database, args.pings)
                    found.append(Measured(layout, size, round_no, cpu, wall, wal))
        if have:
            for layout, conn in conns.items():
                await _remove_oldest_day(conn, layout, have, args.days)
    finally:
        for conn in conns.values():
            await conn.close()
    return found


async def _remove_oldest_day(conn: asyncpg.Connection, layout: str, size: int, days: int) -> None:
    """What retention costs: the oldest day's bid outcomes gone, as a dropped partition
    or as a DELETE (and the VACUUM that must follow it to reuse the space)."""
    day = datetime.now(UTC).date() - timedelta(days=days)
    await conn.execute("CHECKPOINT")
    wal_start = await conn.fetchval("SELECT pg_current_wal_lsn()")
    started = time.perf_counter()
    if layout == "partitioned":
        await conn.execute("SELECT ledger_drop_day_partition('bid_outcomes', $1)", day)
    else:
        lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
        await conn.execute(
            "DELETE FROM bid_outcomes WHERE created_at >= $1 AND created_at < $2",
            lo, lo + timedelta(days=1), timeout=3600,
        )  # fmt: skip
        await conn.execute("VACUUM bid_outcomes", timeout=3600)
    took = time.perf_counter() - started
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", wal_start)
    print(f"{layout}: removing one day ({size // days:,} bid outcome rows) took {took:.2f} s"
          f" and {float(wal) / 1e6:,.1f} MB of WAL", flush=True)  # fmt: skip


def _table(found: list[Measured]) -> str:
    lines = [
        "| layout | bid outcome rows | round | PostgreSQL CPU us / ping | write wall us / ping"
        " | WAL bytes / ping |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in found:
        cpu = "-" if m.pg_cpu_us is None else f"{m.pg_cpu_us:.0f}"
        lines.append(f"| {m.layout} | {m.size:,} | {m.round_no} | {cpu} | {m.wall_us:.0f}"
                     f" | {m.wal_bytes:,.0f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=lambda s: sorted(int(x) for x in s.split(",")),
        default=[1_000_000, 20_000_000], help="bid outcome rows to measure at, comma-separated",
    )  # fmt: skip
    parser.add_argument("--pings", type=int, default=5000, help="auctions written per measurement")
    parser.add_argument("--days", type=int, default=20, help="days the filled rows span")
    parser.add_argument(
        "--layouts", type=lambda s: [x for x in s.split(",") if x in LAYOUTS],
        default=list(LAYOUTS),
    )  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=1800.0, help="stop filling after this")
    args = parser.parse_args()
    names = {layout: f"ledger_partitions_{layout}_{os.getpid()}" for layout in args.layouts}
    with scratch_databases("ledger-partitions-", list(names.values())) as (database, created):
        give_up_at = time.monotonic() + args.budget_s
        urls = dict(zip(names, created, strict=True))
        found = uvloop.run(_run(urls, database, args, give_up_at))
    print(_table(sorted(found, key=lambda m: (m.layout, m.size, m.round_no))))


if __name__ == "__main__":
    main()
