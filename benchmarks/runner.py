"""Runs a plan: buyers, the servers under test, load, and every measurement, on one
machine; returns the results as one JSON-ready dict.

For each buyer count N: one lean buyer server (benchmarks.buyer_server) with N buyers;
then for each target, in each round: probe its saturation (closed loop at rising
concurrency), run open-loop load at 50% and 80% of it, optionally at the primary
exchange's 50% rate (for latency compared at the same load) and the deadline run (buyers
hanging, answering late, failing, rejecting posts). CPU is read from /proc for
the server, its database, the buyers and the load generator over each measured window.

Every server at one N is started once and measured in ``plan.rounds`` alternating rounds
(A B A B ...); the report gives each figure's median with its lowest and highest.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import psutil

from benchmarks import profile as profiling
from benchmarks.plans import (
    CEILING,
    DEADLINE_LOADS,
    PRIMARY,
    REFUSALS_METRIC,
    TARGETS,
    Plan,
    Target,
)
from benchmarks.processes import (
    HarnessError,
    ProcessGroup,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    tree,
    wait_http_ok,
)
from benchmarks.scenario import (
    TMAX_MS,
    behaviours_json,
    exchange_config,
    faulty_behaviours,
    normal_behaviours,
)

Say = Callable[[str], None]


# -- the database -----------------------------------------------------------------------------


class Database:
    """The exchange's PostgreSQL: the embedded pgserver in a temp dir (as `serve` starts it
    without --database-url), or a given server. One fresh database per exchange run."""

    def __init__(self, workdir: Path, url: str | None) -> None:
        self._url = url
        self._embedded: Any = None
        self._workdir = workdir
        self.postmaster_pid: int | None = None

    def start(self) -> None:
        if self._url:
            return
        from exchange.server.embedded import EmbeddedPostgres
        from exchange.tools.demo_processes import quiet_runtime_dir

        parent = self._workdir / "pg"
        parent.mkdir()
        # pgserver run as root hands the cluster to a `pgserver` user, which must reach it.
        for path in (self._workdir, parent):
            path.chmod(0o755)
        self._embedded = EmbeddedPostgres(parent)
        with quiet_runtime_dir():
            self._url = self._embedded.start()
        pid_file = parent / "pg" / "postmaster.pid"
        if pid_file.exists():
            self.postmaster_pid = int(pid_file.read_text().split()[0])

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def create(self, name: str) -> str:
        import asyncpg

        assert self._url is not None

        async def create() -> None:
            admin = await asyncpg.connect(self._url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()

        asyncio.run(create())
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self._url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))

    def processes(self) -> list[psutil.Process]:
        return tree(self.postmaster_pid) if self.postmaster_pid else []


# -- the buyers ---------------------------------------------------------------------------------


class BuyerFleet:
    """benchmarks.buyer_server in its own process, driven over its stdin/stdout."""

    def __init__(self, group: ProcessGroup, workdir: Path, count: int) -> None:
        scenario = workdir / f"buyers-{count}.json"
        modes = {
            "normal": behaviours_json(normal_behaviours(count)),
            "faulty": behaviours_json(faulty_behaviours(count)),
        }
        scenario.write_bytes(orjson.dumps({"modes": modes}))
        self.count = count
        self._group = group
        self.process = group.start(
            [sys.executable, "-m", "benchmarks.buyer_server", "--scenario", str(scenario)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ports = self._read()
        self.ping_ports: list[int] = ports["ping_ports"]
        self.post_ports: list[int] = ports["post_ports"]
        self.ping_urls = [f"http://127.0.0.1:{p}/ping" for p in self.ping_ports]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise HarnessError(f"buyer server exited with {self.process.poll()}")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    def command(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._read()

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def set_mode(self, mode: str) -> None:
        self.command(f"mode {mode}")

    def stop(self) -> None:
        self._group.stop(self.process)


class Buyers(Protocol):
    """What the runner needs of a set of loopback buyers."""

    count: int
    process: subprocess.Popen[Any]
    ping_urls: list[str]
    ping_ports: list[int]
    post_ports: list[int]

    def stats(self) -> dict[str, Any]: ...

    def set_mode(self, mode: str) -> None: ...

    def stop(self) -> None: ...


# -- the servers under test -------------------------------------------------------------------


@dataclass
class RunningServer:
    target: Target
    port: int
    process: subprocess.Popen[Any]
    log: Path

    def processes(self) -> list[psutil.Process]:
        return tree(self.process.pid)

    def worker_pid(self) -> int:
        """The process serving requests (for a single worker, the one we started)."""
        return self.process.pid


def _exchange_command() -> list[str]:
    script = Path(sys.executable).with_name("lead-exchange")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "exchange"]


def start_server(
    group: ProcessGroup,
    target: Target,
    fleet: Buyers,
    database: Database,
    workdir: Path,
    phase: str = "main",
) -> RunningServer:
    port = free_port()
    tag = f"{target.name}-n{fleet.count}-{phase}"
    log = workdir / f"{tag}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if target.kind == "exchange":
        config = workdir / f"{tag}.yaml"
        config.write_text(exchange_config(fleet.ping_ports, fleet.post_ports, target.transport))
        url = database.create(f"bench_{tag.replace('-', '_')}")
        command = [
            *_exchange_command(), "serve", "--config", str(config), "--port", str(port),
            "--database-url", url, "--workers", str(target.workers), "--shutdown-timeout", "2",
        ]  # fmt: skip
        if target.workers > 1:
            metrics_dir = workdir / f"{tag}-metrics"
            metrics_dir.mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        ready_path = "/readyz"
    else:
        buyers = workdir / f"{tag}-buyers.json"
        buyers.write_bytes(orjson.dumps(fleet.ping_urls))
        command = [
            sys.executable, "-m", "benchmarks.baseline", "--client", target.client,
            "--port", str(port), "--buyers", str(buyers), "--tmax-ms", str(TMAX_MS),
        ]  # fmt: skip
        ready_path = "/healthz"
    with log.open("wb") as log_file:
        process = group.start(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(target, port, process, log)
    wait_http_ok(f"http://127.0.0.1:{port}{ready_path}", process, 60.0, log)
    if target.workers > 1:
        _wait_workers(server, target.workers)
    return server


def _wait_workers(server: RunningServer, workers: int) -> None:
    """`serve --workers N` answers as soon as one worker listens; wait for all N."""
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        listening = 0
        for process in server.processes()[1:]:
            try:
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == server.port
                       for c in process.net_connections("tcp")):  # fmt: skip
                    listening += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if listening >= workers:
            return
        time.sleep(0.1)
    raise HarnessError(f"{server.target.name}: fewer than {workers} workers listening")


# -- one load run -------------------------------------------------------------------------------


@dataclass
class Snapshot:
    at: float
    server_cpu: float
    db_cpu: float
    buyers_cpu: float
    loadgen_cpu: float
    machine_busy: float
    buyer_stats: dict[str, Any]


class Bench:
    """One benchmark run: its processes, its temp dir, its database."""

    def __init__(self, plan: Plan, workdir: Path, database: Database, say: Say) -> None:
        self.plan = plan
        self.workdir = workdir
        self.database = database
        self.say = say
        self.group = ProcessGroup()

    def snapshot(
        self, server: RunningServer, fleet: Buyers, loadgen: subprocess.Popen[Any]
    ) -> Snapshot:
        return Snapshot(
            at=time.perf_counter(),
            server_cpu=cpu_seconds(server.processes()),
            db_cpu=cpu_seconds(self.database.processes()) if server.target.kind == "exchange"
            else 0.0,
            buyers_cpu=cpu_seconds(tree(fleet.process.pid)),
            loadgen_cpu=cpu_seconds(tree(loadgen.pid)),
            machine_busy=machine_busy_seconds(),
            buyer_stats=fleet.stats(),
        )  # fmt: skip

    def load(self, server: RunningServer, fleet: Buyers, **options: Any) -> dict[str, Any]:
        """One load generator run against ``server``; its results plus what it cost."""
        options = {"port": server.port, "tmax_ms": TMAX_MS, **options}
        loadgen = self.group.start(
            [sys.executable, "-m", "benchmarks.loadgen", orjson.dumps(options).decode()],
            stdout=subprocess.PIPE,
            text=True,
        )
        go = done = None
        result: dict[str, Any] | None = None
        try:
            assert loadgen.stdout is not None
            for line in loadgen.stdout:
                line = line.strip()
                if line == "GO":
                    go = self.snapshot(server, fleet, loadgen)
                elif line == "DONE":
                    done = self.snapshot(server, fleet, loadgen)
                elif line.startswith("{"):
                    result = orjson.loads(line)
            loadgen.wait(30)
        finally:
            self.group.stop(loadgen)
        if result is None or go is None or done is None:
            raise HarnessError(f"load generator failed against {server.target.name}")
        if options.get("mode") != "probe":
            result["cost"] = _cost(go, done, result, fleet.count)
        if server.process.poll() is not None:
            raise HarnessError(f"{server.target.name} died under load")
        return result


def _cost(go: Snapshot, done: Snapshot, result: dict[str, Any], buyers: int) -> dict[str, Any]:
    elapsed = max(1e-9, done.at - go.at)
    pings = max(1, result["outcome"]["completed"])
    server_cpu = done.server_cpu - go.server_cpu
    ping_before, ping_after = go.buyer_stats["ping"], done.buyer_stats["ping"]
    requests = ping_after["requests"] - ping_before["requests"]
    connections = ping_after["connections"] - ping_before["connections"]
    return {
        "elapsed_s": round(elapsed, 3),
        "server_cpu_s": round(server_cpu, 3),
        "server_cores": round(server_cpu / elapsed, 3),
        "cpu_us_per_ping": round(server_cpu / pings * 1e6, 1),
        "cpu_us_per_ping_per_buyer": round(server_cpu / pings / buyers * 1e6, 1),
        "db_cpu_us_per_ping": round((done.db_cpu - go.db_cpu) / pings * 1e6, 1),
        "db_cores": round((done.db_cpu - go.db_cpu) / elapsed, 3),
        "buyers_cores": round((done.buyers_cpu - go.buyers_cpu) / elapsed, 3),
        "buyers_cpu_us_per_request": round(
            (done.buyers_cpu - go.buyers_cpu) / max(1, requests) * 1e6, 1
        ),
        "loadgen_cores": round((done.loadgen_cpu - go.loadgen_cpu) / elapsed, 3),
        "machine_busy_cores": round((done.machine_busy - go.machine_busy) / elapsed, 3),
        # Whatever else ran on the machine meanwhile (other users' jobs): noise to watch.
        "other_cores": round(
            (
                (done.machine_busy - go.machine_busy)
                - (done.server_cpu - go.server_cpu)
                - (done.db_cpu - go.db_cpu)
                - (done.buyers_cpu - go.buyers_cpu)
                - (done.loadgen_cpu - go.loadgen_cpu)
            )
            / elapsed,
            3,
        ),
        "buyer_requests": requests,
        "buyer_connections_opened": connections,
        "buyer_connection_reuse": round(max(0.0, 1 - connections / requests), 4)
        if requests
        else None,
        "buyer_new_connections_per_1k_requests": round(1000 * connections / max(1, requests), 2),
        "buyer_hangs": ping_after["hangs"] - ping_before["hangs"],
    }


# -- the plan ---------------------------------------------------------------------------------


PROBE_P99_LIMIT_MS = 150.0


def _probe(bench: Bench, server: RunningServer, fleet: Buyers) -> dict[str, Any]:
    plan = bench.plan
    return bench.load(
        server, fleet, mode="probe", probe_steps=list(plan.probe_steps),
        duration_s=plan.probe_step_s, warmup_s=plan.probe_settle_s, drain_s=1.0,
        probe_p99_limit_ms=PROBE_P99_LIMIT_MS,
    )  # fmt: skip


def _fixed(
    bench: Bench, server: RunningServer, fleet: Buyers, rate: float, **extra: Any
) -> dict[str, Any]:
    plan = bench.plan
    return bench.load(
        server, fleet, mode="open", rate=max(1.0, rate), duration_s=plan.run_s,
        warmup_s=plan.warmup_s, drain_s=TMAX_MS / 1000 + 1.5, **extra,
    )  # fmt: skip


def _measure_round(
    bench: Bench, server: RunningServer, fleet: Buyers, round_index: int
) -> dict[str, Any]:
    """One round of one server: probe, 80% (corrected down if it does not hold), 50%,
    and for the deadline servers the faulty-buyer runs; the profile in the first round."""
    plan, say = bench.plan, bench.say
    target = server.target
    entry: dict[str, Any] = {"round": round_index + 1}
    probe = _probe(bench, server, fleet)
    saturation = probe["saturation_per_s"]
    entry["probe"] = _brief_probe(probe)
    # A closed loop finds the throughput of the server's good moments; open-loop load
    # at 80% of it must hold too (p99 under the probe's limit, every answer a 200),
    # else the saturation is taken down a quarter and tried again (at most twice).
    entry["saturation_corrections"] = []
    for attempt in range(plan.saturation_corrections + 1):
        load80 = _fixed(bench, server, fleet, 0.8 * saturation)
        if _holds(load80) or attempt == plan.saturation_corrections:
            break
        entry["saturation_corrections"].append(round(saturation))
        saturation *= 0.75
    entry["saturation_per_s"] = saturation
    corrected = f" (probe said {probe['saturation_per_s']:.0f})" if saturation < probe[
        "saturation_per_s"
    ] else ""  # fmt: skip
    say(f"  {target.name:<22} N={fleet.count:<3} round {round_index + 1}/{plan.rounds}: "
        f"saturation {saturation:7.0f} pings/s{corrected}")  # fmt: skip
    before = _scrape(server) if target.kind == "exchange" else {}
    entry["load50"] = _fixed(bench, server, fleet, 0.5 * saturation)
    if target.kind == "exchange":
        # The exchange's own count of its buyer connections (the transport's stats),
        # beside the buyers'.
        after = _scrape(server)
        entry["load50"]["exchange_buyer_connections"] = {
            event: after.get(f"{_CONNECTIONS}:{event}", 0.0)
            - before.get(f"{_CONNECTIONS}:{event}", 0.0)
            for event in ("opened", "reused")
        }
    entry["load80"] = load80
    if fleet.count == plan.deadline_n and target.name in plan.deadline_targets:
        # At half the saturation found with every buyer well; the faulty mode costs
        # more per ping (posts, answers cut off at tmax, connections reopened), and
        # on a small machine that load can fill it, so a quarter is run as well.
        for key in plan.deadline_loads:
            entry[key] = _deadline_run(bench, server, fleet, DEADLINE_LOADS[key] * saturation)
    if (fleet.count == 10 and target.name == PRIMARY and plan.profile_s > 0
            and round_index == 0):  # fmt: skip
        entry["profile"] = _profile(bench, server, fleet, 0.8 * saturation)
    return entry


def _measure_count(bench: Bench, fleet: Buyers) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every server at one buyer count, in ``plan.rounds`` alternating rounds (A B A B
    ...): the servers are started once and kept running, each round measures each in
    turn, then the same-rate comparison runs in rounds too. Returns the servers'
    entries (one round each per round) and the same-rate result."""
    plan, say = bench.plan, bench.say
    names = list(dict.fromkeys([*plan.targets, *plan.same_rate_targets]))
    entries = {name: {"target": name, "label": TARGETS[name].label, "n": fleet.count,
                      "rounds": []} for name in plan.targets}  # fmt: skip
    servers: dict[str, RunningServer] = {}
    try:
        for name in names:
            started = time.monotonic()
            try:
                servers[name] = start_server(
                    bench.group, TARGETS[name], fleet, bench.database, bench.workdir
                )
            except HarnessError as problem:
                say(f"  {name}: FAILED to start: {problem}")
                if name in entries:
                    entries[name]["error"] = str(problem)
                continue
            if name in entries:
                entries[name]["startup_s"] = round(time.monotonic() - started, 2)
        for round_index in range(plan.rounds):
            for name in plan.targets:
                server = servers.get(name)
                if server is None:
                    continue
                try:
                    if server.process.poll() is not None:
                        raise HarnessError(f"{name} is gone (exit {server.process.returncode})")
                    entries[name]["rounds"].append(
                        _measure_round(bench, server, fleet, round_index)
                    )
                except HarnessError as problem:
                    say(f"  {name} round {round_index + 1}: FAILED: {problem}")
                    entries[name]["rounds"].append(
                        {"round": round_index + 1, "error": str(problem)}
                    )
        for entry in entries.values():
            _summarize(entry)
        primary = entries.get(PRIMARY, {})
        same: dict[str, Any] = {}
        if primary.get("saturation_per_s") and plan.same_rate_targets:
            try:
                same = _same_rate(bench, fleet, 0.5 * primary["saturation_per_s"], servers)
            except HarnessError as problem:
                say(f"  same-rate comparison FAILED: {problem}")
                same = {"n": fleet.count, "error": str(problem)}
    finally:
        for server in servers.values():
            bench.group.stop(server.process)
    return list(entries.values()), same


def _summarize(entry: dict[str, Any]) -> None:
    """The entry's median saturation (the rates of the later runs are taken from it);
    an entry none of whose rounds worked is an error."""
    good = [r for r in entry["rounds"] if "error" not in r]
    if good:
        entry["saturation_per_s"] = statistics.median(r["saturation_per_s"] for r in good)
    elif "error" not in entry:
        failed = [r["error"] for r in entry["rounds"]]
        entry["error"] = failed[0] if failed else "not measured"


def _holds(run: dict[str, Any]) -> bool:
    outcome = run["outcome"]
    return bool(
        run["latency_us"].get("p99", 0) / 1000 <= PROBE_P99_LIMIT_MS
        and run["unanswered"] == 0
        and outcome["errors"] == 0
        and outcome["ok"] == outcome["completed"]
    )


def _brief_probe(probe: dict[str, Any]) -> dict[str, Any]:
    """The probe's steps without their full per-step detail (the JSON stays small)."""
    return {
        "saturation_per_s": probe["saturation_per_s"],
        "saturation_concurrency": probe["saturation_concurrency"],
        "saturation_valid": probe["saturation_valid"],
        "steps": [
            {"concurrency": step["concurrency"], "achieved_per_s": round(step["achieved_per_s"]),
             "p99_us": step["latency_us"].get("p99"), "errors": step["outcome"]["errors"]}
            for step in probe["steps"]
        ],
    }  # fmt: skip


def _same_rate(
    bench: Bench, fleet: Buyers, rate: float, servers: dict[str, RunningServer]
) -> dict[str, Any]:
    """Every same-rate target at one rate (the primary's 50% load), in turns, once per
    round: the noise of other jobs on the machine then falls on all of them alike. Each
    round's percentiles and CPU are kept; the report takes their medians."""
    plan = bench.plan
    running = [servers[name] for name in plan.same_rate_targets if name in servers]
    out: dict[str, Any] = {"n": fleet.count, "rate_per_s": rate, "targets": {}}
    for server in running:
        out["targets"][server.target.name] = {"rounds": []}
    for _ in range(plan.rounds):
        for server in running:
            run = _fixed(bench, server, fleet, rate)
            out["targets"][server.target.name]["rounds"].append({
                "latency_us": {key: run["latency_us"].get(key)
                               for key in ("p50", "p90", "p99", "p99.9", "max")},
                "cpu_us_per_ping": run["cost"]["cpu_us_per_ping"],
                "db_cpu_us_per_ping": run["cost"]["db_cpu_us_per_ping"],
                "other_cores": run["cost"]["other_cores"],
            })  # fmt: skip
    bench.say(
        f"  same rate {rate:.0f}/s, {plan.rounds} rounds: "
        + ", ".join(
            f"{name} p99 "
            + "/".join(f"{r['latency_us']['p99'] / 1000:.1f}" for r in row["rounds"])
            + " ms"
            for name, row in out["targets"].items()
        )
    )
    return out


def _deadline_run(
    bench: Bench, server: RunningServer, fleet: Buyers, rate: float
) -> dict[str, Any]:
    """Fixed-rate load with the buyers in their faulty mode. For the exchange, its own
    count of late answers (exchange_deadline_misses_total: ping received to answer
    ready) is read too: late answers it did not count were late outside the auction
    (waiting for the event loop before the handler ran, or writing the answer)."""
    exchange = server.target.kind == "exchange"
    before = _scrape(server) if exchange else {}
    fleet.set_mode("faulty")
    try:
        share = bench.plan.post_share if exchange else 0.0
        run = _fixed(bench, server, fleet, rate, post_share=share)
    finally:
        fleet.set_mode("normal")
    if exchange:
        after = _scrape(server)
        run["exchange_metrics"] = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    return run


_SCRAPED = ("exchange_deadline_misses_total", "exchange_auction_duration_seconds_count")
_CONNECTIONS = "exchange_buyer_connections_total"
# Counters kept by one label, as ``name:value``.
_BY_LABEL = {_CONNECTIONS: "event", REFUSALS_METRIC: "reason"}


def _scrape(server: RunningServer) -> dict[str, float]:
    """Sums of a few of the exchange's own metrics, from its /metrics; the buyer
    connection counts by event and the overload refusals by reason, as
    ``<name>:<label value>``."""
    import urllib.request

    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    sums = dict.fromkeys(_SCRAPED, 0.0)  # a labelled counter appears at its first count
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in _SCRAPED:
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        elif name in _BY_LABEL and f'{_BY_LABEL[name]}="' in line:
            value = line.split(f'{_BY_LABEL[name]}="', 1)[1].split('"', 1)[0]
            key = f"{name}:{value}"
            sums[key] = sums.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


def _profile(bench: Bench, server: RunningServer, fleet: Buyers, rate: float) -> dict[str, Any]:
    """py-spy on the exchange while it serves ``rate`` pings/s; a summary of where its
    CPU went. A separate run, since sampling costs the process some time."""
    plan = bench.plan
    spy = profiling.py_spy()
    if spy is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    output = bench.workdir / "profile.raw"
    recorder = bench.group.start(
        [spy, "record", "--pid", str(server.worker_pid()), "--duration", str(int(plan.profile_s)),
         "--rate", "200", "--format", "raw", "--output", str(output), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        run = bench.load(
            server, fleet, mode="open", rate=rate, duration_s=plan.profile_s + 1.0,
            warmup_s=0.2, drain_s=1.0,
        )  # fmt: skip
        recorder.wait(30)
    finally:
        bench.group.stop(recorder)
    if not output.exists():
        return {"error": "py-spy wrote no profile (ptrace not permitted?)"}
    summary = profiling.summarize(output.read_text())
    summary["rate_per_s"] = round(rate)
    summary["achieved_per_s"] = run["achieved_per_s"]
    summary["folded"] = output
    return summary


def _simulator_check(bench: Bench, count: int = 10) -> dict[str, Any]:
    """Is the aiohttp simulator in buyers/ fit to load the exchange? The ceiling server
    under the same closed-loop load, against the simulator and against the lean server."""
    from benchmarks.simulator_check import run_check

    return run_check(bench, count)


def run_plan(
    plan: Plan, database_url: str | None = None, say: Say = print, keep_workdir: bool = False
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lead-exchange-bench-"))
    database = Database(workdir, database_url)
    started = time.monotonic()
    results: dict[str, Any] = {"meta": _meta(plan), "runs": []}
    bench = Bench(plan, workdir, database, say)
    try:
        with bench.group:
            if any(TARGETS[t].kind == "exchange" for t in plan.targets):
                database.start()
            if plan.simulator_check:
                say("simulator check (ceiling server, N=10, aiohttp simulator vs lean buyers)")
                results["simulator_check"] = _simulator_check(bench)
            for count in plan.buyer_counts:
                say(f"N = {count} buyers, {plan.rounds} alternating rounds")
                fleet = BuyerFleet(bench.group, workdir, count)
                try:
                    entries, same = _measure_count(bench, fleet)
                    results["runs"].extend(entries)
                    if same:
                        results.setdefault("same_rate", []).append(same)
                finally:
                    fleet.stop()
    finally:
        database.stop()
        profile_file = _take_profile(results)
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    if profile_file is not None:
        results["profile_folded"] = profile_file
    return results


def _take_profile(results: dict[str, Any]) -> str | None:
    """The folded stacks out of the temp dir, before it goes."""
    for entry in (r for e in results["runs"] for r in e.get("rounds", ())):
        profile = entry.get("profile")
        if profile and isinstance(profile.get("folded"), Path):
            path: Path = profile.pop("folded")
            if path.exists():
                text: str = profiling.fold(path.read_text())
                return text
    return None


def _meta(plan: Plan) -> dict[str, Any]:
    import aiohttp
    import httptools
    import uvloop

    from benchmarks.histogram import new_histogram

    return {
        "plan": asdict(plan),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "aiohttp": aiohttp.__version__,
            "uvloop": getattr(uvloop, "__version__", "?"),
            "httptools": httptools.__version__,
        },
        "tmax_ms": TMAX_MS,
        "late_threshold_ms": TMAX_MS + 5,
        "histogram": new_histogram().kind,
        "primary": PRIMARY,
        "ceiling": CEILING,
    }
