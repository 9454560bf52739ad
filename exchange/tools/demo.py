"""`lead-exchange demo`: the whole loop on one machine, shown as it is.

An embedded PostgreSQL, then three processes of the demo's own: the simulated buyers
(exchange/tools/demo_buyers.py), the exchange itself (`lead-exchange serve`, as in
production) and the sellers sending leads at a steady rate (exchange/tools/demo_sellers.py).
Each in its own process, so that what each costs can be read apart, and a busy demo
client cannot pass for a slow exchange.

Every second the demo reads the exchange's /metrics (its own figures), the sellers'
report (what they measured end to end), the CPU of every process and the stories of the
last auctions from the ledger, and shows them: full screen in a terminal
(exchange/tools/demo_screen.py), one line a second otherwise or with ``--plain``. Ctrl-C
(or ``--duration``) stops the sellers, reads the last figures and prints a summary.

The market (sellers, buyers, the exchange's config) is exchange/tools/demo_market.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
from rich.console import Console
from rich.live import Live
from rich.text import Text

from exchange.server.embedded import EmbeddedPostgres
from exchange.tools.demo_figures import (
    ExchangeFigures,
    Scrape,
    SellerFigures,
    buyer_rows,
    findings,
)
from exchange.tools.demo_market import (
    ADMIN_TOKEN,
    FIXED_BUYER,
    PII_FIELDS,
    TMAX_MS,
    buyer_specs,
    demo_config,
)
from exchange.tools.demo_processes import (
    Child,
    CpuReading,
    cores_between,
    postmaster_pid,
    quiet_runtime_dir,
    read_cpu,
)
from exchange.tools.demo_screen import (
    FIXED_PRICE,
    AuctionRow,
    Snapshot,
    buyer_lines,
    buyer_table,
    plain_line,
    screen,
    summary_lines,
    try_commands,
)

__all__ = ["PII_FIELDS", "buyer_specs", "demo_config", "run_demo"]

WINDOW_S = 10  # the "last 10 s" figures
TICK_S = 1.0
RECENT_AUCTIONS = 6
STORIES_PER_TICK = RECENT_AUCTIONS
READY_TIMEOUT_S = 90.0
DEMO_DATABASE = "lead_exchange_demo"


class DemoError(Exception):
    """A part of the demo did not start or died; the message says which and why."""


def start_database(embedded: EmbeddedPostgres) -> str:
    """Start the embedded PostgreSQL, without platformdirs' RuntimeDirWarning on a
    machine with no XDG_RUNTIME_DIR (see ``quiet_runtime_dir``)."""
    with quiet_runtime_dir():
        return embedded.start()


class Observer:
    """The demo's running account of the exchange's scrapes, the sellers' reports, the
    CPU of its processes and the last auctions."""

    def __init__(self, formats: Mapping[str, str]) -> None:
        self.formats = formats
        self.first_scrape: Scrape | None = None
        self.scrapes: deque[Scrape] = deque(maxlen=WINDOW_S + 1)
        self.reports: deque[dict[str, Any]] = deque(maxlen=WINDOW_S)
        self.sellers_total = SellerFigures()
        self.first_cpu: CpuReading | None = None
        self.cpu: deque[CpuReading] = deque(maxlen=WINDOW_S + 1)
        self.recent: deque[AuctionRow] = deque(maxlen=RECENT_AUCTIONS)
        self.stories: dict[str, Mapping[str, Any]] = {}
        self.example_ping_id: str | None = None
        self.final_report = asyncio.Event()

    def add_report(self, report: dict[str, Any]) -> None:
        self.reports.append(report)
        self.sellers_total.add(report)
        for item in report.get("recent") or []:
            row = AuctionRow.from_report(item)
            self.recent.append(row)
            if self.example_ping_id is None and row.ping_id and row.post == "sold":
                self.example_ping_id = row.ping_id
        if report.get("final"):
            self.final_report.set()

    def add_scrape(self, scrape: Scrape) -> None:
        if self.first_scrape is None:
            self.first_scrape = scrape
        self.scrapes.append(scrape)

    def add_cpu(self, reading: CpuReading | None) -> None:
        if reading is None:
            return
        if self.first_cpu is None:
            self.first_cpu = reading
        self.cpu.append(reading)

    def wanted_stories(self) -> list[str]:
        return [
            row.ping_id
            for row in reversed(self.recent)
            if row.ping_id and row.ping_id not in self.stories
        ][:STORIES_PER_TICK]

    def snapshot(self, url: str, rate: float, elapsed_s: float, data_dir: Path) -> Snapshot:
        last = self.scrapes[-1] if self.scrapes else None
        window_first = self.scrapes[0] if len(self.scrapes) > 1 else None
        exchange_window = ExchangeFigures.between(window_first, last) if last else None
        exchange_total = ExchangeFigures.between(self.first_scrape, last) if last else None
        sellers_window = SellerFigures.of(self.reports)
        cores_window = cores_between(self.cpu[0], self.cpu[-1]) if len(self.cpu) > 1 else {}
        cores_total = (
            cores_between(self.first_cpu, self.cpu[-1])
            if self.first_cpu is not None and self.cpu
            else {}
        )
        cpus = self.cpu[-1].cpus if self.cpu else 0  # 0: no CPU figures here
        recent = [
            replace(row, story=self.stories[row.ping_id]) if row.ping_id in self.stories else row
            for row in self.recent
        ]
        return Snapshot(
            url=url,
            rate=rate,
            buyer_count=len(self.formats) - 1,
            data_dir=str(data_dir),
            admin_token=ADMIN_TOKEN,
            elapsed_s=elapsed_s,
            tmax_ms=exchange_total.tmax_ms if exchange_total else float(TMAX_MS),
            exchange_window=exchange_window,
            exchange_total=exchange_total,
            sellers_window=sellers_window,
            sellers_total=self.sellers_total,
            cores_window=cores_window,
            cores_total=cores_total,
            cpus=cpus,
            findings_window=findings(cores_window, cpus, sellers_window, exchange_window),
            findings_total=findings(cores_total, cpus, self.sellers_total, exchange_total),
            buyers=buyer_rows(self.first_scrape, last, self.formats) if last else [],
            recent=recent,
            example_ping_id=self.example_ping_id,
        )


# -- views --------------------------------------------------------------------------------------


class PlainView:
    """One line a second, for logs and pipes."""

    def __init__(self) -> None:
        self._tried = False
        self._limits: tuple[str, ...] = ()

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def say(self, line: str) -> None:
        print(line, flush=True)

    def show(self, snap: Snapshot) -> None:
        if not snap.sellers_total.seconds:
            return  # nothing sent yet
        if not self._tried and snap.example_ping_id:
            self._tried = True
            for command in try_commands(snap):
                self.say(f"try: {command}")
        print(plain_line(snap), flush=True)
        limits = tuple(f.text for f in snap.findings_window if f.limit)
        if limits != self._limits:
            self._limits = limits
            for text in limits or ("none: nothing here is saturated.",):
                self.say(f"limit: {text}")

    def summary(self, snap: Snapshot) -> None:
        print(
            "\n".join(
                [
                    "",
                    *summary_lines(snap),
                    "buyers, as the exchange counted them:",
                    *buyer_lines(snap),
                ]
            ),
            flush=True,
        )


class LiveView:
    """The full-screen view; the summary goes to the normal screen after it."""

    def __init__(self) -> None:
        self.console = Console()
        self.live = Live(
            Text("starting…"),
            console=self.console,
            screen=True,
            refresh_per_second=1,
            redirect_stderr=False,
        )

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.live.stop()

    def say(self, line: str) -> None:
        self.console.print(line, highlight=False)

    def show(self, snap: Snapshot) -> None:
        self.live.update(screen(snap, self.console.width))

    def summary(self, snap: Snapshot) -> None:
        for line in summary_lines(snap):
            self.console.print(line, highlight=False)
        self.console.print(buyer_table(snap, title="buyers, as the exchange counted them"))


# -- the run ------------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _wait_ready(http: aiohttp.ClientSession, url: str, exchange: Child) -> None:
    give_up = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < give_up:
        if not exchange.running():
            raise DemoError(f"the exchange exited at start:\n{exchange.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise DemoError(
        f"the exchange was not ready after {READY_TIMEOUT_S:.0f} s:\n{exchange.log_tail()}"
    )


async def _read_reports(sellers: Child, observer: Observer) -> None:
    while line := await sellers.read_line():
        with contextlib.suppress(orjson.JSONDecodeError):
            observer.add_report(orjson.loads(line))
    observer.final_report.set()


async def _scrape(http: aiohttp.ClientSession, url: str) -> Scrape | None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=3)) as r:
            if r.status == 200:
                return Scrape.parse(await r.text(), time.monotonic())
    return None


async def _fetch_stories(http: aiohttp.ClientSession, url: str, observer: Observer) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for ping_id in observer.wanted_stories():
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            async with http.get(
                f"{url}/v1/auctions/{ping_id}",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=2),
            ) as r:
                if r.status == 200:  # 404: not in the ledger yet; asked again next second
                    observer.stories[ping_id] = orjson.loads(await r.read())


class Demo:
    """One run: its children, its observer, its view."""

    def __init__(self, args: argparse.Namespace, data_dir: Path, database_url: str) -> None:
        self.args = args
        self.data_dir = data_dir
        self.database_url = database_url
        self.url = f"http://127.0.0.1:{args.port}"
        self.children: list[Child] = []
        specs = buyer_specs(args.buyers)
        self.observer = Observer(
            {**{s.buyer_id: s.dialect.format for s in specs}, FIXED_BUYER: FIXED_PRICE}
        )

    async def _start(self, name: str, command: list[str], pipe_stdout: bool = False) -> Child:
        child = await Child.start(
            name, command, self.data_dir / f"demo-{name}.log", pipe_stdout=pipe_stdout
        )
        self.children.append(child)
        return child

    async def stop_children(self) -> None:
        for child in reversed(self.children):
            await child.stop()

    def _cpu(self, roots: Mapping[str, Child | None]) -> CpuReading | None:
        pids = {name: child.pid if child else None for name, child in roots.items()}
        pids["database"] = postmaster_pid(self.data_dir / "pg")
        return read_cpu(pids, time.monotonic)

    async def run(self, stop: asyncio.Event, view: PlainView | LiveView) -> Snapshot:
        args, python = self.args, sys.executable
        buyers = await self._start(
            "buyers",
            [python, "-m", "exchange.tools.demo_buyers", "--buyers", str(args.buyers)],
            pipe_stdout=True,
        )
        line = await asyncio.wait_for(buyers.read_line(), READY_TIMEOUT_S)
        if not line:
            raise DemoError(f"the simulated buyers did not start:\n{buyers.log_tail()}")
        config = self.data_dir / "demo.yaml"
        config.write_text(orjson.loads(line)["config"])
        exchange = await self._start(
            "exchange",
            [
                python,
                "-m",
                "exchange",
                "serve",
                "--config",
                str(config),
                "--port",
                str(args.port),
                "--database-url",
                self.database_url,
                "--log-level",
                "warning",
            ],
        )
        async with aiohttp.ClientSession() as http:
            await _wait_ready(http, self.url, exchange)
            # The first reading before the first lead: "since start" covers every one.
            await self._tick(http, {"exchange": exchange, "buyers": buyers, "sellers": None})
            sellers = await self._start(
                "sellers",
                [
                    python,
                    "-m",
                    "exchange.tools.demo_sellers",
                    "--url",
                    self.url,
                    "--rate",
                    str(args.rate),
                ],
                pipe_stdout=True,
            )
            roots: dict[str, Child | None] = {
                "exchange": exchange,
                "buyers": buyers,
                "sellers": sellers,
            }
            reader = asyncio.create_task(_read_reports(sellers, self.observer))
            started = time.monotonic()
            if args.duration:
                asyncio.get_running_loop().call_later(args.duration, stop.set)
            with view:
                while not stop.is_set():
                    await self._tick(http, roots)
                    view.show(self._snapshot(started))
                    dead = next((c for c in self.children if not c.running()), None)
                    if dead is not None:
                        raise DemoError(
                            f"the demo's {dead.name} process exited:\n{dead.log_tail()}"
                        )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), TICK_S)
                sellers.terminate()  # they finish the leads under way and report them
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.observer.final_report.wait(), TMAX_MS / 1000 + 8)
                await self._tick(http, roots)
                final = self._snapshot(started)
            reader.cancel()
        return final

    async def _tick(self, http: aiohttp.ClientSession, roots: Mapping[str, Child | None]) -> None:
        scrape = await _scrape(http, self.url)
        if scrape is not None:
            self.observer.add_scrape(scrape)
        self.observer.add_cpu(self._cpu(roots))
        await _fetch_stories(http, self.url, self.observer)

    def _snapshot(self, started: float) -> Snapshot:
        return self.observer.snapshot(
            self.url, self.args.rate, time.monotonic() - started, self.data_dir
        )


def _start_database(args: argparse.Namespace) -> tuple[Path, EmbeddedPostgres, str]:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    embedded = EmbeddedPostgres(data_dir)
    return data_dir, embedded, start_database(embedded)


async def fresh_database(server_url: str, name: str = DEMO_DATABASE) -> str:
    """The URL of database ``name`` on the embedded server, dropped and created anew.

    Each run starts on an empty ledger: once its ledger holds a version of the buyers and
    sellers, the exchange puts that in force over its YAML's, while each demo serves its
    buyers on new ports; an old ledger would also carry the last run's spent caps and seen
    leads (duplicates) into this one. The last run's ledger stays until the next start."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def run_demo(args: argparse.Namespace) -> int:
    plain = bool(getattr(args, "plain", False)) or not sys.stdout.isatty()
    view: PlainView | LiveView = PlainView() if plain else LiveView()
    if not _port_free(args.port):
        print(f"demo: port {args.port} is in use; pick another with --port", file=sys.stderr)
        return 2
    view.say(
        f"starting the embedded PostgreSQL in {args.data_dir}, {args.buyers} simulated buyers "
        f"and the exchange on http://127.0.0.1:{args.port} ..."
    )
    data_dir, embedded, server_url = _start_database(args)
    try:
        database_url = await fresh_database(server_url)
    except BaseException:
        embedded.stop()
        raise
    demo = Demo(args, data_dir, database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    try:
        final = await demo.run(stop, view)
    except DemoError as problem:
        print(f"demo: {problem}", file=sys.stderr)
        return 1
    finally:
        await demo.stop_children()
        embedded.stop()
    view.summary(final)
    view.say(
        "the ledger, the config (demo.yaml) and the processes' logs (demo-*.log) stay "
        f"in {data_dir}"
    )
    return 0
