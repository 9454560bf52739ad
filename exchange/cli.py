"""The `lead-exchange` command: serve, check-config, demo."""

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

from exchange.config import ConfigError, LoadedConfig, load_config

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

DEFAULT_DATA_DIR = "./.lead-exchange"
# Bursts of new seller connections must not overflow the accept queue (128 by default):
# an overflow costs the client a SYN retry, a second or more.
LISTEN_BACKLOG = 1024
# With --workers: a worker that exits is replaced, unless more than RESTART_LIMIT exits
# come within RESTART_WINDOW_S (a worker that cannot start: then the server stops).
RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0


def _load_or_exit(path: str) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"configuration error ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = _load_or_exit(args.config)
    config = loaded.config
    print(
        f"{args.config}: OK ({len(config.verticals)} verticals, {len(config.sellers)} sellers, "
        f"{len(config.buyers)} buyers)"
    )
    return 0


def _serve_worker(
    args: argparse.Namespace, database_url: str, reuse_port: bool, owner: str | None = None
) -> None:
    """One exchange process: its own event loop, pool and transport; the port is shared
    with its siblings through SO_REUSEPORT. ``owner`` names it in its post claims."""
    from aiohttp import web

    from exchange.app import AppOptions, create_app
    from exchange.logs import configure_logging

    loaded = _load_or_exit(args.config)
    configure_logging(json=not args.console_logs, level=args.log_level)
    _install_uvloop()
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


def _run_workers(args: argparse.Namespace, database_url: str) -> int:
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

    from exchange.logs import configure_logging

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

    from exchange.metrics import worker_restarts

    restarts = worker_restarts()
    spawn = multiprocessing.get_context("spawn")
    stopping = False

    owners: dict[str, tuple[str, datetime]] = {}  # worker name -> its owner, started at
    closers: list[threading.Thread] = []

    def start(name: str) -> multiprocessing.process.BaseProcess:
        owner = uuid.uuid4().hex
        owners[name] = (owner, datetime.now(UTC))
        worker = spawn.Process(
            target=_serve_worker, args=(args, database_url, True, owner), name=name
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
    """Close the post claims a dead worker left in progress (exchange.store.close_claims_of):
    sold with their committed sales, else unsold post_interrupted, so that the sellers'
    retries get their answer now. If the ledger cannot be reached, they age out as usual
    (post_deadline_ms + 5 s, closed by the next retry)."""
    import asyncpg

    from exchange.posting import UnsoldReason
    from exchange.store import close_claims_of

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


def cmd_serve(args: argparse.Namespace) -> int:
    from exchange.embedded import EmbeddedPostgres

    _load_or_exit(args.config)  # fail before anything starts
    embedded = None
    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        embedded = EmbeddedPostgres(Path(args.data_dir))
        url = embedded.start()
    try:
        if args.workers > 1:
            return _run_workers(args, url)
        _serve_worker(args, url, args.reuse_port)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def cmd_replay_dead_letters(args: argparse.Namespace) -> int:
    """Write set-aside ledger rows again (docs/reliability.md, "Dead letters")."""
    from exchange.batch import replay_dead_letters
    from exchange.store import create_pool, migrate

    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        print("--database-url or DATABASE_URL is needed", file=sys.stderr)
        return 2
    if not (args.all or args.id or args.file):
        print("say which rows: --id N (repeatable), --all, or --file PATH", file=sys.stderr)
        return 2

    async def replay() -> int:
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            await migrate(pool)
            ids = None if args.all else args.id
            done = await replay_dead_letters(pool, ids, [Path(f) for f in args.file])
        finally:
            await pool.close()
        print(f"written: {done.written}, refused again: {done.refused}")
        for where in done.skipped:
            print(f"skipped (no JSON row; fix or delete it): {where}")
        return 1 if done.refused or done.skipped else 0

    return asyncio.run(replay())


def cmd_demo(args: argparse.Namespace) -> int:
    from exchange.demo import run_demo

    _install_uvloop()
    return asyncio.run(run_demo(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lead-exchange", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the exchange")
    serve.add_argument("--config", required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--database-url", default=None)
    serve.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--console-logs", action="store_true", help="readable logs, not JSON")
    serve.add_argument("--reuse-port", action="store_true")
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve.add_argument("--shutdown-timeout", type=float, default=20.0)
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config")
    check.set_defaults(func=cmd_check_config)

    replay = sub.add_parser(
        "replay-dead-letters", help="write ledger rows that were set aside, once fixed"
    )
    replay.add_argument("--database-url", default=None)
    replay.add_argument("--id", type=int, action="append", default=[], help="a dead letter")
    replay.add_argument("--all", action="store_true", help="every dead letter in the table")
    replay.add_argument(
        "--file", action="append", default=[], help="a dead-letter file written at stop"
    )
    replay.set_defaults(func=cmd_replay_dead_letters)

    demo = sub.add_parser("demo", help="embedded database, simulated buyers, live traffic")
    demo.add_argument("--duration", type=float, default=None, help="seconds (default: until ^C)")
    demo.add_argument("--rate", type=float, default=50.0, help="leads per second")
    demo.add_argument("--buyers", type=int, default=8)
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
