"""The ledger by day: partitions made ahead and dropped past retention by the exchange's
own upkeep, one process at a time; rows that came before their partition moved into it;
an existing ledger moved in whole; old days archived to files before they go. Every date
is explicit: nothing here waits for a day to pass."""

from __future__ import annotations

import asyncio
import csv
import gzip
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from exchange.core.outcomes import BidOutcome, PingStatus, PostOutcome
from exchange.ledger.archive import MANIFEST, archive_before
from exchange.ledger.batch import BatchWriter
from exchange.ledger.partitions import (
    AHEAD_DAYS,
    MAINTENANCE_LOCK,
    PARTITIONED_TABLES,
    day_partitions,
    utc_day,
)
from exchange.ledger.pool import _migration_files, create_pool, migrate
from exchange.ledger.retention import RetentionPolicy, maintain, upkeep_once
from exchange.ledger.rows import BidOutcomeRow, PingRow, PostAttemptRow, column_names
from exchange.ledger.store import Store
from exchange.telemetry.metrics import Metrics
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import FULL_LEAD, make_config, realtime_buyer, running_exchange

TODAY = date(2026, 3, 10)


def _at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _auction(day: date, buyers: int = 2) -> tuple[PingRow, list[BidOutcomeRow], PostAttemptRow]:
    ping_id = str(uuid.uuid4())
    at = _at(day)
    ping = PingRow(
        ping_id, "acme-media", "auto_insurance", None, "ping", 1000, {"state": "CA"},
        PingStatus.BID, 1500, 1275, [], at, at + timedelta(minutes=2), 900, 120,
    )  # fmt: skip
    bids = [
        BidOutcomeRow(ping_id, f"b{n}", BidOutcome.BID, 1500, 450, n + 1, None, at)
        for n in range(buyers)
    ]
    attempt = PostAttemptRow(ping_id, 1, "b0", PostOutcome.ACCEPTED, 1500, 800, None, None, at)
    return ping, bids, attempt


async def _write_auctions(pool: asyncpg.Pool, days: list[date], per_day: int = 3) -> None:
    """Auctions on each of ``days`` through the batch writer, as the exchange writes them
    (their rollups with them)."""
    writer = BatchWriter(pool)
    for day in days:
        for _ in range(per_day):
            ping, bids, attempt = _auction(day)
            await writer.add("pings", ping)
            await writer.add_many("bid_outcomes", bids)
            await writer.add("post_attempts", attempt)
    await writer.close()  # writes what is queued, lets go of its connections


async def _days_of(pool: asyncpg.Pool, table: str) -> dict[date, int]:
    rows = await pool.fetch(
        f"SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM {table}"
        " GROUP BY 1"
    )
    return {r["day"]: r["n"] for r in rows}


async def _partition_days(pool: asyncpg.Pool, table: str) -> list[date]:
    async with pool.acquire() as conn:
        return [p.day for p in await day_partitions(conn, table)]


async def test_day_partitions_are_made_ahead_and_those_past_retention_dropped(
    store: Store,
) -> None:
    pool = store.pool
    old, kept = TODAY - timedelta(days=40), TODAY - timedelta(days=5)
    await _write_auctions(pool, [old, old + timedelta(days=1), kept, TODAY])
    rollups_before = await pool.fetchval("SELECT sum(pings) FROM seller_hourly")

    run = await maintain(pool, TODAY, RetentionPolicy(retention_days=30))

    assert run.ran
    ahead = [TODAY + timedelta(days=n) for n in range(AHEAD_DAYS + 1)]
    for table in PARTITIONED_TABLES:
        assert await _partition_days(pool, table) == [kept, *ahead]
        assert await _days_of(pool, table) == {kept: await _count(pool, table, kept),
                                               TODAY: await _count(pool, table, TODAY)}  # fmt: skip
        assert await pool.fetchval(f"SELECT count(*) FROM {table}_default") == 0
    assert {(p.table, p.day) for p in run.dropped} == {
        (t, d) for t in PARTITIONED_TABLES for d in (old, old + timedelta(days=1))
    }
    # The hourly rollups keep what the dropped days added to them.
    assert await pool.fetchval("SELECT sum(pings) FROM seller_hourly") == rollups_before == 12

    again = await maintain(pool, TODAY, RetentionPolicy(retention_days=30))
    assert again.ran and not again.did_something


async def _count(pool: asyncpg.Pool, table: str, day: date) -> int:
    return int(
        await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE created_at >= $1 AND created_at < $2",
            _at(day, 0),
            _at(day, 0) + timedelta(days=1),
        )
    )


async def test_rows_written_before_their_days_partition_existed_move_into_it(
    store: Store,
) -> None:
    pool = store.pool
    early = TODAY - timedelta(days=2)
    await _write_auctions(pool, [early, TODAY])  # no partition yet: the default ones
    assert await pool.fetchval("SELECT count(*) FROM pings_default") == 6

    run = await maintain(pool, TODAY, RetentionPolicy(retention_days=None))

    for table in PARTITIONED_TABLES:
        assert await pool.fetchval(f"SELECT count(*) FROM {table}_default") == 0
        name = f"{table}_p{early:%Y%m%d}"
        assert await pool.fetchval(f"SELECT count(*) FROM {name}") > 0
    assert {p.day for p in run.made if p.table == "pings"} == {
        early,
        *(TODAY + timedelta(days=n) for n in range(AHEAD_DAYS + 1)),
    }
    assert await pool.fetchval("SELECT count(*) FROM pings") == 6


async def test_a_retried_batch_still_counts_once_in_a_day_partition(store: Store) -> None:
    pool = store.pool
    await maintain(pool, TODAY, RetentionPolicy())
    ping, bids, attempt = _auction(TODAY)
    for _ in range(2):
        writer = BatchWriter(pool)
        await writer.add("pings", ping)
        await writer.add_many("bid_outcomes", bids)
        await writer.add("post_attempts", attempt)
        await writer.close()
    assert await pool.fetchval("SELECT count(*) FROM pings") == 1
    assert await pool.fetchval("SELECT count(*) FROM bid_outcomes") == 2
    assert await pool.fetchval("SELECT sum(pings) FROM seller_hourly") == 1
    assert await pool.fetchval(f"SELECT count(*) FROM pings_p{TODAY:%Y%m%d}") == 1


async def test_two_upkeep_runs_at_once_do_the_work_once(database_url: str, store: Store) -> None:
    await _write_auctions(store.pool, [TODAY - timedelta(days=60), TODAY])
    policy = RetentionPolicy(retention_days=30)
    pools = [await create_pool(database_url, min_size=1, max_size=1) for _ in range(2)]
    try:
        runs = await asyncio.gather(*(maintain(p, TODAY, policy) for p in pools))
    finally:
        for pool in pools:
            await pool.close()
    made = [(p.table, p.day) for run in runs for p in run.made]
    dropped = [(p.table, p.day) for run in runs for p in run.dropped]
    assert len(made) == len(set(made)) == len(PARTITIONED_TABLES) * (AHEAD_DAYS + 2)
    assert len(dropped) == len(set(dropped)) == len(PARTITIONED_TABLES)
    assert any(run.ran for run in runs)


async def test_upkeep_skips_its_run_while_another_process_holds_the_lock(store: Store) -> None:
    await _write_auctions(store.pool, [TODAY - timedelta(days=60)])
    async with store.pool.acquire() as holder:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK)
        try:
            run = await maintain(store.pool, TODAY, RetentionPolicy(retention_days=30))
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK)
    assert not run.ran and not run.did_something
    assert await _partition_days(store.pool, "pings") == []
    assert await store.pool.fetchval("SELECT count(*) FROM pings") == 3


async def test_claims_and_external_ids_go_with_their_pings_and_sales_stay(store: Store) -> None:
    pool = store.pool
    old = TODAY - timedelta(days=40)
    await _write_auctions(pool, [old, TODAY], per_day=1)
    for day in (old, TODAY):
        ping_id = str(await pool.fetchval(
            "SELECT ping_id FROM pings WHERE created_at >= $1 AND created_at < $2",
            _at(day, 0), _at(day, 0) + timedelta(days=1),
        ))  # fmt: skip
        await store.claim_external_id("acme-media", f"lead-{day}", ping_id, _at(day))
        await pool.execute(
            "INSERT INTO posts (ping_id, seller_id, status, claimed_at)"
            " VALUES ($1, $2, 'sold', $3)",
            uuid.UUID(ping_id), "acme-media", _at(day),
        )  # fmt: skip
        await pool.execute(
            "INSERT INTO sales (ping_id, seller_id, buyer_id, vertical, price_cents,"
            " payout_cents, created_at) VALUES ($1, 'acme-media', 'b0', 'auto_insurance',"
            " 1500, 1275, $2)",
            uuid.UUID(ping_id), _at(day),
        )  # fmt: skip

    run = await maintain(pool, TODAY, RetentionPolicy(retention_days=30))

    assert (run.expired_posts, run.expired_external_ids) == (1, 1)
    assert [r["external_id"] for r in await pool.fetch("SELECT * FROM external_ids")] == [
        f"lead-{TODAY}"
    ]
    assert await pool.fetchval("SELECT count(*) FROM posts") == 1
    assert await pool.fetchval("SELECT count(*) FROM sales") == 2


async def test_an_auction_run_again_under_a_bound_external_id_is_recorded_once(
    store: Store,
) -> None:
    """The first attempt's row reaches the ledger late, after a repeat ran the auction
    again under the id: both are recorded under the time of the id's first claim, so the
    keys meet and the first written stands, as one ping id is one auction."""
    first_id = str(uuid.uuid4())
    bound, recorded_at = await store.claim_external_id("acme-media", "x-1", first_id, _at(TODAY))
    again, recorded_again = await store.claim_external_id(
        "acme-media", "x-1", str(uuid.uuid4()), _at(TODAY) + timedelta(minutes=3)
    )
    assert (again, recorded_again) == (bound, recorded_at) == (first_id, _at(TODAY))
    first, _, _ = _auction(TODAY)
    first.ping_id, first.created_at = bound, recorded_at
    repeat, _, _ = _auction(TODAY)
    repeat.ping_id, repeat.created_at, repeat.price_cents = bound, recorded_again, 999
    for row in (first, repeat):
        writer = BatchWriter(store.pool)
        await writer.add("pings", row)
        await writer.close()
    rows = await store.pool.fetch("SELECT price_cents FROM pings")
    assert [r["price_cents"] for r in rows] == [1500]


async def test_a_day_not_archived_is_kept_until_it_is_when_archiving_is_required(
    store: Store, tmp_path: Path
) -> None:
    pool = store.pool
    old = TODAY - timedelta(days=40)
    await _write_auctions(pool, [old, TODAY])
    policy = RetentionPolicy(retention_days=30, archive_before_drop=True)

    kept = await maintain(pool, TODAY, policy)
    assert not kept.dropped
    assert {(p.table, p.day) for p in kept.kept_unarchived} == {
        (t, old) for t in PARTITIONED_TABLES
    }
    assert (kept.expired_posts, kept.expired_external_ids) == (0, 0)
    assert (await _days_of(pool, "pings"))[old] == 3

    async with pool.acquire() as conn:
        archived = await archive_before(conn, TODAY - timedelta(days=30), tmp_path)
    assert {(a.table, a.day, a.rows) for a in archived} == {
        ("pings", old, 3),
        ("bid_outcomes", old, 6),
        ("post_attempts", old, 3),
    }

    dropped = await maintain(pool, TODAY, policy)
    assert {(p.table, p.day) for p in dropped.dropped} == {(t, old) for t in PARTITIONED_TABLES}
    assert old not in await _days_of(pool, "pings")


async def test_pool_offers_and_holds_that_ended_go_with_their_pings_and_open_ones_stay(
    store: Store,
) -> None:
    pool = store.pool
    old, recent = _at(TODAY - timedelta(days=40)), _at(TODAY - timedelta(days=2))
    offer = (
        "INSERT INTO pool_offers (ping_id, seller_id, vertical, lead, start_price_cents,"
        " floor_price_cents, decay_cents_per_hour, entered_at, expires_at, pii_key_id, pii,"
        " expired_at) VALUES ($1, 's', 'v', '{}', 2000, 200, 100, $2::timestamptz,"
        " $2::timestamptz + interval '1 hour', $3, $4, $5)"
    )
    hold = (
        "INSERT INTO held_leads (ping_id, seller_id, vertical, state, lead, buyers,"
        " first_attempt, held_at, hold_until, next_check_at, finished_at, pii_key_id, pii)"
        " VALUES ($1, 's', 'v', $2, '{}', '[]', 1, $3, $3, $3, $4, $5, $6)"
    )
    ids = [uuid.uuid4() for _ in range(4)]
    await pool.execute(offer, ids[0], old, None, None, old)  # expired long ago
    await pool.execute(offer, ids[1], old, "k", b"sealed", None)  # still open
    await pool.execute(hold, ids[2], "expired", old, old, None, None)  # ended long ago
    await pool.execute(hold, ids[3], "expired", recent, recent, None, None)  # ended lately

    run = await maintain(pool, TODAY, RetentionPolicy(retention_days=30))

    assert run.expired_stages == 2
    assert {r[0] for r in await pool.fetch("SELECT ping_id FROM pool_offers")} == {ids[1]}
    assert {r[0] for r in await pool.fetch("SELECT ping_id FROM held_leads")} == {ids[3]}


async def test_upkeep_metrics_show_partitions_kept_past_retention_until_they_are_dropped(
    store: Store, tmp_path: Path
) -> None:
    pool = store.pool
    old = TODAY - timedelta(days=40)
    await _write_auctions(pool, [old, TODAY])
    metrics = Metrics()

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    policy = RetentionPolicy(retention_days=30, archive_before_drop=True)
    metrics.record_ledger_upkeep(await upkeep_once(pool, TODAY, policy))
    for table in PARTITIONED_TABLES:
        assert sample("exchange_ledger_partitions_past_retention", table=table) == 1
        assert sample("exchange_ledger_partitions_ahead", table=table) == AHEAD_DAYS
        assert sample("exchange_ledger_partitions", table=table) == AHEAD_DAYS + 2
    assert sample("exchange_ledger_upkeep_runs_total", outcome="done") == 1

    async with pool.acquire() as conn:
        await archive_before(conn, TODAY - timedelta(days=30), tmp_path)
        # Another process's run in progress: this one skips, yet reads the partitions.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MAINTENANCE_LOCK)
            metrics.record_ledger_upkeep(await upkeep_once(pool, TODAY, policy))
    assert sample("exchange_ledger_upkeep_runs_total", outcome="skipped") == 1
    assert sample("exchange_ledger_partitions_past_retention", table="pings") == 1

    metrics.record_ledger_upkeep(await upkeep_once(pool, TODAY, policy))
    for table in PARTITIONED_TABLES:
        assert sample("exchange_ledger_partitions_past_retention", table=table) == 0
        assert sample("exchange_ledger_partitions_dropped_total", table=table) == 1
        assert sample("exchange_ledger_partitions", table=table) == AHEAD_DAYS + 1


async def test_archive_files_hold_every_row_under_the_documented_columns(
    store: Store, tmp_path: Path
) -> None:
    pool = store.pool
    old = TODAY - timedelta(days=3)
    await _write_auctions(pool, [old, TODAY])
    expected = {
        table: [dict(r) for r in await pool.fetch(
            f"SELECT * FROM {table} WHERE created_at < $1 ORDER BY ping_id::text",
            _at(TODAY, 0),
        )]
        for table in PARTITIONED_TABLES
    }  # fmt: skip

    async with pool.acquire() as conn:
        archived = await archive_before(conn, TODAY, tmp_path)
        again = await archive_before(conn, TODAY, tmp_path)

    assert [a.written for a in again] == [False] * 3
    manifest = [orjson.loads(line) for line in (tmp_path / MANIFEST).read_bytes().splitlines()]
    assert len(manifest) == len(archived) == 3
    for entry, done in zip(manifest, archived, strict=True):
        table = entry["table"]
        assert done.file == tmp_path / entry["file"]
        assert done.file.name == f"{table}-{old}.csv.gz"
        with gzip.open(done.file, "rt", newline="") as text:
            rows = list(csv.DictReader(text))
        # The documented columns (docs/scaling.md): the typed row's, in its order, first.
        row_type = {"pings": PingRow, "bid_outcomes": BidOutcomeRow,
                    "post_attempts": PostAttemptRow}[table]  # fmt: skip
        header = list(rows[0])
        assert header[: len(column_names(row_type))] == list(column_names(row_type))
        assert header == entry["columns"]
        assert entry["rows"] == done.rows == len(rows) == len(expected[table])
        for got, want in zip(
            sorted(rows, key=lambda r: r["ping_id"]), expected[table], strict=True
        ):
            assert got["ping_id"] == str(want["ping_id"])
            assert datetime.fromisoformat(got["created_at"]) == want["created_at"]
            assert got["created_at"].endswith("+00")  # written in UTC
        if table == "pings":
            assert orjson.loads(rows[0]["lead"]) == {"state": "CA"}
            assert rows[0]["external_id"] == ""  # NULL: an empty unquoted field
    recorded = await pool.fetch("SELECT table_name, day, rows, sha256 FROM ledger_archives")
    assert {(r["table_name"], r["day"]) for r in recorded} == {(t, old) for t in PARTITIONED_TABLES}


async def test_an_existing_ledger_moves_into_day_partitions_with_every_row(
    database_url: str,
) -> None:
    """A ledger made before partitioning (migrations up to 0010), with rows on several
    days, migrated: the same rows, each in its day's partition."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in _migration_files():
            if version <= 10:
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", version, name)
    finally:
        await conn.close()
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        days = [TODAY - timedelta(days=n) for n in (9, 1, 0)]
        await _write_unpartitioned(pool, days)
        before = {t: await _dump(pool, t) for t in PARTITIONED_TABLES}

        applied = await migrate(pool)

        assert "0011_partitioned_ledger.sql" in applied
        for table in PARTITIONED_TABLES:
            assert await _dump(pool, table) == before[table]
            assert await _partition_days(pool, table) == days
            assert await pool.fetchval(f"SELECT count(*) FROM {table}_default") == 0
        key = await pool.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'bid_outcomes'::regclass AND contype = 'p'"
        )
        assert key == "PRIMARY KEY (ping_id, buyer_id, created_at)"
    finally:
        await pool.close()


async def _write_unpartitioned(pool: asyncpg.Pool, days: list[date]) -> None:
    """Rows as a ledger at migration 0010 held them (its columns only)."""
    for day in days:
        for _ in range(2):
            ping, bids, attempt = _auction(day)
            pid = uuid.UUID(ping.ping_id)
            await pool.execute(
                "INSERT INTO pings VALUES ($1, 'acme-media', 'auto_insurance', NULL, 'ping', 1000,"
                " $2, 'bid', 1500, 1275, $3, $4, $5, 900, 120)",
                pid, ping.lead, ping.ping_tree, ping.created_at, ping.expires_at,
            )  # fmt: skip
            for bid in bids:
                await pool.execute(
                    "INSERT INTO bid_outcomes VALUES ($1, $2, 'bid', 1500, 450, $3, NULL, $4)",
                    pid, bid.buyer_id, bid.rank, bid.created_at,
                )  # fmt: skip
            await pool.execute(
                "INSERT INTO post_attempts VALUES ($1, 1, 'b0', 'accepted', 1500, 800, NULL,"
                " NULL, $2)",
                pid, attempt.created_at,
            )  # fmt: skip


async def _dump(pool: asyncpg.Pool, table: str) -> list[tuple[Any, ...]]:
    columns = {
        "pings": "ping_id, seller_id, lead, status, price_cents, created_at, duration_us",
        "bid_outcomes": "ping_id, buyer_id, outcome, latency_us, rank, created_at",
        "post_attempts": "ping_id, attempt, buyer_id, outcome, latency_us, created_at",
    }[table]
    rows = await pool.fetch(f"SELECT {columns} FROM {table} ORDER BY {columns}")
    return [tuple(r) for r in rows]


@pytest.fixture
async def traded(database_url: str) -> AsyncIterator[tuple[str, str]]:
    """A real exchange's day of trade: a sold lead (with an external id) and an unsold
    ping; yields their ping ids once everything is in the ledger."""
    spec = SimulatedBuyerSpec("b1", bid_cents=(2000, 2000))
    async with BuyerSimulator([spec]) as sim:
        loaded = make_config([realtime_buyer(sim, "b1")])
        async with running_exchange(loaded, database_url) as ex:
            sold = await ex.ping(external_id="lead-1")
            assert (await ex.post(sold["ping_id"], FULL_LEAD))["status"] == "sold"
            other = await ex.ping()
            await ex.ctx.writer.flush()
            yield sold["ping_id"], other["ping_id"]


async def test_retention_drops_a_days_auctions_and_keeps_its_sales_and_rollups(
    database_url: str, traded: tuple[str, str]
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        figures = "SELECT (SELECT count(*) FROM sales), (SELECT sum(pings) FROM seller_hourly)," \
                  " (SELECT sum(posts) FROM buyer_hourly)"  # fmt: skip
        kept = tuple(await pool.fetchrow(figures))
        assert kept == (1, 2, 1)
        day = utc_day(datetime.now(UTC))

        run = await maintain(pool, day + timedelta(days=100), RetentionPolicy(retention_days=30))

        # The day traded, and the days the exchange had made ahead of it.
        assert {p.day for p in run.dropped} == {day + timedelta(days=n) for n in range(4)}
        for table in ("pings", "bid_outcomes", "post_attempts", "posts", "external_ids"):
            assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        assert tuple(await pool.fetchrow(figures)) == kept
    finally:
        await pool.close()


async def test_the_exchange_has_made_todays_partitions_before_its_first_ping(
    database_url: str,
) -> None:
    spec = SimulatedBuyerSpec("b1", bid_cents=(2000, 2000))
    async with BuyerSimulator([spec]) as sim:
        loaded = make_config([realtime_buyer(sim, "b1")])
        async with running_exchange(loaded, database_url) as ex:
            await ex.ping()
            await ex.ctx.writer.flush()
            today = utc_day(datetime.now(UTC))
            pool = ex.ctx.store.pool
            for table in PARTITIONED_TABLES:
                days = await _partition_days(pool, table)
                assert days == [today + timedelta(days=n) for n in range(AHEAD_DAYS + 1)]
                assert await pool.fetchval(f"SELECT count(*) FROM {table}_default") == 0
            assert await pool.fetchval(f"SELECT count(*) FROM bid_outcomes_p{today:%Y%m%d}") == 1
            registry = ex.ctx.metrics.registry
            for table in PARTITIONED_TABLES:
                ahead = {"table": table}
                value = registry.get_sample_value("exchange_ledger_partitions_ahead", ahead)
                assert value == AHEAD_DAYS
