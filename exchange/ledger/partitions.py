"""The ledger's day partitions: which there are, making and dropping one, and the lock
that lets one process at a time change them.

``pings``, ``bid_outcomes`` and ``post_attempts`` are partitioned by ``created_at``, one
partition per UTC day (``<table>_pYYYYMMDD``), with a default partition taking any row no
day partition covers (migration 0011, whose SQL functions do the DDL: the names here are
parameters, never formatted into a statement). Making and dropping a partition takes
locks that writers of the table queue behind (dropping one takes ACCESS EXCLUSIVE on the
table for a moment), so each such statement runs under a short ``lock_timeout``: one
that cannot have its lock at once gives up and is tried again, rather than leave the
ping commits waiting behind it.

Whoever changes partitions holds the maintenance lock (a PostgreSQL advisory lock, so it
is one holder across every process on the database, and it goes with the session of a
process that dies): the exchange's own retention (exchange/ledger/retention.py) and
``lead-exchange archive`` (exchange/ledger/archive.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

# The tables partitioned by day; money (sales), claims (posts), external ids and the
# rollups are not.
PARTITIONED_TABLES = ("pings", "bid_outcomes", "post_attempts")
# Day partitions are made this many days ahead of today (and today's).
AHEAD_DAYS = 3
# pg_advisory_lock key of the maintenance lock (72150001 is the migrations').
MAINTENANCE_LOCK = 72150002
# How long a partition's DDL may wait for its lock before giving up for now, and how
# often it is tried again within one run.
LOCK_TIMEOUT_MS = 50
LOCK_TRIES = 5
LOCK_RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class DayPartition:
    table: str
    day: date
    name: str
    oid: int


def day_start(day: date) -> datetime:
    """Midnight UTC opening ``day``: where its partition's range starts."""
    return datetime.combine(day, time(), UTC)


def utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


async def day_partitions(conn: asyncpg.Connection, table: str) -> list[DayPartition]:
    rows = await conn.fetch("SELECT * FROM ledger_day_partitions($1)", table)
    return [DayPartition(table, r["day"], r["partition_name"], r["partition_oid"]) for r in rows]


async def days_in_default(conn: asyncpg.Connection, table: str) -> list[date]:
    """The days of the rows waiting in ``table``'s default partition (none, normally)."""
    _check(table)
    rows = await conn.fetch(
        f"SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date AS day FROM {table}_default"
        " ORDER BY 1"
    )
    return [r["day"] for r in rows]


class LockBusy(Exception):
    """A partition's DDL could not have its lock within LOCK_TRIES tries: left for later."""


async def make_partition(conn: asyncpg.Connection, table: str, day: date) -> bool:
    """``table``'s partition for ``day``, made unless it exists (rows of that day in the
    default partition move into it); True if it was made. LockBusy: not now."""
    return await _with_lock_timeout(conn, "SELECT ledger_day_partition($1, $2)", table, day)


async def drop_partition(conn: asyncpg.Connection, table: str, day: date) -> bool:
    """Drop ``table``'s partition for ``day`` and its rows; True if there was one.
    LockBusy: not now."""
    return await _with_lock_timeout(conn, "SELECT ledger_drop_day_partition($1, $2)", table, day)


async def adopt_default_rows(conn: asyncpg.Connection, table: str) -> list[date]:
    """Make the partition of every day with rows in ``table``'s default partition, which
    moves them there; returns the days whose partition was made."""
    made = []
    for day in await days_in_default(conn, table):
        if await make_partition(conn, table, day):
            made.append(day)
    return made


async def _with_lock_timeout(conn: asyncpg.Connection, sql: str, table: str, day: date) -> bool:
    _check(table)
    for attempt in range(1, LOCK_TRIES + 1):
        try:
            async with conn.transaction():
                # Not waiting for the disk: a change lost to a crash is made again by the
                # next run, and rows meanwhile go to the default partition.
                await conn.execute(
                    "SELECT set_config('lock_timeout', $1, true),"
                    " set_config('synchronous_commit', 'off', true)",
                    f"{LOCK_TIMEOUT_MS}ms",
                )
                done: bool = await conn.fetchval(sql, table, day)
                return done
        except asyncpg.LockNotAvailableError:
            if attempt == LOCK_TRIES:
                raise LockBusy(f"{table} {day}") from None
            await asyncio.sleep(LOCK_RETRY_S)
    raise AssertionError("unreachable")


def _check(table: str) -> None:
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"not a day-partitioned ledger table: {table}")


@asynccontextmanager
async def maintenance_lock(conn: asyncpg.Connection, wait: bool) -> AsyncIterator[bool]:
    """Hold the maintenance lock on ``conn`` for the block; yields False (without waiting)
    when ``wait`` is false and another session holds it. Released at the end; should
    that fail, the connection is closed, which releases it too (a pooled connection must
    not go back holding it)."""
    if wait:
        await conn.execute("SELECT pg_advisory_lock($1)", MAINTENANCE_LOCK)
        held = True
    else:
        held = await conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK)
    try:
        yield held
    finally:
        if held:
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK)
            except BaseException:
                conn.terminate()
                raise


def days_ahead(today: date, ahead: int = AHEAD_DAYS) -> list[date]:
    return [today + timedelta(days=n) for n in range(ahead + 1)]
