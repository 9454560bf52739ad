"""A real Prometheus scraping a real exchange under simulated traffic: every dashboard
query and every alert rule must parse and return data, and promtool must accept the
rules, the compose scrape config and the exchange's /metrics.

Prometheus is Debian's package, run as a subprocess on 127.0.0.1 with its own data
directory, scraping every second. `.ci/install-prometheus.sh` installs it; these tests
skip only where it cannot be installed.

The exchange runs in a thread with its own event loop, so it keeps answering scrapes
whatever the test's own loop is doing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import yaml

from exchange.config import parse_config
from exchange.core.config import LoadedConfig
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    OTHER_SELLER_KEY,
    PING_LEAD,
    Exchange,
    config_text,
    realtime_buyer,
    running_exchange,
    with_database,
)
from tests.telemetry.test_dashboards import (
    ALERTS,
    REPO,
    alert_rules,
    dashboard_files,
    label_variables,
    load_dashboard,
    panel_queries,
    substitute_variables,
)

T = TypeVar("T")

PULL_KEY = "steady-pool-key-0123456789"  # the buyer "steady" pulls from the pool too
SUPPRESSED_PHONE = "(415) 555-0199"

INSTALL_SCRIPT = REPO / ".ci" / "install-prometheus.sh"
COMPOSE_PROMETHEUS = REPO / "config" / "prometheus" / "prometheus.yml"
SCRAPE_INTERVAL_S = 1.0
# What Grafana would put in place of its variables for a short, fresh window.
VARIABLES = {
    "__rate_interval": "10s",
    "__interval": "1s",
    "__range": "1m",
    "vertical": ".*",
    "buyer": ".*",
    "seller": ".*",
    "tmax_ms": "1000",
}
PING_TMAX_FOR_STALL_MS = 100
# Enough for ExchangeDeadlineMisses' ">= 3 misses in 5 m" guard. The exchange creates
# the series at the first miss, so Prometheus counts the increase from the second on.
STALLED_AUCTIONS = 4
ZIPS = {"CA": "90210", "TX": "75001", "NY": "10001"}


def _binaries() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if (prometheus is None or promtool is None) and os.environ.get("CI"):
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=False, timeout=900)
        prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        pytest.skip(
            "Prometheus is not installed and could not be installed here: run "
            "`bash .ci/install-prometheus.sh` (Debian's prometheus package) to run these tests"
        )
    return prometheus, promtool


@pytest.fixture(scope="module")
def promtool() -> str:
    return _binaries()[1]


# ---------------------------------------------------------------------------------------
# The exchange, in a thread of its own


class ExchangeThread(threading.Thread):
    """Runs simulated buyers and an exchange (tests.support.harness) on a private event loop."""

    def __init__(self, server_dsn: str, specs: list[SimulatedBuyerSpec]) -> None:
        super().__init__(name="live-exchange", daemon=True)
        self._server_dsn = server_dsn
        self._specs = specs
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.exchange: Exchange | None = None
        self.sim: BuyerSimulator | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # raised in the test by start_and_wait or stop
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        name = f"t_{uuid.uuid4().hex[:12]}"
        await self._admin(f'CREATE DATABASE "{name}"')
        try:
            async with BuyerSimulator(self._specs) as sim:
                config = live_config(sim)
                async with running_exchange(config, with_database(self._server_dsn, name)) as ex:
                    self.exchange, self.sim = ex, sim
                    self._ready.set()
                    await self._stopping.wait()
        finally:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self._server_dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def start_and_wait(self, timeout_s: float = 30.0) -> None:
        self.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the exchange did not start")
        if self._failure is not None:
            raise self._failure

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        assert self.loop is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout_s)

    def stop(self) -> None:
        if self.loop is not None and self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)
        self.join(30)
        if self._failure is not None:
            raise self._failure


def buyer_specs() -> list[SimulatedBuyerSpec]:
    """A cast that gives every metric something to count."""

    def spec(buyer_id: str, **kw: Any) -> SimulatedBuyerSpec:
        return SimulatedBuyerSpec(buyer_id, secret=f"{buyer_id}-secret".encode(), seed=7, **kw)

    return [
        spec("steady", bid_cents=(1500, 3000), latency_ms=(1, 8)),
        spec("picky", bid_cents=(2000, 4000), no_bid_rate=0.2, reject_rate=0.5),
        spec("hanging", hang_rate=1.0),
        spec("broken", error_rate=1.0),
        spec("slow-poster", bid_cents=(4500, 5000), post_hang_rate=1.0),
        spec("cheap", bid_cents=(100, 150)),
        spec("capped", bid_cents=(1000, 1200)),
        spec("night-shift"),
        spec("fixed"),
    ]


def buyer_configs(sim: BuyerSimulator) -> list[dict[str, Any]]:
    closed_hour = (datetime.now(UTC) + timedelta(hours=12)).hour
    ca_only = {"state": {"in": ["CA"]}}
    south_west = {"state": {"in": ["CA", "TX"]}}
    fixed = realtime_buyer(sim, "fixed", price=3.0, filters=ca_only)
    del fixed["ping_url"]
    return [
        realtime_buyer(sim, "steady", filters=ca_only),
        realtime_buyer(sim, "picky", filters=south_west),
        realtime_buyer(sim, "hanging", timeout_ms=50),
        realtime_buyer(sim, "broken"),
        realtime_buyer(sim, "slow-poster", post_timeout_ms=100, filters=south_west),
        realtime_buyer(sim, "cheap"),
        realtime_buyer(sim, "capped", caps={"hourly": 2}, filters=south_west),
        realtime_buyer(
            sim,
            "night-shift",
            schedule={
                "timezone": "UTC",
                "start": f"{closed_hour:02d}:00",
                "end": f"{closed_hour:02d}:01",
            },
        ),
        fixed,
    ]


def live_config(sim: BuyerSimulator) -> LoadedConfig:
    """Every feature with series of its own switched on: the lead pool (with a buyer that
    may pull from it), lead scores and a suppression list."""
    exchange = {
        "pii_key": base64.b64encode(bytes(range(32))).decode(),
        "suppression_hash_key": "live-suppression-key-0123456789",
    }
    doc = yaml.safe_load(config_text(buyer_configs(sim), exchange=exchange))
    doc["verticals"]["auto_insurance"].update(
        pool={"enabled": True, "visibility": "cherry_pick", "start_price": 10.0,
              "floor_price": 1.0, "decay_per_hour": 1.0, "max_age_hours": 1},
        score=[{"field": "credit_rating", "in": ["excellent", "good"], "points": 60}],
        suppress=["dnc"],
    )  # fmt: skip
    doc["sellers"][0]["pool"] = True
    doc["buyers"][0]["api_key"] = PULL_KEY
    return parse_config(yaml.safe_dump(doc), "live.yaml", env={})


async def drive_traffic(
    ex: Exchange, sim: BuyerSimulator, rounds: int, pause_s: float, stalls: int
) -> int:
    """Pings and posts from three states (TX leads lose the CA-only buyers and often go
    unsold; no buyer that bids above the floor takes NY), some API errors, and a few
    auctions that miss their deadline. Returns the number of pings answered."""
    serial = 0

    async def lead_cycle(state: str) -> None:
        nonlocal serial
        serial += 1
        lead = {**PING_LEAD, "state": state, "zip": ZIPS[state]}
        answer = await ex.ping(lead)
        if answer["status"] == "bid":
            full = {
                **FULL_LEAD,
                **lead,
                "email": f"lead{serial}@example.com",
                "phone": f"(415) 555-{2000 + serial:04d}",
            }
            await ex.post(answer["ping_id"], full)

    status, _, _ = await ex.call("POST", "/v1/suppression/dnc", [SUPPRESSED_PHONE], key=ADMIN_TOKEN)
    assert status == 200
    pings = 0
    for number in range(rounds):
        states = ("CA", "CA", "CA", "TX", "TX", "NY")
        await asyncio.gather(*(lead_cycle(state) for state in states))
        pings += len(states)
        await ex.call(
            "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD}, key="not-a-key"
        )
        await ex.call(
            "POST",
            "/v1/ping",
            {"vertical": "auto_insurance", "lead": PING_LEAD},
            key=OTHER_SELLER_KEY,
        )
        await ex.call("POST", "/v1/post", {"ping_id": str(uuid.uuid4()), "lead": FULL_LEAD})
        await _pool_and_suppression(ex, number)
        if number % 2 == 1 and number < 2 * stalls:
            await _stall_during_auction(ex, sim)
            pings += 1
        await asyncio.sleep(pause_s)
    return pings


async def _pool_and_suppression(ex: Exchange, number: int) -> None:
    """A NY lead no buyer takes goes to the pool and the pull buyer claims it; a lead on
    the suppression list is refused."""
    ny = {**FULL_LEAD, "state": "NY", "zip": ZIPS["NY"], "phone": f"(415) 555-{3000 + number}"}
    await ex.call("POST", "/v1/leads", {"vertical": "auto_insurance", "lead": ny})
    status, listed, _ = await ex.call("GET", "/v1/pool?vertical=auto_insurance", key=PULL_KEY)
    for offer in listed.get("offers", [])[:1] if status == 200 else []:
        await ex.call("POST", f"/v1/pool/{offer['lead_id']}/claim", key=PULL_KEY)
    suppressed = {**FULL_LEAD, "phone": SUPPRESSED_PHONE}
    await ex.call("POST", "/v1/leads", {"vertical": "auto_insurance", "lead": suppressed})


async def _stall_during_auction(ex: Exchange, sim: BuyerSimulator) -> None:
    """Block the event loop while an auction waits on its buyers, as a CPU-starved or
    stalled process would: the answer comes after tmax, a deadline miss."""
    asked = sim.counters("hanging").pings
    ping = asyncio.ensure_future(ex.ping(tmax_ms=PING_TMAX_FOR_STALL_MS))
    while sim.counters("hanging").pings == asked:  # noqa: ASYNC110 - a counter, no event
        await asyncio.sleep(0.001)
    time.sleep(PING_TMAX_FOR_STALL_MS * 3 / 1000)  # noqa: ASYNC251 - the stall itself
    await ping


# ---------------------------------------------------------------------------------------
# Prometheus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    url: str

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:  # 400/422: a query that does not parse
            body = json.load(error)
        return body

    def query(self, promql: str) -> Any:
        return self.get("/api/v1/query", query=promql)

    def value(self, promql: str) -> float:
        result = self.query(promql)["data"]["result"]
        return float(result[0]["value"][1]) if result else math.nan


def _start_prometheus(
    binary: str, workdir: Path, port: int, exchange_url: str
) -> subprocess.Popen[bytes]:
    target = urllib.parse.urlsplit(exchange_url).netloc
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S:g}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL_S:g}s",
            "evaluation_interval": "1s",
        },
        "rule_files": [str(ALERTS)],
        # The job name of the compose config, which the alert rules refer to.
        "scrape_configs": [
            {"job_name": _compose_job_name(), "static_configs": [{"targets": [target]}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    with open(workdir / "prometheus.log", "wb") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _compose_job_name() -> str:
    config = yaml.safe_load(COMPOSE_PROMETHEUS.read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert len(jobs) == 1
    return str(jobs[0])


def _wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class LiveStack:
    prometheus: Prometheus
    exchange: ExchangeThread
    metrics_text: str


@pytest.fixture(scope="module")
def live(server_dsn: str) -> Iterator[LiveStack]:
    binary, _ = _binaries()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="prometheus-live-"))
    exchange = ExchangeThread(server_dsn, buyer_specs())
    process: subprocess.Popen[bytes] | None = None
    try:
        exchange.start_and_wait()
        assert exchange.exchange is not None and exchange.sim is not None
        port = _free_port()
        process = _start_prometheus(binary, workdir, port, exchange.exchange.url)
        prometheus = Prometheus(f"http://127.0.0.1:{port}")
        _wait_until(
            lambda: _ready(prometheus, process, workdir / "prometheus.log"),
            20,
            "Prometheus to be ready",
        )
        _wait_until(lambda: prometheus.query("up")["data"]["result"], 10, "the first scrape")
        # One stall first, seen by Prometheus, so that the later ones count as increases.
        exchange.call(_stall_during_auction(exchange.exchange, exchange.sim))
        _wait_until(
            lambda: prometheus.value("sum(exchange_deadline_misses_total)") >= 1,
            10,
            "Prometheus to see the first deadline miss",
        )
        pings = 1 + exchange.call(
            drive_traffic(exchange.exchange, exchange.sim, 10, 0.4, STALLED_AUCTIONS - 1)
        )
        # Every ping counted by Prometheus, and one more scrape for rate() windows.
        _wait_until(
            lambda: prometheus.value("sum(exchange_pings_total)") >= pings,
            15,
            "Prometheus to scrape the traffic",
        )
        time.sleep(SCRAPE_INTERVAL_S * 1.5)
        metrics_text = exchange.call(_scrape(exchange.exchange))
        yield LiveStack(prometheus, exchange, metrics_text)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        exchange.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        assert time.monotonic() - started < 60, "the live Prometheus tests must stay under 60 s"


def _ready(prometheus: Prometheus, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"prometheus exited with {process.returncode}: {log.read_text()}")
    try:
        with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def _scrape(ex: Exchange) -> str:
    status, body, _ = await ex.call("GET", "/metrics", key=None)
    assert status == 200
    return body.decode() if isinstance(body, bytes) else str(body)


def _finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = [float(r["value"][1]) for r in result]
    return [v for v in values if math.isfinite(v)]


# ---------------------------------------------------------------------------------------
# Tests


def test_every_dashboard_query_returns_data_from_a_live_exchange(live: LiveStack) -> None:
    failures = []
    queries = panel_queries()
    assert queries
    for query in queries:
        promql = substitute_variables(query.expr, VARIABLES)
        answer = live.prometheus.query(promql)
        if answer["status"] != "success":
            failures.append(f"{query}: does not run: {answer.get('error')}")
            continue
        if not _finite_values(answer["data"]["result"]):
            failures.append(f"{query}: no data: {promql}")
    assert not failures, "\n".join(failures)


def test_every_dashboard_variable_lists_values(live: LiveStack) -> None:
    for path in dashboard_files():
        for name, label, metric in label_variables(load_dashboard(path)):
            answer = live.prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
            assert answer["status"] == "success" and answer["data"], f"{path.name} / ${name}"


def test_every_alert_rule_parses_and_evaluates_cleanly(live: LiveStack) -> None:
    for rule in alert_rules():
        answer = live.prometheus.query(rule["expr"])
        assert answer["status"] == "success", f"{rule['alert']}: {answer.get('error')}"

    def evaluated() -> list[dict[str, Any]]:
        groups = live.prometheus.get("/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(r["lastEvaluation"] > "0001-01-01T00:00:00Z" for r in rules) else []

    _wait_until(evaluated, 10, "every rule to be evaluated")
    loaded = evaluated()
    assert {r["name"] for r in loaded} == {r["alert"] for r in alert_rules()}
    unhealthy = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
    assert not unhealthy


def test_buyer_timeout_alert_singles_out_the_buyer_that_hangs(live: LiveStack) -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "ExchangeBuyerTimingOut"]
    result = live.prometheus.query(rule["expr"])["data"]["result"]
    assert {series["metric"]["buyer"] for series in result} == {"hanging"}

    def pending() -> bool:
        alerts = live.prometheus.get("/api/v1/alerts")["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "ExchangeBuyerTimingOut"
            and a["labels"]["buyer"] == "hanging"
            for a in alerts
        )

    _wait_until(pending, 10, "ExchangeBuyerTimingOut to be pending for the hanging buyer")


def test_deadline_miss_alert_sees_the_stalled_auctions(live: LiveStack) -> None:
    assert live.prometheus.value("sum(exchange_deadline_misses_total)") >= STALLED_AUCTIONS
    (rule,) = [r for r in alert_rules() if r["alert"] == "ExchangeDeadlineMisses"]
    result = live.prometheus.query(rule["expr"])["data"]["result"]
    assert [series["metric"] for series in result] == [{"vertical": "auto_insurance"}]


def test_database_alerts_stay_quiet_while_the_database_is_up(live: LiveStack) -> None:
    for name in ("ExchangeDatabaseDown", "ExchangeDown"):
        (rule,) = [r for r in alert_rules() if r["alert"] == name]
        answer = live.prometheus.query(rule["expr"])
        assert answer["status"] == "success" and answer["data"]["result"] == [], name
    assert live.prometheus.value("min(exchange_db_up)") == 1.0


def test_promtool_accepts_the_exchange_metrics(live: LiveStack, promtool: str) -> None:
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=live.metrics_text.encode(),
        capture_output=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_promtool_accepts_the_alert_rules(promtool: str) -> None:
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_promtool_accepts_the_compose_prometheus_config(promtool: str) -> None:
    checked = subprocess.run(
        [promtool, "check", "config", str(COMPOSE_PROMETHEUS)], capture_output=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_buyer_connections_are_mostly_reused_and_the_hanging_buyers_are_reopened(
    live: LiveStack,
) -> None:
    opened = live.prometheus.value('sum(exchange_buyer_connections_total{event="opened"})')
    reused = live.prometheus.value('sum(exchange_buyer_connections_total{event="reused"})')
    # Every request to the hanging buyer times out and its connection is dropped after
    # the drain, so its next request opens another; the other buyers keep theirs alive
    # once each has as many as the six auctions run at once need.
    hanging = live.exchange.sim.counters("hanging").pings
    assert hanging >= 10
    assert opened >= hanging / 2
    assert reused > opened
