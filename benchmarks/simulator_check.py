"""Is the aiohttp buyer simulator (exchange/tools/simulator.py) fit to load the exchange?

The ceiling server (the cheapest fan-out there is) is probed at N = 10 against the
simulator and against the lean buyer server with the same latency mix. If the simulator
burns a core before the ceiling does, it caps every number measured through it, and the
benchmark must use the lean server (it does; this check says why, with numbers).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml

from benchmarks.plans import TARGETS
from benchmarks.processes import HarnessError, ProcessGroup
from benchmarks.scenario import normal_behaviours

if TYPE_CHECKING:
    from benchmarks.runner import Bench


class SimulatorFleet:
    """`python -m exchange.tools.simulator` with the benchmark's latency mix, in its own process."""

    def __init__(self, group: ProcessGroup, bench: Bench, count: int) -> None:
        buyers = {
            f"sim-{index + 1:02d}": {
                "latency_ms": list(b.latency_ms),
                "no_bid_rate": b.no_bid_rate,
                "bid_cents": list(b.bid_cents),
            }
            for index, b in enumerate(normal_behaviours(count))
        }
        config = bench.workdir / "simulator.yaml"
        config.write_text(yaml.safe_dump({"buyers": buyers}))
        self.count = count
        self._group = group
        self.process = group.start(
            [sys.executable, "-m", "exchange.tools.simulator", "--config", str(config),
             "--base-port", "0", "--buyers", str(count)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.ping_urls: list[str] = []
        assert self.process.stdout is not None
        for _ in range(count):
            line = self.process.stdout.readline()
            if not line:
                raise HarnessError("the simulator exited before listing its buyers")
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            self.ping_urls.append(fields["ping"])
        self.ping_ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in self.ping_urls]
        self.post_ports = self.ping_ports

    def stats(self) -> dict[str, Any]:
        # The simulator keeps no connection counts; requests are derived from pings.
        return {"ping": {"connections": 0, "requests": 0, "hangs": 0}}

    def set_mode(self, mode: str) -> None:
        raise HarnessError("the simulator check has no faulty mode")

    def stop(self) -> None:
        self._group.stop(self.process)


def run_check(bench: Bench, count: int) -> dict[str, Any]:
    from benchmarks.runner import BuyerFleet, Buyers, start_server

    target = TARGETS["ceiling-b"]
    out: dict[str, Any] = {"n": count}
    makers: tuple[tuple[str, Callable[[], Buyers]], ...] = (
        ("aiohttp simulator", lambda: SimulatorFleet(bench.group, bench, count)),
        ("lean buyer server", lambda: BuyerFleet(bench.group, bench.workdir, count)),
    )
    for name, make in makers:
        fleet = make()
        try:
            server = start_server(bench.group, target, fleet, bench.database, bench.workdir)
            try:
                plan = bench.plan
                probe = bench.load(
                    server, fleet, mode="probe", probe_steps=list(plan.probe_steps),
                    duration_s=plan.probe_step_s, warmup_s=plan.probe_settle_s, drain_s=1.0,
                )  # fmt: skip
                saturation = probe["saturation_per_s"]
                run = bench.load(
                    server, fleet, mode="closed", concurrency=probe["saturation_concurrency"],
                    duration_s=plan.run_s, warmup_s=plan.warmup_s, drain_s=1.5,
                )  # fmt: skip
            finally:
                bench.group.stop(server.process)
        finally:
            fleet.stop()
        cost = run["cost"]
        requests = max(1, run["outcome"]["completed"] * count)
        out[name] = {
            "ceiling_saturation_per_s": saturation,
            "closed_loop_per_s": run["achieved_per_s"],
            "buyers_cores": cost["buyers_cores"],
            "buyers_cpu_us_per_request": round(
                cost["buyers_cores"] * cost["elapsed_s"] / requests * 1e6, 1
            ),
            "server_cores": cost["server_cores"],
            "loadgen_cores": cost["loadgen_cores"],
        }
        bench.say(
            f"  {name:<18} ceiling {saturation:6.0f} pings/s, buyers "
            f"{out[name]['buyers_cpu_us_per_request']:5.1f} us CPU/request, "
            f"{cost['buyers_cores']:.2f} cores"
        )
    return out
