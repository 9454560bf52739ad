"""One unstorable row never stops the ledger (exchange/ledger/batch.py,
exchange/ledger/dead_letters.py).

Rows PostgreSQL refuses, or that cannot even be encoded, are split out of their batch
and set aside in ``ledger_rejected_rows``; every other row of the batch is written, and
each durable waiter hears what happened to its own row. A database that cannot write
is another matter: rows are kept and retried, and /readyz says not ready until they go.

Typed rows are built here directly (exchange/ledger/rows.py), to get past the edge's
validation; a dead letter keeps a row as the JSON array of its values in column order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from exchange.core.outcomes import BidOutcome, PingStatus
from exchange.ledger.batch import STALL_S, BatchWriter
from exchange.ledger.dead_letters import RowRejected
from exchange.ledger.pool import create_pool, migrate
from exchange.ledger.replay import replay_dead_letters
from exchange.ledger.rows import BidOutcomeRow, PingRow
from exchange.ledger.store import Store
from exchange.telemetry.metrics import Metrics
from tests.support.faults import (
    ControlledPostgres,
    serve_exchange,
)
from tests.support.harness import config_text, running_exchange

AT = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)


def outcome_row(buyer_id: str, price_cents: int = 1500, reason: str = "ok") -> BidOutcomeRow:
    return BidOutcomeRow(
        str(uuid.uuid4()), buyer_id, BidOutcome.BID, price_cents, 4200, None, reason, AT
    )


def ping_row(external_id: str) -> PingRow:
    return PingRow(
        str(uuid.uuid4()), "acme-media", "auto_insurance", external_id, "ping", 300,
        {"state": "CA"}, PingStatus.BID, 1500, 1275, [], AT, AT + timedelta(minutes=2), 1000,
        100,
    )  # fmt: skip


def rejected_count(metrics: Metrics, table: str) -> float | None:
    return metrics.registry.get_sample_value(
        "exchange_ledger_rows_rejected_total", {"table": table}
    )


async def test_bad_rows_go_to_the_dead_letter_table_and_the_rest_of_the_batch_is_written(
    store: Store,
) -> None:
    metrics = Metrics()
    writer = BatchWriter(
        store.pool, on_flush=metrics.record_flush, on_reject=metrics.record_rejected
    )
    good = [outcome_row("steady") for _ in range(300)]
    nul = outcome_row("steady", reason="a\u0000b")
    huge = outcome_row("steady", price_cents=2**70)
    rows = [*good[:100], nul, *good[100:250], huge, *good[250:]]
    await writer.add_many("bid_outcomes", rows)
    await writer.flush()

    written = await store.pool.fetchval("SELECT count(*) FROM bid_outcomes")
    counted = await store.pool.fetchval("SELECT pings FROM buyer_hourly WHERE buyer_id = 'steady'")
    letters = await store.pool.fetch(
        "SELECT table_name, ping_id::text, sqlstate, error, row_data FROM ledger_rejected_rows"
        " ORDER BY sqlstate NULLS LAST"
    )
    assert (written, counted) == (300, 300)
    assert [(r["table_name"], r["ping_id"]) for r in letters] == [
        ("bid_outcomes", nul.ping_id),
        ("bid_outcomes", huge.ping_id),
    ]
    assert letters[0]["sqlstate"] == "22P05"  # untranslatable character: the NUL
    assert letters[1]["sqlstate"] is None
    assert "64-bit" in letters[1]["error"]
    # Nothing lost: the row as the batch sent it, NUL included, or its repr.
    assert orjson.loads(letters[0]["row_data"])[6] == "a\u0000b"
    assert str(2**70) in letters[1]["row_data"].decode()
    assert rejected_count(metrics, "bid_outcomes") == 2
    assert writer.queued == 0 and writer.rejected_rows == 2

    later = outcome_row("steady")
    await writer.add("bid_outcomes", later)
    await writer.flush()
    assert await store.pool.fetchval("SELECT count(*) FROM bid_outcomes") == 301
    assert await store.pool.fetchval("SELECT count(*) FROM ledger_rejected_rows") == 2
    await writer.close()


async def test_a_fixed_dead_letter_replays_into_the_ledger_and_its_rollups(store: Store) -> None:
    writer = BatchWriter(store.pool)
    nul = outcome_row("steady", reason="a\u0000b")
    huge = outcome_row("steady", price_cents=2**70)
    await writer.add_many("bid_outcomes", [outcome_row("steady"), nul, huge])
    await writer.flush()
    await writer.close()
    ids = dict(await store.pool.fetch("SELECT ping_id::text, id FROM ledger_rejected_rows"))
    # docs/reliability.md: drop the NULs from a row's JSON text.
    await store.pool.execute(
        "UPDATE ledger_rejected_rows SET row_data = convert_to("
        "replace(convert_from(row_data, 'UTF8'), '\\u0000', ''), 'UTF8') WHERE id = $1",
        ids[nul.ping_id],
    )
    replayed = await replay_dead_letters(store.pool)

    assert (replayed.written, replayed.refused) == (1, 0)
    assert replayed.skipped == [f"id {ids[huge.ping_id]}"]  # its repr needs a hand fix
    assert (
        await store.pool.fetchval(
            "SELECT reason FROM bid_outcomes WHERE ping_id = $1", uuid.UUID(nul.ping_id)
        )
        == "ab"
    )
    assert (
        await store.pool.fetchval("SELECT pings FROM buyer_hourly WHERE buyer_id = 'steady'") == 2
    )
    left = await store.pool.fetch("SELECT id FROM ledger_rejected_rows")
    assert [r["id"] for r in left] == [ids[huge.ping_id]]


async def test_a_refused_durable_row_fails_only_its_own_waiter(store: Store) -> None:
    writer = BatchWriter(store.pool)
    rows = [ping_row(f"ok-{n}") for n in range(5)]
    bad = ping_row("a\u0000b")
    rows.insert(2, bad)
    give_up_at = asyncio.get_running_loop().time() + 10
    waiters = [asyncio.create_task(writer.add_durable("pings", row, give_up_at)) for row in rows]
    await asyncio.sleep(0)  # every row queued: one flush takes them all
    assert writer.queued == len(rows)
    await writer.flush()
    results = await asyncio.gather(*waiters, return_exceptions=True)

    refused = results.pop(2)
    assert isinstance(refused, RowRejected)
    assert refused.table == "pings" and "Unicode" in refused.error
    assert results == [None] * 5
    stored = await store.pool.fetch("SELECT external_id FROM pings ORDER BY external_id")
    assert [r["external_id"] for r in stored] == [f"ok-{n}" for n in range(5)]
    assert (
        await store.pool.fetchval("SELECT pings FROM seller_hourly WHERE seller_id = 'acme-media'")
        == 5
    )
    assert (
        await store.pool.fetchval(
            "SELECT ping_id::text FROM ledger_rejected_rows WHERE table_name = 'pings'"
        )
        == bad.ping_id
    )
    await writer.close()


async def test_rows_that_cannot_be_written_keep_readiness_false_until_they_are(
    database_url: str,
) -> None:
    """The database answers its health check, but the batch writer's statement fails
    (the table it writes is gone for a moment): not a problem of the rows, so they are
    kept and retried; after STALL_S /readyz says not ready; once the table is back they
    are written and /readyz is ready again."""
    async with running_exchange(config_text([]), database_url) as ex:
        pool = ex.ctx.store.pool
        await pool.execute("ALTER TABLE bid_outcomes RENAME TO bid_outcomes_away")
        rows = [outcome_row("steady") for _ in range(20)]
        await ex.ctx.writer.add_many("bid_outcomes", rows)
        await asyncio.sleep(STALL_S + 0.5)
        status, body, _ = await ex.call("GET", "/readyz", key=None)
        metrics_text = (await ex.call("GET", "/metrics", key=None))[1]
        assert status == 503, body
        assert body["error"]["message"] == "the ledger cannot be written"
        assert "exchange_ledger_writer_up 0.0" in _text(metrics_text)
        assert ex.ctx.writer.queued == 20 and ex.ctx.writer.stalled

        await pool.execute("ALTER TABLE bid_outcomes_away RENAME TO bid_outcomes")
        await _until(lambda: not ex.ctx.writer.stalled, "the writer to write again")
        status, body, _ = await ex.call("GET", "/readyz", key=None)
        metrics_text = (await ex.call("GET", "/metrics", key=None))[1]
        assert status == 200, body
        assert "exchange_ledger_writer_up 1.0" in _text(metrics_text)
        assert await pool.fetchval("SELECT count(*) FROM bid_outcomes") == 20
        assert await pool.fetchval("SELECT count(*) FROM ledger_rejected_rows") == 0


# -- the database away ------------------------------------------------------------------


async def test_while_the_database_is_away_rows_are_kept_and_readiness_is_false(
    pg: ControlledPostgres, fault_db: str
) -> None:
    async with serve_exchange(config_text([]), fault_db) as ex:
        writer = ex.ctx.writer
        await asyncio.to_thread(pg.stop, "fast")
        try:
            rows = [outcome_row("steady") for _ in range(10)]
            await writer.add_many("bid_outcomes", rows)
            await _until(lambda: writer.stalled, "the writer to count as stalled", 10)
            status, _, _ = await ex.call("GET", "/readyz", key=None)
            assert status == 503
            assert writer.queued == 10 and writer.rejected_rows == 0
        finally:
            await asyncio.to_thread(pg.start)
        await _until(lambda: not writer.stalled, "the writer to write again", 15)
        await _until(lambda: writer.queued == 0, "the queue to drain", 5)
        for _ in range(100):
            status, _, _ = await ex.call("GET", "/readyz", key=None)
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200
        written = await ex.ctx.store.pool.fetchval("SELECT count(*) FROM bid_outcomes")
        assert written == 10
        assert await ex.ctx.store.pool.fetchval("SELECT count(*) FROM ledger_rejected_rows") == 0


async def test_rows_left_at_stop_with_the_database_away_go_to_a_dead_letter_file(
    pg: ControlledPostgres, fault_db: str, tmp_path: Any
) -> None:
    pool = await create_pool(fault_db, min_size=1, max_size=2)
    await migrate(pool)
    writer = BatchWriter(pool, dead_letter_dir=tmp_path)
    rows = [outcome_row("steady") for _ in range(3)]
    pings = [ping_row("left-1")]
    await asyncio.to_thread(pg.stop, "fast")
    try:
        await writer.add_many("bid_outcomes", rows)
        await writer.add_many("pings", pings)
        await writer.close()
    finally:
        await asyncio.to_thread(pg.start)
        pool.terminate()
    assert writer.dead_letter_file is not None
    assert writer.dead_letter_file.parent == tmp_path
    assert writer.dropped_rows == 0 and writer.queued == 0
    lines = [orjson.loads(line) for line in writer.dead_letter_file.read_bytes().splitlines()]
    assert sorted((line["table_name"], line["row"][0]) for line in lines) == sorted(
        [("bid_outcomes", r.ping_id) for r in rows] + [("pings", p.ping_id) for p in pings]
    )

    # The database back: the file replays.
    pool = await create_pool(fault_db, min_size=1, max_size=2)
    try:
        replayed = await replay_dead_letters(pool, [], [writer.dead_letter_file])
        counts = [
            await pool.fetchval(f"SELECT count(*) FROM {t}") for t in ("pings", "bid_outcomes")
        ]
    finally:
        await pool.close()
    assert (replayed.written, replayed.refused, replayed.skipped) == (4, 0, [])
    assert counts == [1, 3]


def _text(body: Any) -> str:
    return body.decode() if isinstance(body, bytes) else str(body)


async def _until(check: Any, what: str, within_s: float = 5.0) -> None:
    give_up = time.monotonic() + within_s
    while not check():
        if time.monotonic() > give_up:
            raise AssertionError(f"waited {within_s} s for {what}")
        await asyncio.sleep(0.05)
