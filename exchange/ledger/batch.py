"""Batched ledger writes off the auction's critical path.

Pings, bid outcomes and post attempts are queued here and written every ``interval_s``
or as soon as ``batch_rows`` are waiting, each table's batch as one INSERT (all its
typed rows, exchange/ledger/rows.py, in one jsonb parameter) that also adds them to
their hourly rollups (exchange/ledger/rollups.py):
one round trip and one implicit transaction per table and batch. Money (sales, post results)
never passes through this queue. The queue is bounded: when it is full, ``add`` waits,
so a slow database slows the exchange down rather than letting memory grow. Rows still
queued when the process dies are lost; docs/reliability.md says what that costs
(no money, only per-buyer detail of the last ``interval_s``).

Ping rows are durable before the seller hears a price (``add_durable``: group commit).
They are written in a lane of their own, on their own connection, so that commit never
waits behind a bulk batch of bid outcomes.

A batch fails for one of two reasons, told apart by the error. The database cannot
write (it is away, a connection broke, a statement timed out): every row is kept and
retried, and ``stalled`` turns true once that has lasted STALL_S (/readyz reads it).
Or some rows cannot be stored (PostgreSQL refuses a value: SQLSTATE classes 22, 23 and
54; or a row cannot even be encoded as JSON): then the batch is split in halves until
each bad row stands alone, the good rows are written (the statement skips rows already
there, so a half written twice counts once), and each bad row goes to the dead-letter
table ``ledger_rejected_rows`` with its error, its durable waiter failing with
``RowRejected``. One bad row never holds up the others. Only a failed batch is encoded
row by row: the path without errors costs what it always did. At ``close`` rows the
database did not take are written to a dead-letter file (JSON lines) rather than lost.
Both kinds of dead letter are exchange/ledger/dead_letters.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import structlog

from exchange.ledger.dead_letters import (
    INSERT_REJECTED,
    Rejection,
    RowRejected,
    new_file,
    rejected_args,
    rejection,
    write_file,
)
from exchange.ledger.faults import BROKEN_CONNECTION, is_row_error
from exchange.ledger.rollups import INSERT_SQL, ROLLUP_ARGS
from exchange.ledger.rows import ROW_TYPES, LedgerRow, encode_row, encode_rows

log = structlog.get_logger("exchange.batch")

# How long rows may keep failing to write (or one write take) before the writer counts
# as stalled: /readyz answers 503 and exchange_ledger_writer_up is 0.
STALL_S = 2.0
# At close, the last flush gets this long before what is left goes to the dead-letter file.
FINAL_FLUSH_S = 5.0


# Tables written one after the other share a lane (and so a lock); lanes run side by side.
# Bid outcomes and post attempts both add to buyer_hourly, so they take turns.
_LANES = {"pings": "pings", "bid_outcomes": "bulk", "post_attempts": "bulk"}


# A durable row and the future its ``add_durable`` caller waits on: each waiter is settled
# by what happened to its own row.
Waiter = tuple[LedgerRow, asyncio.Future[None]]


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("the ledger did not commit in time"))


def _fail(waiter: asyncio.Future[None], error: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(error if isinstance(error, Exception) else RuntimeError("flush"))
        waiter.exception()  # the waiter may have stopped waiting: no "never retrieved"


def _settle(
    waiters: list[Waiter], error: BaseException | None, rejected: dict[int, Rejection]
) -> None:
    """``error``: the whole batch failed (its rows are kept). Else each waiter's row was
    written, or rejected (``rejected`` by the row's id())."""
    for row, waiter in waiters:
        if waiter.done():
            continue
        if error is not None:
            _fail(waiter, error)
        elif rejected and id(row) in rejected:
            found = rejected[id(row)]
            _fail(waiter, RowRejected(found.table, found.error))
        else:
            waiter.set_result(None)


class BatchWriter:
    """The queue and its writer tasks. ``on_flush(table, rows, seconds)`` hears of every
    batch written, ``on_reject(table, rows)`` of rows sent to the dead-letter table.
    ``dead_letter_dir`` is where ``close`` writes rows it could not write (default: a
    directory under the system's temporary directory)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        interval_s: float = 0.05,
        batch_rows: int = 2000,
        max_rows: int = 100_000,
        on_flush: Callable[[str, int, float], None] | None = None,
        on_reject: Callable[[str, int], None] | None = None,
        dead_letter_dir: Path | None = None,
    ) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self._batch_rows = batch_rows
        self._max_rows = max_rows
        self._on_flush = on_flush
        self._on_reject = on_reject
        self._dead_letter_dir = dead_letter_dir or (
            Path(tempfile.gettempdir()) / "lead-exchange-dead-letters"
        )
        self._rows: dict[str, list[LedgerRow]] = {t: [] for t in ROW_TYPES}
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
        self._waiters: dict[str, list[Waiter]] = {t: [] for t in ROW_TYPES}
        self._urgent: set[str] = set()
        # time.monotonic() of each table's first failed try since its last write, and of
        # each write under way: what ``stalled`` reads.
        self._failing_since: dict[str, float] = {}
        self._writing_since: dict[str, float] = {}
        self.dropped_rows = 0
        self.rejected_rows = 0
        # Where close() put the rows it could not write, if it had to.
        self.dead_letter_file: Path | None = None

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def stalled(self) -> bool:
        """True while the writer cannot write: some table's rows have failed every try
        for over STALL_S, or one write has been under way that long (a database that
        stopped answering). False again after the next successful write."""
        if not self._failing_since and not self._writing_since:
            return False  # the usual answer, asked by every request: no tuple to build
        since = min((*self._failing_since.values(), *self._writing_since.values()), default=None)
        return since is not None and time.monotonic() - since > STALL_S

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name="batch-writer"),
            loop.create_task(self._run_durable(), name="batch-writer-durable"),
        ]

    async def add(self, table: str, row: LedgerRow) -> None:
        """Queue a row for the next batch."""
        while self._queued >= self._max_rows:
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        self._rows[table].append(row)
        self._queued += 1
        if self._queued >= self._batch_rows:
            self._wake.set()

    async def add_many(self, table: str, rows: Sequence[LedgerRow]) -> None:
        """Queue several rows at once (one room check, no await when there is room)."""
        while self._queued >= self._max_rows:
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        self._rows[table].extend(rows)
        self._queued += len(rows)
        if self._queued >= self._batch_rows:
            self._wake.set()

    async def add_durable(self, table: str, row: LedgerRow, give_up_at: float) -> None:
        """Queue a row and return once it is committed (group commit: the writer flushes
        that table at once, with every row that arrived meanwhile). Raises what the write
        raised, or TimeoutError at ``give_up_at`` (loop time); the row stays queued and
        is retried either way. RowRejected: PostgreSQL refused this row itself (it is in
        the dead-letter table, and will not be retried); the other rows were written."""
        await self.add(table, row)
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[None] = loop.create_future()
        self._waiters[table].append((row, committed))
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
        """Write everything queued now (or only ``tables``). Rows refused for their data
        go to the dead-letter table and their waiters get RowRejected. When the database
        cannot write, every row is kept for the next try, durable waiters get the
        failure, and it is raised."""
        for table in ROW_TYPES:  # pings first: the post path reads them
            if tables is not None and table not in tables:
                continue
            async with self._locks[_LANES[table]]:
                self._urgent.discard(table)
                rows, waiters = self._rows[table], self._waiters[table]
                if not rows:
                    continue
                self._rows[table], self._waiters[table] = [], []
                self._writing_since[table] = time.monotonic()
                try:
                    rejected = await self._write(table, rows)
                except BaseException as exc:
                    self._rows[table] = rows + self._rows[table]
                    if isinstance(exc, Exception):
                        self._failing_since.setdefault(table, time.monotonic())
                    _settle(waiters, exc, {})
                    raise
                else:
                    self._failing_since.pop(table, None)
                    _settle(waiters, None, rejected)
                finally:
                    del self._writing_since[table]
                    self._queued = sum(len(r) for r in self._rows.values())
                    if self._queued < self._max_rows:
                        self._room.set()

    async def _write(self, table: str, rows: list[LedgerRow]) -> dict[int, Rejection]:
        """Write rows and add them to their hourly rollups in one statement: both land
        or neither, and rows already there (a retried batch) count once. Returns the rows
        rejected (by id()), already in the dead-letter table."""
        started_ns = time.perf_counter_ns()
        try:
            encoded = encode_rows(ROW_TYPES[table], rows)
        except TypeError:
            rejected = await self._write_apart(table, rows)
        else:
            try:
                await self._execute(table, encoded)
            except Exception as exc:
                if not is_row_error(exc):
                    raise
                rejected = await self._write_apart(table, rows)
            else:
                rejected = {}
        if self._on_flush is not None:
            self._on_flush(
                table, len(rows) - len(rejected), (time.perf_counter_ns() - started_ns) / 1e9
            )
        return rejected

    async def _write_apart(self, table: str, rows: list[LedgerRow]) -> dict[int, Rejection]:
        """A batch that failed for its data: rows that cannot be encoded are rejected at
        once, the rest are written in halves, and halves of failing halves, until each
        failing row is alone (a bad row costs about log2(rows) statements). Then the
        rejected rows go to the dead-letter table. A database error on the way is raised
        as from a whole batch: every row is kept, and a retry finds the same bad rows."""
        rejected: dict[int, Rejection] = {}
        parts: list[tuple[LedgerRow, bytes]] = []
        for row in rows:
            try:
                parts.append((row, encode_row(row)))
            except TypeError as exc:
                rejected[id(row)] = rejection(table, row, exc)
        pending = [parts] if parts else []
        while pending:
            part = pending.pop()
            try:
                await self._execute(table, b"[" + b",".join(e for _, e in part) + b"]")
            except Exception as exc:
                if not is_row_error(exc):
                    raise
                if len(part) == 1:
                    row = part[0][0]
                    rejected[id(row)] = rejection(table, row, exc)
                else:
                    half = len(part) // 2
                    pending += [part[half:], part[:half]]
        if rejected:
            await self._dead_letter(table, list(rejected.values()))
        return rejected

    async def _dead_letter(self, table: str, found: list[Rejection]) -> None:
        await self._execute_sql(table, INSERT_REJECTED, *rejected_args(found))
        self.rejected_rows += len(found)
        if self._on_reject is not None:
            self._on_reject(table, len(found))
        for r in found:
            # Never the row nor the message (it may quote a value): both are in the
            # table, where an operator reads them.
            ping_id = str(r.ping_id) if r.ping_id else None
            log.error(
                "ledger_row_rejected", table=table, error=r.kind, sqlstate=r.sqlstate,
                ping_id=ping_id,
            )  # fmt: skip

    async def warm(self) -> None:
        """Run each table's statement once, with no rows, on its lane's connection: a
        fresh connection plans a statement and loads its tables' catalog entries on first
        use, and the first auctions' ping rows must not pay for that past their tmax."""
        try:
            for table in ROW_TYPES:
                async with self._locks[_LANES[table]]:
                    await self._execute(table, b"[]")
        finally:
            # Back to the pool, warm (statements stay cached on their connections): the
            # lanes take them again with their first rows.
            held, self._held = self._held, {}
            for conn in held.values():
                with contextlib.suppress(Exception):
                    await self._pool.release(conn, timeout=1.0)

    async def _execute(self, table: str, encoded: bytes) -> None:
        await self._execute_sql(
            table, INSERT_SQL[table], *ROLLUP_ARGS.get(table, ()), orjson.Fragment(encoded)
        )

    async def _execute_sql(self, table: str, sql: str, *args: Any) -> None:
        lane = _LANES[table]
        for attempt in (1, 2):
            conn = self._held.get(lane)
            if conn is None:
                conn = self._held[lane] = await self._pool.acquire()
            try:
                await conn.execute(sql, *args)
                break
            except BaseException as exc:
                # The pool checks it, and replaces it if the failure broke it.
                del self._held[lane]
                with contextlib.suppress(Exception):
                    await self._pool.release(conn, timeout=1.0)
                # A held connection the server dropped meanwhile (a restart, a terminated
                # backend): the batch goes once more on a fresh one. Rows already written
                # are skipped by the statement itself.
                if attempt == 2 or not isinstance(exc, BROKEN_CONNECTION):
                    raise

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        # Each table on its own (one the database refuses does not keep the others
        # back), all within FINAL_FLUSH_S: a database that does not answer must not hold
        # the process's exit.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FINAL_FLUSH_S):
                for table in ROW_TYPES:
                    try:
                        await self.flush((table,))
                    except Exception:
                        log.exception("batch_final_flush_failed", table=table)
        if self._queued:
            self._save_unwritten()
        held, self._held = self._held, {}
        for conn in held.values():
            with contextlib.suppress(Exception):
                await self._pool.release(conn, timeout=1.0)

    def _save_unwritten(self) -> None:
        """The rows the database did not take before the process stops go to a new
        dead-letter file under the dead-letter directory (dead_letters.write_file);
        docs/reliability.md says how to load it back. Waiters still waiting are failed:
        their rows are not in the ledger."""
        rows, self._rows = self._rows, {t: [] for t in ROW_TYPES}
        count, self._queued = sum(len(r) for r in rows.values()), 0
        for table, waiters in self._waiters.items():
            _settle(waiters, RuntimeError(f"{table} row not written before stop"), {})
            self._waiters[table] = []
        path = new_file(self._dead_letter_dir)
        try:
            write_file(path, rows)
        except OSError:
            self.dropped_rows += count
            log.exception("ledger_rows_dropped", rows=count, path=str(path))
            return
        self.dead_letter_file = path
        log.error("ledger_rows_saved_to_file", rows=count, path=str(path))

    def discard(self) -> None:
        """Forget every queued row (their owner keeps them elsewhere, e.g. a replay)."""
        self._rows, self._queued = {t: [] for t in ROW_TYPES}, 0
