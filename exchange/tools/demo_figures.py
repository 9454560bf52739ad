"""The demo's figures, each from the one place that knows it:

- ``ExchangeFigures``: what the exchange itself measured, from two scrapes of its
  ``/metrics`` (auction duration and overhead from its histograms, answers past tmax,
  503s, event-loop lag);
- ``SellerFigures``: what the simulated sellers measured end to end, the demo's own
  client included (exchange/tools/demo_sellers.py);
- ``BuyerRow``: each buyer as the exchange counted it;
- ``findings``: who is the limit, from the CPU of each of the demo's processes and the
  time pings spent in the demo's client, so that a slow client or busy buyers are named
  instead of the exchange being blamed.

Plain data and arithmetic; no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exchange.core.outcomes import CALLED_OUTCOMES, BidOutcome, Phase, PostOutcome
from exchange.tools.demo_latency import LatencyTally

LATE_SLACK_MS = 5.0  # an answer later than tmax + this is late (as the exchange counts)
BUSY_CORE = 0.85  # a single-threaded process using this much of a core is the limit
BUSY_MACHINE = 0.9  # share of all cores
CLIENT_WAIT_LIMIT_MS = 25.0  # p95 time a ping waited in the demo's client before leaving
BEHIND = 0.95  # the client sent less than this share of the leads due

Labels = tuple[tuple[str, str], ...]


class Scrape:
    """One read of the exchange's /metrics: every sample by name and labels."""

    def __init__(self, samples: Mapping[str, Mapping[Labels, float]], at: float) -> None:
        self.samples = samples
        self.at = at

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        samples: dict[str, dict[Labels, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, {})[labels] = float(sample.value)
        return cls(samples, at)

    def _matching(self, name: str, match: Mapping[str, str]) -> Iterable[tuple[Labels, float]]:
        for labels, value in self.samples.get(name, {}).items():
            found = dict(labels)
            if all(found.get(k) == v for k, v in match.items()):
                yield labels, value

    def total(self, name: str, **match: str) -> float:
        return sum(value for _, value in self._matching(name, match))

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in self._matching(name, match):
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out

    def buckets(self, name: str) -> dict[float, float]:
        """A histogram's cumulative counts by upper bound, summed over its other labels."""
        return {float(le): count for le, count in self.by(f"{name}_bucket", "le").items()}


def _since(last: Scrape, first: Scrape | None, name: str, **match: str) -> float:
    return last.total(name, **match) - (first.total(name, **match) if first else 0.0)


def bucket_bound(percent: float, cumulative: Mapping[float, float]) -> float | None:
    """The upper bound of the bucket the rank falls in: what a histogram can say for
    sure (the percentile is at most this); +Inf past the last finite bound."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = percent / 100 * cumulative[bounds[-1]]
    return next((bound for bound in bounds if cumulative[bound] >= rank), bounds[-1])


def bucket_quantile(percent: float, cumulative: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in; the
    last finite bound when it falls in +Inf."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = percent / 100 * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


@dataclass(frozen=True)
class Spread3:
    """p50, p95, p99 in milliseconds (None: nothing measured). ``at_most``: each is the
    upper bound of a histogram bucket, the percentile being at most that."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    at_most: bool = False

    @classmethod
    def of_buckets(cls, cumulative: Mapping[float, float]) -> Spread3:
        """From a histogram, as bucket bounds: interpolating inside a bucket (as
        Prometheus' histogram_quantile does) would put a p99 of 315 ms at 397 ms in a
        300-400 ms bucket, above what the sellers measure end to end."""
        p50, p95, p99 = (bucket_bound(p, cumulative) for p in (50, 95, 99))
        return cls(_ms_of(p50), _ms_of(p95), _ms_of(p99), at_most=True)

    @classmethod
    def of_tally(cls, tally: LatencyTally) -> Spread3:
        return cls(tally.percentile(50), tally.percentile(95), tally.percentile(99))


def _ms_of(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _bucket_delta(last: Scrape, first: Scrape | None, name: str) -> dict[float, float]:
    now = last.buckets(name)
    before = first.buckets(name) if first else {}
    return {le: count - before.get(le, 0.0) for le, count in now.items()}


@dataclass(frozen=True)
class ExchangeFigures:
    """The exchange's own account of a stretch of time, from its metrics."""

    seconds: float
    auctions: int
    duration_ms: Spread3
    overhead_ms: Spread3
    past_tmax: int
    answered_503: int
    refusals: dict[str, int]
    loop_lag_p99_ms: float | None
    bids: int
    sales: int
    tmax_ms: float
    # The lead pool: unsold leads that entered it, offers claimed, offers waiting now.
    pool_entered: int = 0
    pool_claimed: int = 0
    pool_waiting: int = 0

    @classmethod
    def between(cls, first: Scrape | None, last: Scrape) -> ExchangeFigures:
        seconds = last.at - first.at if first else 0.0
        refusals_now = last.by("exchange_overload_refusals_total", "reason")
        refusals_then = first.by("exchange_overload_refusals_total", "reason") if first else {}
        refusals = {
            reason: int(count - refusals_then.get(reason, 0.0))
            for reason, count in refusals_now.items()
        }
        lag = bucket_bound(99, _bucket_delta(last, first, "exchange_event_loop_lag_seconds"))
        return cls(
            seconds=seconds,
            auctions=int(_since(last, first, "exchange_auction_duration_seconds_count")),
            duration_ms=Spread3.of_buckets(
                _bucket_delta(last, first, "exchange_auction_duration_seconds")
            ),
            overhead_ms=Spread3.of_buckets(
                _bucket_delta(last, first, "exchange_auction_overhead_seconds")
            ),
            past_tmax=int(_since(last, first, "exchange_deadline_misses_total")),
            answered_503=int(_since(last, first, "exchange_http_requests_total", code="503")),
            refusals={reason: count for reason, count in refusals.items() if count},
            loop_lag_p99_ms=None if lag is None else lag * 1000,
            bids=int(_since(last, first, "exchange_pings_total", status="bid")),
            sales=int(_since(last, first, "exchange_sales_total")),
            tmax_ms=last.total("exchange_tmax_seconds") * 1000,
            pool_entered=int(_since(last, first, "exchange_pool_entries_total")),
            pool_claimed=int(_since(last, first, "exchange_pool_claims_total")),
            pool_waiting=int(last.total("exchange_pool_offers")),
        )

    @property
    def per_second(self) -> float | None:
        return self.auctions / self.seconds if self.seconds > 0 else None


@dataclass
class SellerFigures:
    """What the simulated sellers measured, added up from their per-second reports."""

    seconds: float = 0.0
    asked: int = 0
    sent: int = 0
    answered: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    bids: int = 0
    posts: int = 0
    sold: int = 0
    unsold: int = 0
    payout_cents: int = 0
    pool_claims: int = 0  # the pull buyer's, as its client counted them
    pool_paid_cents: int = 0
    queued: int = 0
    late: int = 0
    in_flight: int = 0
    ping: LatencyTally = field(default_factory=LatencyTally)
    wait: LatencyTally = field(default_factory=LatencyTally)
    wire: LatencyTally = field(default_factory=LatencyTally)
    post: LatencyTally = field(default_factory=LatencyTally)

    @classmethod
    def of(cls, reports: Iterable[Mapping[str, Any]]) -> SellerFigures:
        out = cls()
        for report in reports:
            out.add(report)
        return out

    def add(self, report: Mapping[str, Any]) -> None:
        self.seconds += float(report.get("elapsed_s", 0.0))
        for name in (
            "asked",
            "sent",
            "answered",
            "failed",
            "bids",
            "posts",
            "sold",
            "unsold",
            "payout_cents",
            "pool_claims",
            "pool_paid_cents",
            "queued",
            "late",
        ):
            setattr(self, name, getattr(self, name) + int(report.get(name, 0)))
        for code, count in (report.get("codes") or {}).items():
            self.codes[code] = self.codes.get(code, 0) + int(count)
        for name in ("ping", "wait", "wire", "post"):
            getattr(self, name).merge(LatencyTally.from_json(report.get(name)))
        self.in_flight = int(report.get("in_flight", 0))

    @property
    def not_ok(self) -> int:
        return sum(count for code, count in self.codes.items() if code != "200") + self.failed

    @property
    def fill_rate(self) -> float | None:
        return self.sold / self.answered if self.answered else None

    def rate(self, count: int) -> float | None:
        return count / self.seconds if self.seconds > 0 else None


@dataclass(frozen=True)
class CapLeft:
    window: str
    leads: int | None = None
    dollars: float | None = None


@dataclass(frozen=True)
class BuyerRow:
    """One buyer, as the exchange counted it since the demo started."""

    buyer: str
    format: str
    pings: int
    bids: int
    wins: int
    posts: int
    accepted: int
    timeouts: int
    capped: int
    revenue: float
    caps: tuple[CapLeft, ...]

    @property
    def accept_rate(self) -> float | None:
        return self.accepted / self.posts if self.posts else None


_POSTED = (PostOutcome.ACCEPTED, PostOutcome.REJECTED, PostOutcome.TIMEOUT, PostOutcome.ERROR)


def buyer_rows(first: Scrape | None, last: Scrape, formats: Mapping[str, str]) -> list[BuyerRow]:
    """A row per buyer in ``formats`` (buyer id -> the API it speaks), in that order."""
    rows = []
    requests = "exchange_buyer_requests_total"
    for buyer, wire_format in formats.items():

        def count(phase: Phase, outcomes: Iterable[str], buyer: str = buyer) -> int:
            return int(
                sum(
                    _since(last, first, requests, buyer=buyer, phase=phase.value, outcome=outcome)
                    for outcome in outcomes
                )
            )

        caps = [
            CapLeft(window, leads=int(left))
            for window, left in last.by(
                "exchange_buyer_cap_remaining_leads", "window", buyer=buyer
            ).items()
        ]
        caps += [
            CapLeft(window, dollars=left)
            for window, left in last.by(
                "exchange_buyer_budget_remaining_dollars", "window", buyer=buyer
            ).items()
        ]
        rows.append(
            BuyerRow(
                buyer=buyer,
                format=wire_format,
                pings=count(Phase.PING, CALLED_OUTCOMES),
                bids=count(Phase.PING, (BidOutcome.BID, BidOutcome.BELOW_FLOOR)),
                wins=int(_since(last, first, "exchange_buyer_wins_total", buyer=buyer)),
                posts=count(Phase.POST, _POSTED),
                accepted=count(Phase.POST, (PostOutcome.ACCEPTED,)),
                timeouts=count(Phase.PING, (BidOutcome.TIMEOUT,)),
                capped=count(Phase.PING, (BidOutcome.CAPPED,)),
                revenue=_since(last, first, "exchange_revenue_dollars_total", buyer=buyer),
                caps=tuple(caps),
            )
        )
    return rows


@dataclass(frozen=True)
class Finding:
    """One statement about who limits the figures; ``limit`` ones name a bottleneck."""

    text: str
    limit: bool = False


def findings(
    cores: Mapping[str, float],
    cpus: int,
    sellers: SellerFigures,
    exchange: ExchangeFigures | None,
) -> list[Finding]:
    """Who is the limit, in the order a reader should look: the demo's own client, its
    buyers, the machine, then the exchange."""
    out: list[Finding] = []
    wait_p95 = sellers.wait.percentile(95)
    client_cores = cores.get("sellers", 0.0)
    behind = sellers.asked > 20 and sellers.sent < BEHIND * sellers.asked
    if (wait_p95 or 0.0) > CLIENT_WAIT_LIMIT_MS or client_cores >= BUSY_CORE or behind:
        out.append(
            Finding(
                f"the demo's seller client is the bottleneck: pings waited {_ms(wait_p95)} (p95) "
                f"in it before leaving, it sent {sellers.sent} of {sellers.asked} leads due, and "
                f"its process used {client_cores:.2f} of a core. The sellers' end-to-end times "
                "include that wait; the exchange's own figures do not.",
                limit=True,
            )
        )
    buyer_cores = cores.get("buyers", 0.0)
    if buyer_cores >= BUSY_CORE:
        out.append(
            Finding(
                f"the simulated buyers are saturated ({buyer_cores:.2f} of a core): they answer "
                "late, so buyer timeouts here are the simulator's, not the exchange's.",
                limit=True,
            )
        )
    busy = cores.get("machine")
    if busy is not None and busy >= BUSY_MACHINE * cpus:
        others = other_cores(cores)
        out.append(
            Finding(
                f"the machine is full ({busy:.1f} of {cpus} cores busy, {others:.1f} of them by "
                "processes outside the demo): every process here waits for a CPU, the exchange "
                "included; late answers then come from the host.",
                limit=True,
            )
        )
    exchange_cores = cores.get("exchange", 0.0)
    if exchange_cores >= BUSY_CORE:
        lag = exchange.loop_lag_p99_ms if exchange else None
        out.append(
            Finding(
                f"the exchange is at its capacity here ({exchange_cores:.2f} of a core"
                + (f", event-loop lag p99 {_ms(lag)}" if lag is not None else "")
                + ").",
                limit=True,
            )
        )
    if exchange is not None and exchange.answered_503:
        reasons = ", ".join(f"{k} {v}" for k, v in exchange.refusals.items()) or "not ready"
        out.append(
            Finding(
                f"the exchange answered {exchange.answered_503} pings 503 ({reasons}).", limit=True
            )
        )
    if not out:
        out.append(
            Finding("nothing here is saturated: the exchange's figures are its own at this load.")
        )
    return out


def other_cores(cores: Mapping[str, float]) -> float:
    """Busy cores of the machine not spent by the demo's own processes."""
    busy = cores.get("machine", 0.0)
    return max(0.0, busy - sum(v for k, v in cores.items() if k != "machine"))


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
