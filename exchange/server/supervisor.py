"""Running the exchange as processes: one worker (its own event loop, pool and
transport), or ``serve --workers N`` supervised on one port: a worker that exits is
replaced, and the post claims it was walking are closed at once."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.config import ConfigError, load_config
from exchange.core.config import LoadedConfig

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger


# Bursts of new seller connections must not overflow the accept queue (128 by default):
# an overflow costs the client a SYN retry, a second or more.
LISTEN_BACKLOG = 1024


# With --workers: a worker that exits is replaced, unless more than RESTART_LIMIT exits
# come within RESTART_WINDOW_S (a worker that cannot start: then the server stops).
RESTART_LIMIT = 5


RESTART_WINDOW_S = 60.0


def load_or_exit(path: str) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"configuration error ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve_worker(
    args: argparse.Namespace, database_url: str, reuse_port: bool, owner: str | None = None
) -> None:
    """One exchange process: its own event loop, pool and transport; the port is shared
    with its siblings through SO_REUSEPORT. ``owner`` names it in its post claims."""
    from aiohttp import web

    from exchange.app import AppOptions, create_app
    from exchange.telemetry.logs import configure_logging

    loaded = load_or_exit(args.config)
    configure_logging(json=not args.console_logs, level=args.log_level)
    install_uvloop()
    data_dir = str(Path(args.data_dir).resolve())
    options = AppOptions(database_url=database_url, owner=owner, data_dir=data_dir)
    app = create_app(loaded, options)
    # Fewer young-generation collections: the hot path allocates many short-lived objects
    # and each collection is a pause in every auction in flight.
    gc.set_threshold(10_000, 20, 20)
    web.run_app(
        app, host=args.host, port=args.port, access_log=None, print=None,
        reuse_port=reuse_port, shutdown_timeout=args.shutdown_timeout,
        backlog=LISTEN_BACKLOG,
    )  # fmt: skip


# One function on purpose: the supervision loop (start, watch, replace, stop) reads as one
# sequence, and its pieces share the signal handlers and the restart window.
def run_workers(args: argparse.Namespace, database_url: str) -> int:
    """Start ``args.workers`` processes on one port and keep that many running: a worker
    that exits on its own (a crash, an out-of-memory kill) is replaced at once, unless
    workers keep exiting (more than RESTART_LIMIT within RESTART_WINDOW_S: then the
    server stops, exit code 1, rather than spin). SIGTERM or SIGINT stops every worker
    and restarts none."""
    import multiprocessing
    import multiprocessing.connection
    import signal
    import tempfile
    from collections import deque

    import structlog

    from exchange.telemetry.logs import configure_logging

    configure_logging(json=not args.console_logs, level=args.log_level)
    log = structlog.get_logger("exchange.workers")
    # Every worker writes its metrics to files here; /metrics of any worker sums them all.
    # (Set before prometheus_client is imported here: this process counts restarts there.)
    metrics_dir = os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="lead-exchange-metrics-")
    )
    for stale in Path(metrics_dir).glob("*.db"):
        stale.unlink()
    from prometheus_client import multiprocess

    from exchange.telemetry.collectors import worker_restarts

    restarts = worker_restarts()
    spawn = multiprocessing.get_context("spawn")
    stopping = False

    owners: dict[str, tuple[str, datetime]] = {}  # worker name -> its owner, started at
    closers: list[threading.Thread] = []

    def start(name: str) -> multiprocessing.process.BaseProcess:
        owner = uuid.uuid4().hex
        owners[name] = (owner, datetime.now(UTC))
        worker = spawn.Process(
            target=serve_worker, args=(args, database_url, True, owner), name=name
        )
        worker.start()
        log.info("worker_started", worker=name, pid=worker.pid, owner=owner)
        return worker

    workers: dict[str, multiprocessing.process.BaseProcess] = {}

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers.values():
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for n in range(args.workers):
        if not stopping:
            workers[f"worker-{n}"] = start(f"worker-{n}")
    exits: deque[float] = deque()
    code = 0
    while workers:
        ended = multiprocessing.connection.wait([w.sentinel for w in workers.values()])
        for name, worker in list(workers.items()):
            if worker.sentinel not in ended:
                continue
            worker.join()
            del workers[name]
            if worker.pid is not None:
                # Its live gauges leave the sums; its counters stay in them.
                multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
            # Posts it was walking are closed now, not when their claims age out.
            closer = threading.Thread(
                target=_close_claims_of_dead, args=(database_url, *owners[name], log),
                name=f"close-claims-{name}", daemon=True,
            )  # fmt: skip
            closer.start()
            closers.append(closer)
            if stopping:
                # Stopped by the SIGTERM sent to it (before its handler was set up, if it
                # was still starting), or it finished its work and exited 0.
                if worker.exitcode not in (0, -signal.SIGTERM):
                    code = 1
                continue
            log.warning("worker_exited", worker=name, pid=worker.pid, exitcode=worker.exitcode)
            now = time.monotonic()
            exits.append(now)
            while exits[0] < now - RESTART_WINDOW_S:
                exits.popleft()
            if len(exits) > RESTART_LIMIT:
                log.error("workers_keep_exiting", exits=len(exits), window_s=RESTART_WINDOW_S)
                code = 1
                stop(signal.SIGTERM, None)
                continue
            workers[name] = start(name)
            restarts.inc()
    # Claims still being closed get a few seconds in all (else they age out).
    give_up = time.monotonic() + 5.0
    for closer in closers:
        closer.join(timeout=max(0.0, give_up - time.monotonic()))
    return code


def _close_claims_of_dead(
    database_url: str, owner: str, started: datetime, log: FilteringBoundLogger
) -> None:
    """Close the post claims a dead worker left in progress
    (exchange.ledger.claims.close_claims_of): sold with their committed sales, else unsold
    post_interrupted, so that the sellers' retries get their answer now. If the ledger
    cannot be reached, they age out as usual (post_deadline_ms + 5 s, closed by the next
    retry)."""
    import asyncpg

    from exchange.core.outcomes import UnsoldReason
    from exchange.ledger.claims import close_claims_of

    async def close() -> int:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            since = started - timedelta(seconds=1)
            now = datetime.now(UTC)
            return await close_claims_of(conn, owner, since, UnsoldReason.INTERRUPTED, now)
        finally:
            await conn.close()

    try:
        closed = asyncio.run(asyncio.wait_for(close(), timeout=30))
    except Exception as exc:  # the ledger away: the claims age out instead
        log.warning("worker_claims_left_to_age_out", owner=owner, error=type(exc).__name__)
        return
    if closed:
        log.info("worker_claims_closed", owner=owner, posts=closed)
