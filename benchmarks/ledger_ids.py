"""What the choice of ping id costs the ledger: random (version 4) against time-ordered
(version 7, what the exchange makes) UUIDs, written as the exchange writes them into
tables that already hold millions of rows.

    python -m benchmarks.ledger_ids [--rows 3000000] [--pings 5000]

Fills ``bid_outcomes`` with ``--rows`` rows (and ``pings`` with a tenth of that) on an
embedded PostgreSQL (or DATABASE_URL's server, in a database of its own; its CPU is then
not measured, as in the main benchmark), then, after a CHECKPOINT each time, writes
``--pings`` auctions of ten buyers the way the batch writer does (outcome rows in batches
of 25 auctions, each ping row on its own) with each kind of id, twice in turns. It
reports PostgreSQL's CPU and WAL bytes per ping. WAL is the steady figure: after a
checkpoint, the first change to an index page writes the whole page to WAL, and random
keys touch a different page almost every insert.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import uvloop

from benchmarks.database import migrated_connection, scratch_databases
from benchmarks.processes import cpu_seconds
from benchmarks.runner import Database
from exchange.auction.context import new_ping_id
from exchange.core.outcomes import BidOutcome, PingStatus
from exchange.ledger.rollups import INSERT_SQL, ROLLUP_ARGS
from exchange.ledger.rows import BidOutcomeRow, PingRow, encode_rows

AUCTIONS_PER_BATCH = 25
BUYERS = 10
KINDS: dict[str, Callable[[], str]] = {
    "random (v4)": lambda: str(uuid.uuid4()),
    "time-ordered (v7)": new_ping_id,
}


async def _prefill(conn: asyncpg.Connection, rows: int) -> None:
    await conn.execute(
        "INSERT INTO bid_outcomes (ping_id, buyer_id, outcome, price_cents, latency_us, rank,"
        " reason, created_at) SELECT gen_random_uuid(), 'buyer-' || (i % 10), 'bid', 1000,"
        " 5000, 1, NULL, now() FROM generate_series(1, $1) AS i",
        rows,
    )
    await conn.execute(
        "INSERT INTO pings (ping_id, seller_id, vertical, external_id, mode, tmax_ms, lead,"
        " status, price_cents, payout_cents, ping_tree, created_at, expires_at, duration_us,"
        " overhead_us) SELECT gen_random_uuid(), 's', 'auto_insurance', NULL, 'ping', 250,"
        " '{}', 'bid', 1000, 850, '[]', now(), now(), 1, 1 FROM generate_series(1, $1)",
        rows // BUYERS,
    )
    await conn.execute("VACUUM ANALYZE bid_outcomes")
    await conn.execute("VACUUM ANALYZE pings")


def auction_batch(make_id: Callable[[], str]) -> tuple[list[BidOutcomeRow], list[PingRow]]:
    """One batch as the batch writer writes it: AUCTIONS_PER_BATCH auctions, their ids
    from ``make_id``, each a ping row and a bid outcome row from each of BUYERS buyers."""
    now = datetime.now(UTC)
    lead = {"zip": "94107", "state": "CA", "age": 41}
    outcomes, pings = [], []
    for _ in range(AUCTIONS_PER_BATCH):
        ping_id = make_id()
        tree = [{"buyer_id": "buyer-0", "price_cents": 1200, "company_size": 0,
                 "priority": 0, "latency_us": 5000}]  # fmt: skip
        pings.append(PingRow(ping_id, "s", "auto_insurance", None, "ping", 250, lead,
                             PingStatus.BID, 1020, 867, tree, now, now + timedelta(minutes=2),
                             30000, 900))  # fmt: skip
        for i in range(BUYERS):
            outcomes.append(BidOutcomeRow(ping_id, f"buyer-{i}", BidOutcome.BID, 1000 + i,
                                          5000 + i, i + 1, None, now))  # fmt: skip
    return outcomes, pings


async def _measure(
    conn: asyncpg.Connection,
    make_id: Callable[[], str],
    pings: int,
    database: Database,
) -> dict[str, float | None]:
    await conn.execute("CHECKPOINT")
    postgres = database.processes()  # the postmaster's children now: this backend too
    wal_start = await conn.fetchval("SELECT pg_current_wal_lsn()")
    cpu_start = cpu_seconds(postgres)
    written = 0
    while written < pings:
        outcomes, ping_rows = auction_batch(make_id)
        await conn.execute(
            INSERT_SQL["bid_outcomes"], *ROLLUP_ARGS["bid_outcomes"],
            orjson.Fragment(encode_rows(BidOutcomeRow, outcomes)),
        )  # fmt: skip
        for row in ping_rows:  # the ping lane commits each ping row as it comes
            await conn.execute(INSERT_SQL["pings"], orjson.Fragment(encode_rows(PingRow, [row])))
        written += len(ping_rows)
    cpu = cpu_seconds(postgres) - cpu_start
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", wal_start)
    return {
        "wal_bytes_per_ping": float(wal) / written,
        "pg_cpu_us_per_ping": cpu / written * 1e6 if postgres else None,
    }


async def _run(url: str, database: Database, rows: int, pings: int) -> None:
    async with migrated_connection(url) as conn:
        await conn.execute("SET synchronous_commit = off")  # as the ledger lanes write
        started = time.monotonic()
        await _prefill(conn, rows)
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('bid_outcomes'))")
        print(f"bid_outcomes prefilled: {rows:,} rows, {size}, "
              f"{time.monotonic() - started:.0f} s")  # fmt: skip
        print("| ids | round | WAL bytes / ping | PostgreSQL CPU us / ping |")
        print("|---|---:|---:|---:|")
        for round_no in (1, 2):
            for kind, make_id in KINDS.items():
                found = await _measure(conn, make_id, pings, database)
                cpu = found["pg_cpu_us_per_ping"]
                print(f"| {kind} | {round_no} | {found['wal_bytes_per_ping']:,.0f} | "
                      f"{'-' if cpu is None else f'{cpu:.0f}'} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=3_000_000, help="bid outcome rows to start from"
    )
    parser.add_argument("--pings", type=int, default=5000, help="auctions written per measurement")
    args = parser.parse_args()
    with scratch_databases("ledger-ids-", [f"ledger_ids_{os.getpid()}"]) as (database, [url]):
        uvloop.run(_run(url, database, args.rows, args.pings))


if __name__ == "__main__":
    main()
