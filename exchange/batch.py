"""Batched ledger writes off the auction's critical path.

Pings, bid outcomes and post attempts are queued here and written every ``interval_s``
or as soon as ``batch_rows`` are waiting, each table's batch as one INSERT (all its rows
in one jsonb parameter) that also adds them to their hourly rollups (exchange/rollups.py):
one round trip and one implicit transaction per table and batch. Money (sales, post results)
never passes through this queue. The queue is bounded: when it is full, ``add`` waits,
so a slow database slows the exchange down rather than letting memory grow. Rows still
queued when the process dies are lost; docs/reliability.md says what that costs
(no money, only per-buyer detail of the last ``interval_s``).

Ping rows are durable before the seller hears a price (``add_durable``: group commit).
They are written in a lane of their own, on their own connection, so that commit never
waits behind a bulk batch of bid outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson
import structlog

from exchange.rollups import INSERT_SQL, ROLLUP_ARGS

log = structlog.get_logger("exchange.batch")

COLUMNS: dict[str, tuple[str, ...]] = {
    "pings": (
        "ping_id", "seller_id", "vertical", "external_id", "mode", "tmax_ms", "lead",
        "status", "price_cents", "payout_cents", "ping_tree", "created_at", "expires_at",
        "duration_us", "overhead_us",
    ),
    "bid_outcomes": (
        "ping_id", "buyer_id", "outcome", "price_cents", "latency_us", "rank", "reason",
        "created_at",
    ),
    "post_attempts": (
        "ping_id", "attempt", "buyer_id", "outcome", "price_cents", "latency_us", "reason",
        "buyer_lead_id", "created_at",
    ),
}  # fmt: skip


_BROKEN_CONNECTION = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# Tables written one after the other share a lane (and so a lock); lanes run side by side.
# Bid outcomes and post attempts both add to buyer_hourly, so they take turns.
_LANES = {"pings": "pings", "bid_outcomes": "bulk", "post_attempts": "bulk"}


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("the ledger did not commit in time"))


def _settle(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error if isinstance(error, Exception) else RuntimeError("flush"))
            waiter.exception()  # the waiter may have stopped waiting: no "never retrieved"


class BatchWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        interval_s: float = 0.05,
        batch_rows: int = 2000,
        max_rows: int = 100_000,
        on_flush: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self._batch_rows = batch_rows
        self._max_rows = max_rows
        self._on_flush = on_flush
        self._rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in COLUMNS}
        self._queued = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._locks = {lane: asyncio.Lock() for lane in set(_LANES.values())}
        # Each lane keeps its pooled connection between batches (acquiring one per batch
        # costs as much client CPU as the write itself).
        self._held: dict[str, asyncpg.pool.PoolConnectionProxy] = {}
        self._urgent_wake = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {t: [] for t in COLUMNS}
        self._urgent: set[str] = set()
        self.dropped_rows = 0

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name="batch-writer"),
            loop.create_task(self._run_durable(), name="batch-writer-durable"),
        ]

    async def add(self, table: str, row: tuple[Any, ...]) -> None:
        """Queue a row for the next batch."""
        while self._queued >= self._max_rows:
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        self._rows[table].append(row)
        self._queued += 1
        if self._queued >= self._batch_rows:
            self._wake.set()

    async def add_many(self, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Queue several rows at once (one room check, no await when there is room)."""
        while self._queued >= self._max_rows:
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        self._rows[table].extend(rows)
        self._queued += len(rows)
        if self._queued >= self._batch_rows:
            self._wake.set()

    async def add_durable(self, table: str, row: tuple[Any, ...], give_up_at: float) -> None:
        """Queue a row and return once it is committed (group commit: the writer flushes
        that table at once, with every row that arrived meanwhile). Raises what the write
        raised, or TimeoutError at ``give_up_at`` (loop time); the row stays queued and
        is retried either way."""
        await self.add(table, row)
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[None] = loop.create_future()
        self._waiters[table].append(committed)
        self._urgent.add(table)
        self._urgent_wake.set()
        # A plain timer, not asyncio.timeout(): this runs once per ping.
        timer = loop.call_at(give_up_at, _time_out, committed)
        try:
            await committed
        finally:
            timer.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self._interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_full - loop.time()))
            self._wake.clear()
            next_full = loop.time() + self._interval_s
            try:
                await self.flush()
            except Exception:  # keep the writer alive whatever the database does
                log.exception("batch_flush_failed")
                await asyncio.sleep(min(1.0, self._interval_s * 10))

    async def _run_durable(self) -> None:
        """Commit durable rows as soon as they come: every row that arrives while one
        commit is under way goes in the next (group commit)."""
        while True:
            await self._urgent_wake.wait()
            self._urgent_wake.clear()
            try:
                await self.flush(tuple(self._urgent))
            except Exception:
                log.exception("batch_flush_failed")
                await asyncio.sleep(min(1.0, self._interval_s * 10))

    async def flush(self, tables: tuple[str, ...] | None = None) -> None:
        """Write everything queued now (or only ``tables``). Rows that fail to write are
        kept for the next try; durable waiters get the failure."""
        for table in COLUMNS:  # pings first: the post path reads them
            if tables is not None and table not in tables:
                continue
            async with self._locks[_LANES[table]]:
                self._urgent.discard(table)
                rows, waiters = self._rows[table], self._waiters[table]
                if not rows:
                    continue
                self._rows[table], self._waiters[table] = [], []
                try:
                    await self._write(table, rows)
                except BaseException as exc:
                    self._rows[table] = rows + self._rows[table]
                    _settle(waiters, exc)
                    raise
                else:
                    _settle(waiters, None)
                finally:
                    self._queued = sum(len(r) for r in self._rows.values())
                    if self._queued < self._max_rows:
                        self._room.set()

    async def _write(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """Write rows and add them to their hourly rollups in one statement: both land
        or neither, and rows already there (a retried batch) count once."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        encoded = orjson.Fragment(orjson.dumps(rows))
        lane = _LANES[table]
        for attempt in (1, 2):
            conn = self._held.get(lane)
            if conn is None:
                conn = self._held[lane] = await self._pool.acquire()
            try:
                await conn.execute(INSERT_SQL[table], *ROLLUP_ARGS.get(table, ()), encoded)
                break
            except BaseException as exc:
                # The pool checks it, and replaces it if the failure broke it.
                del self._held[lane]
                with contextlib.suppress(Exception):
                    await self._pool.release(conn, timeout=1.0)
                # A held connection the server dropped meanwhile (a restart, a terminated
                # backend): the batch goes once more on a fresh one. Rows already written
                # are skipped by the statement itself.
                if attempt == 2 or not isinstance(exc, _BROKEN_CONNECTION):
                    raise
        if self._on_flush is not None:
            self._on_flush(table, len(rows), loop.time() - started)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        try:
            await self.flush()
        except Exception:
            self.dropped_rows += self._queued
            log.exception("batch_final_flush_failed", dropped_rows=self._queued)
        held, self._held = self._held, {}
        for conn in held.values():
            with contextlib.suppress(Exception):
                await self._pool.release(conn, timeout=1.0)
