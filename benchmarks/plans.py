"""What a benchmark run measures and for how long: the servers under test and the plans
(full, quick, smoke)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One server under test."""

    name: str
    label: str
    kind: str  # "exchange" or "baseline"
    transport: str = ""  # exchange: config key exchange.transport
    workers: int = 1  # exchange: serve --workers
    client: str = ""  # baseline: benchmarks.baseline --client


TARGETS = {
    t.name: t
    for t in (
        Target("exchange-h1", "exchange (transport h1)", "exchange", transport="h1"),
        Target("exchange-h1-w2", "exchange (h1, --workers 2)", "exchange", transport="h1",
               workers=2),
        Target("ceiling-b", "ceiling (b): aiohttp server + minimal h1 client", "baseline",
               client="minimal"),
        Target("baseline-a", "baseline (a): aiohttp server + ClientSession", "baseline",
               client="aiohttp"),
        Target("baseline-h1transport", "aiohttp server + exchange's H1Transport", "baseline",
               client="h1transport"),
    )
}  # fmt: skip

# The exchange as configured for production, against which the targets are checked.
PRIMARY = "exchange-h1"
CEILING = "ceiling-b"
BASELINE = "baseline-a"
# The deadline runs of a server, by their key in its results entry: the share of its
# saturation each runs at.
DEADLINE_LOADS = {"deadline": 0.5, "deadline_light": 0.25}
# The exchange's overload refusals, scraped by reason (``<name>:<reason>``).
REFUSALS_METRIC = "exchange_overload_refusals_total"


@dataclass(frozen=True)
class Plan:
    name: str
    buyer_counts: tuple[int, ...]
    targets: tuple[str, ...]
    probe_steps: tuple[int, ...]
    probe_step_s: float  # measured part of each probe step
    probe_settle_s: float  # before it, after the concurrency changed
    run_s: float  # each fixed-rate run's measured window
    warmup_s: float  # before it, same rate, not recorded
    deadline_n: int  # the buyer count of the deadline run
    deadline_targets: tuple[str, ...]
    # Run again, in turns, at the primary's 50% rate: latency compared at one load.
    same_rate_targets: tuple[str, ...]
    # Every server is measured this many times, in alternating rounds (A B A B ...); each
    # figure is reported as the median with its lowest and highest.
    rounds: int
    post_share: float  # deadline run: share of bids posted (exchange targets)
    simulator_check: bool
    profile_s: float  # 0: no profile
    deadline_loads: tuple[str, ...] = tuple(DEADLINE_LOADS)  # which of the deadline runs
    # Times the saturation may be taken down a quarter when open-loop load at 80% of it
    # does not hold.
    saturation_corrections: int = 2


FULL = Plan(
    name="full",
    buyer_counts=(1, 10, 30),
    targets=("exchange-h1", "exchange-h1-w2", "ceiling-b", "baseline-a",
             "baseline-h1transport"),
    probe_steps=(16, 32, 64, 128, 256, 512),
    probe_step_s=1.5,
    probe_settle_s=0.5,
    run_s=5.0,
    warmup_s=1.0,
    deadline_n=10,
    deadline_targets=("exchange-h1", "exchange-h1-w2", "ceiling-b", "baseline-a"),
    same_rate_targets=("exchange-h1", "ceiling-b", "baseline-a", "baseline-h1transport"),
    rounds=3,
    post_share=0.2,
    simulator_check=True,
    profile_s=10.0,
)  # fmt: skip

QUICK = Plan(
    name="quick",
    buyer_counts=(1, 10),
    targets=("exchange-h1", "exchange-h1-w2", "ceiling-b", "baseline-a"),
    probe_steps=(16, 32, 64, 128, 256),
    probe_step_s=0.5,
    probe_settle_s=0.2,
    run_s=1.5,
    warmup_s=0.25,
    deadline_n=10,
    deadline_targets=("exchange-h1",),
    same_rate_targets=("exchange-h1", "ceiling-b"),
    rounds=3,
    post_share=0.2,
    simulator_check=False,
    profile_s=0.0,
)

# Seconds, for CI: proves every piece starts, talks and reports; its numbers mean nothing.
SMOKE = Plan(
    name="smoke",
    buyer_counts=(2,),
    targets=("exchange-h1", "ceiling-b", "baseline-a"),
    probe_steps=(8,),
    probe_step_s=0.3,
    probe_settle_s=0.1,
    run_s=0.3,
    warmup_s=0.1,
    deadline_n=2,
    deadline_targets=("exchange-h1",),
    same_rate_targets=("exchange-h1", "ceiling-b"),
    rounds=2,
    post_share=0.5,
    simulator_check=False,
    profile_s=0.0,
    deadline_loads=("deadline",),
    saturation_corrections=0,
)

PLANS = {plan.name: plan for plan in (FULL, QUICK, SMOKE)}
