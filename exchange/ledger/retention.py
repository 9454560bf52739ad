"""The ledger's upkeep, done by the exchange itself: day partitions made ahead, and the
per-ping history past ``exchange.retention_days`` dropped (docs/scaling.md, "Partitions,
retention and archives").

Every exchange process runs ``upkeep_once`` as it starts (before it serves: today's
partitions then exist before its first ping, so no row lands in a default partition to
be moved later under load), then ``keep_ledger``. Each run takes the maintenance lock
(exchange/ledger/partitions.py) without waiting, so one process does the work and the
others, finding it held, skip that run. A run is idempotent: it makes what is missing and
drops what is due, so a run after another finds nothing to do. It:

1. makes today's partition and AHEAD_DAYS more of each partitioned table, and the
   partition of any day with rows waiting in a default partition (which moves them in);
2. drops each day partition older than ``today - retention_days``; with
   ``archive_before_drop``, only one `lead-exchange archive` wrote (ledger_archives, that
   very partition), the others are kept and named in the log;
3. deletes the post claims and external ids as old as the pings dropped (in batches):
   neither table can be partitioned, as each must be unique across the ledger; and the
   pool offers and holds that ended as long ago (their PII went when they ended).

Sales and the hourly rollups are never touched. A step whose lock is busy (a long query
on the table) is left for the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

import asyncpg
import structlog

from exchange.ledger.bounded import row_count
from exchange.ledger.faults import DATABASE_DOWN
from exchange.ledger.partitions import (
    PARTITIONED_TABLES,
    DayPartition,
    LockBusy,
    adopt_default_rows,
    day_partitions,
    day_start,
    days_ahead,
    drop_partition,
    maintenance_lock,
    make_partition,
)

log = structlog.get_logger("exchange.retention")

# Each process tries a run this often (and once as it starts, within START_S).
INTERVAL_S = 600.0
START_S = 10.0
# Rows of posts and external_ids deleted per statement, and statements per run.
EXPIRE_BATCH = 10_000
EXPIRE_BATCHES = 200


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """``retention_days`` None: keep everything (partitions are still made)."""

    retention_days: int | None = 90
    archive_before_drop: bool = False


@dataclass
class MaintenanceRun:
    """What one run did. ``ran`` is False when another process held the lock."""

    ran: bool
    made: list[DayPartition] = field(default_factory=list)
    dropped: list[DayPartition] = field(default_factory=list)
    kept_unarchived: list[DayPartition] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # steps left for the next run
    expired_posts: int = 0
    expired_external_ids: int = 0
    expired_stages: int = 0  # pool offers and holds over, of auctions gone

    @property
    def did_something(self) -> bool:
        expired = self.expired_posts + self.expired_external_ids + self.expired_stages
        return bool(self.made or self.dropped or expired)


async def maintain(pool: asyncpg.Pool, today: date, policy: RetentionPolicy) -> MaintenanceRun:
    """One run, unless another process is doing one (then ``ran`` is False)."""
    async with pool.acquire() as conn, maintenance_lock(conn, wait=False) as held:
        if not held:
            return MaintenanceRun(ran=False)
        run = MaintenanceRun(ran=True)
        for table in PARTITIONED_TABLES:
            await _make_ahead(conn, table, today, run)
        if policy.retention_days is not None:
            cutoff = today - timedelta(days=policy.retention_days)
            kept_before = cutoff
            for table in PARTITIONED_TABLES:
                oldest_kept = await _drop_past(conn, table, cutoff, policy, run)
                if table == "pings" and oldest_kept is not None:
                    kept_before = oldest_kept
            await _expire_claims(conn, day_start(kept_before), run)
        return run


async def _make_ahead(
    conn: asyncpg.Connection, table: str, today: date, run: MaintenanceRun
) -> None:
    try:
        adopted = await adopt_default_rows(conn, table)
        made = [d for d in days_ahead(today) if await make_partition(conn, table, d)]
    except LockBusy as busy:
        run.busy.append(f"make {busy}")
        return
    if adopted or made:
        wanted = set(adopted) | set(made)
        run.made += [p for p in await day_partitions(conn, table) if p.day in wanted]


async def _drop_past(
    conn: asyncpg.Connection, table: str, cutoff: date, policy: RetentionPolicy, run: MaintenanceRun
) -> date | None:
    """Drop ``table``'s day partitions before ``cutoff``; returns the oldest day of those
    kept (not archived, or lock busy), None if every one went."""
    archived: set[tuple[date, int]] = set()
    if policy.archive_before_drop:
        rows = await conn.fetch(
            "SELECT day, partition_oid FROM ledger_archives WHERE table_name = $1", table
        )
        archived = {(r["day"], r["partition_oid"]) for r in rows}
    oldest_kept = None
    for partition in await day_partitions(conn, table):
        if partition.day >= cutoff:
            break
        if policy.archive_before_drop and (partition.day, partition.oid) not in archived:
            run.kept_unarchived.append(partition)
        else:
            try:
                if await drop_partition(conn, table, partition.day):
                    run.dropped.append(partition)
                continue
            except LockBusy as busy:
                run.busy.append(f"drop {busy}")
        if oldest_kept is None:
            oldest_kept = partition.day
    return oldest_kept


_EXPIRE = {
    # A queued post (its lead held for delayed delivery) stays until its hold ends.
    "posts": "DELETE FROM posts WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM posts WHERE claimed_at < $1 AND status <> 'queued' LIMIT $2))",
    "external_ids": "DELETE FROM external_ids WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM external_ids WHERE created_at < $1 LIMIT $2))",
    # The pool and hold stages of auctions gone: only those over (their PII purged).
    "pool_offers": "DELETE FROM pool_offers WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM pool_offers WHERE coalesce(claimed_at, expired_at) < $1 LIMIT $2))",
    "held_leads": "DELETE FROM held_leads WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM held_leads WHERE state <> 'held' AND finished_at < $1 LIMIT $2))",
}


async def _expire_claims(conn: asyncpg.Connection, before: datetime, run: MaintenanceRun) -> None:
    """Post claims and external ids older than ``before`` (whose pings are gone), a batch
    per statement so that no transaction holds many rows; the rest next run."""
    for table, sql in _EXPIRE.items():
        deleted = 0
        for _ in range(EXPIRE_BATCHES):
            status = await conn.execute(sql, before, EXPIRE_BATCH)
            count = row_count(status)
            deleted += count
            if count < EXPIRE_BATCH:
                break
        if table == "posts":
            run.expired_posts = deleted
        elif table == "external_ids":
            run.expired_external_ids = deleted
        else:
            run.expired_stages += deleted


@dataclass(frozen=True, slots=True)
class Upkeep:
    """One process's upkeep attempt and the ledger's day partitions after it, as every
    process reads them (so each process's metrics tell the ledger's state, whichever
    process did the work). ``days`` is None when they could not be read."""

    outcome: Literal["done", "skipped", "failed"]
    today: date
    policy: RetentionPolicy
    run: MaintenanceRun | None = None
    days: Mapping[str, tuple[date, ...]] | None = None

    def days_ahead(self, table: str) -> int | None:
        """Days past today with a partition ready (-1: not even today's)."""
        if self.days is None:
            return None
        ready = set(self.days.get(table, ()))
        ahead = -1
        while self.today + timedelta(days=ahead + 1) in ready:
            ahead += 1
        return ahead

    def past_retention(self, table: str) -> int | None:
        """Day partitions older than retention still there (kept unarchived, or their
        drop failed); 0 when nothing is due or retention is off."""
        if self.days is None:
            return None
        if self.policy.retention_days is None:
            return 0
        cutoff = self.today - timedelta(days=self.policy.retention_days)
        return sum(1 for day in self.days.get(table, ()) if day < cutoff)


async def ledger_days(pool: asyncpg.Pool) -> dict[str, tuple[date, ...]]:
    async with pool.acquire() as conn:
        return {
            table: tuple(sorted(p.day for p in await day_partitions(conn, table)))
            for table in PARTITIONED_TABLES
        }


async def upkeep_once(
    pool: asyncpg.Pool, today: date, policy: RetentionPolicy, timeout_s: float = START_S
) -> Upkeep:
    """One run, its failure logged, not raised: a ledger that cannot be kept up just now
    must not stop the exchange (rows go to the default partitions meanwhile)."""
    run: MaintenanceRun | None = None
    try:
        async with asyncio.timeout(timeout_s):
            run = await maintain(pool, today, policy)
    except DATABASE_DOWN as exc:
        log.warning("ledger_maintenance_failed", error=type(exc).__name__)
    except Exception:  # the next run tries again; the exchange goes on meanwhile
        log.exception("ledger_maintenance_failed")
    else:
        _log(run)
    days = None
    try:
        async with asyncio.timeout(timeout_s):
            days = await ledger_days(pool)
    except (*DATABASE_DOWN, asyncpg.PostgresError) as exc:
        log.warning("ledger_partitions_unread", error=type(exc).__name__)
    outcome: Literal["done", "skipped", "failed"] = (
        "failed" if run is None else "done" if run.ran else "skipped"
    )
    return Upkeep(outcome, today, policy, run, days)


async def keep_ledger(
    pool: asyncpg.Pool,
    today: Callable[[], date],
    policy: Callable[[], RetentionPolicy],
    observe: Callable[[Upkeep], None] = lambda upkeep: None,
    interval_s: float = INTERVAL_S,
) -> None:
    """A run every ``interval_s`` for as long as the process lives, each one handed to
    ``observe`` (the metrics); the policy is read each time (settings may change live)."""
    while True:
        await asyncio.sleep(interval_s)
        observe(await upkeep_once(pool, today(), policy(), timeout_s=interval_s))


def _log(run: MaintenanceRun) -> None:
    if run.did_something:
        log.info(
            "ledger_maintenance",
            made=[p.name for p in run.made],
            dropped=[p.name for p in run.dropped],
            expired_posts=run.expired_posts,
            expired_external_ids=run.expired_external_ids,
            expired_stages=run.expired_stages,
        )
    if run.kept_unarchived:
        log.warning(
            "ledger_partitions_kept_unarchived",
            partitions=[p.name for p in run.kept_unarchived],
            hint="run `lead-exchange archive --before DATE`; archive_before_drop is on",
        )
    if run.busy:
        log.warning("ledger_maintenance_deferred", steps=run.busy)
