"""The `lead-exchange` command: serve, check-config, replay-dead-letters, archive, demo,
buyer-test, admin, rotate-key."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from exchange.server.supervisor import install_uvloop, load_or_exit, run_workers, serve_worker

DEFAULT_DATA_DIR = "./.lead-exchange"


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = load_or_exit(args.config)
    config = loaded.config
    print(
        f"{args.config}: OK ({len(config.verticals)} verticals, {len(config.sellers)} sellers, "
        f"{len(config.buyers)} buyers)"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from exchange.server.embedded import EmbeddedPostgres

    load_or_exit(args.config)  # fail before anything starts
    embedded = None
    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        embedded = EmbeddedPostgres(Path(args.data_dir))
        url = embedded.start()
    try:
        if args.workers > 1:
            return run_workers(args, url)
        serve_worker(args, url, args.reuse_port)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def cmd_replay_dead_letters(args: argparse.Namespace) -> int:
    """Write set-aside ledger rows again (docs/reliability.md, "Dead letters")."""
    from exchange.ledger.pool import create_pool, migrate
    from exchange.ledger.replay import replay_dead_letters

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


def cmd_archive(args: argparse.Namespace) -> int:
    """Write the ledger's day partitions before --before to gzip CSV files (docs/scaling.md)."""
    from datetime import UTC, date, datetime

    from exchange.ledger.archive import archive_ledger

    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        print("--database-url or DATABASE_URL is needed", file=sys.stderr)
        return 2
    try:
        before = date.fromisoformat(args.before)
    except ValueError:
        print(f"--before: not a date (YYYY-MM-DD): {args.before}", file=sys.stderr)
        return 2
    today = datetime.now(UTC).date()
    if before > today:
        print(f"--before: at most today ({today}); a day is archived once over", file=sys.stderr)
        return 2
    done = asyncio.run(archive_ledger(url, before, Path(args.output)))
    for part in done:
        what = "written" if part.written else "already archived"
        print(f"{part.table} {part.day}: {part.rows} rows, {what}: {part.file}")
    print(f"{sum(p.written for p in done)} written, {sum(not p.written for p in done)} kept")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from exchange.tools.demo import run_demo

    install_uvloop()
    return asyncio.run(run_demo(args))


def cmd_buyer_test(args: argparse.Namespace) -> int:
    from exchange.tools.buyer_test import run_buyer_test

    return run_buyer_test(args)


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

    archive = sub.add_parser(
        "archive", help="write the ledger's day partitions before a date to gzip CSV files"
    )
    archive.add_argument("--before", required=True, metavar="DATE", help="YYYY-MM-DD (UTC)")
    archive.add_argument("--output", default=f"{DEFAULT_DATA_DIR}/archive", metavar="DIR")
    archive.add_argument("--database-url", default=None)
    archive.set_defaults(func=cmd_archive)

    demo = sub.add_parser("demo", help="embedded database, simulated buyers, live traffic")
    demo.add_argument("--duration", type=float, default=None, help="seconds (default: until ^C)")
    demo.add_argument("--rate", type=float, default=50.0, help="leads per second")
    demo.add_argument("--buyers", type=int, default=8)
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    demo.add_argument("--plain", action="store_true", help="plain lines, not the full screen")
    demo.set_defaults(func=cmd_demo)

    buyer_test = sub.add_parser(
        "buyer-test", help="send one ping (and post) to a buyer and show how it was read"
    )
    buyer_test.add_argument("--config", required=True)
    buyer_test.add_argument("buyer", metavar="BUYER", help="the buyer's id in the config")
    buyer_test.add_argument(
        "--lead", metavar="FILE", help="a JSON object of lead fields (default: a sample lead)"
    )
    buyer_test.add_argument(
        "--vertical", default=None, help="for a buyer of several verticals (default: its first)"
    )
    buyer_test.add_argument(
        "--post", action="store_true", help="post the full lead too, when the buyer bids"
    )
    buyer_test.add_argument("--json", action="store_true", help="machine-readable output")
    buyer_test.set_defaults(func=cmd_buyer_test)

    from exchange.tools.admin_cli import add_parser as add_admin_parser

    add_admin_parser(sub)

    from exchange.tools.rotate_key import add_parser as add_rotate_key_parser

    add_rotate_key_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
