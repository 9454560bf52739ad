"""Prometheus metrics (SPEC section 7 names, plus what an operator needs to act).

Labels come only from the configuration (buyer, seller and vertical ids) and from the
closed enums in exchange/core/outcomes.py, never from request data, so the series count is
bounded by the config. Buckets are fine-grained under the auction deadline.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from exchange.core.config import Config
from exchange.core.outcomes import BidOutcome, Overload, Phase, PingStatus, PostOutcome
from exchange.transport.base import TransportStats

# No `_created` series: a gauge beside every counter and histogram series that nothing
# here reads, a fifth of every scrape's lines (and of its time on the event loop).
disable_created_metrics()  # type: ignore[no-untyped-call]

# A scrape is rendered on the event loop in slices of this many samples, each a fraction
# of a millisecond, so a scrape of a few thousand series never holds auctions up for the
# whole rendering (some 20 ms at 30 buyers, in one go).
EXPOSITION_SLICE = 200

# Seconds. Dense from 1 ms to 1 s (the default tmax), sparse beyond.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1,
    0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0,
    5.0, 10.0,
)  # fmt: skip
OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
# The batch writer's tables (exchange/ledger/batch.py COLUMNS), a closed label set.
LEDGER_TABLES = ("pings", "bid_outcomes", "post_attempts")
LAG_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class _Tally:
    """Observations of one histogram child not yet applied to it: its bucket counts
    (not cumulative, as prometheus_client keeps them) and their sum."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def add(self, value: float) -> None:
        # The first bucket whose upper bound is >= value, as Histogram.observe picks it.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


class Metrics:
    """Every collector of one exchange, registered on one registry.

    An auction touches a dozen series per buyer it asks. Each prometheus_client update
    takes a lock (about 1 us, several for a histogram), so the auction path records with
    ``inc_later``/``observe_later`` into plain dicts instead, and ``apply_pending`` adds
    the totals to the real series: before every exposition, and every second from the
    app (so other workers' scrapes see them too).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._pending_counts: dict[Any, float] = {}
        self._pending_observations: dict[Any, _Tally] = {}
        # The busiest series, one per buyer per auction (buyer_pinged): keyed by plain
        # (buyer, outcome) and buyer ids, resolved to their children when applied.
        self._pending_pings: dict[tuple[str, str], int] = {}
        self._pending_ping_latency: dict[str, _Tally] = {}
        # The buyer transport's own counters (watch_transport), and what of them the
        # series already hold.
        self._transport_stats: TransportStats | None = None
        self._transport_seen = (0, 0)
        self._unsolicited_seen: dict[str, int] = {}
        # Auctions in progress, counted here and copied to the gauge by apply_pending
        # (the gauge's own inc/dec take a lock each, twice per ping).
        self.inflight_now = 0
        r = self.registry
        self.pings = Counter(
            "exchange_pings",
            "Pings answered, by answer status (bid or no_bid).",
            ["seller", "vertical", "status"],
            registry=r,
        )
        self.buyer_requests = Counter(
            "exchange_buyer_requests",
            "Buyer outcomes per phase (ping: bid outcome; "
            "post: post outcome). Exclusions before a call are counted with phase=ping.",
            ["buyer", "phase", "outcome"],
            registry=r,
        )
        self.buyer_latency = Histogram(
            "exchange_buyer_latency_seconds",
            "Time from sending a request to a buyer to "
            "its answer (timeouts count at the deadline).",
            ["buyer", "phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.auction_duration = Histogram(
            "exchange_auction_duration_seconds",
            "Ping received to answer ready.",
            ["vertical"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.auction_overhead = Histogram(
            "exchange_auction_overhead_seconds",
            "Auction time not spent waiting on buyers.",
            ["vertical"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.deadline_misses = Counter(
            "exchange_deadline_misses",
            "Ping answers ready later than tmax + 5 ms.",
            ["vertical"],
            registry=r,
        )
        self.sales = Counter("exchange_sales", "Leads sold.", ["vertical"], registry=r)
        self.unsold = Counter(
            "exchange_unsold_posts", "Posts that ended unsold.", ["vertical"], registry=r
        )
        self.revenue = Counter(
            "exchange_revenue_dollars", "Sale prices paid by buyers.", ["buyer"], registry=r
        )
        self.payout = Counter(
            "exchange_payout_dollars", "Payouts owed to sellers.", ["seller"], registry=r
        )
        self.post_attempts_per_sale = Histogram(
            "exchange_post_attempts_per_sale",
            "Buyers posted to before one accepted (fallback depth + 1).",
            buckets=(1, 2, 3, 4, 5, 7, 10, 15, 20),
            registry=r,
        )
        self.wins = Counter(
            "exchange_buyer_wins",
            "Auctions where the buyer's bid ranked first.",
            ["buyer"],
            registry=r,
        )
        self.seller_sales = Counter(
            "exchange_seller_sales", "Sales of the seller's leads.", ["seller"], registry=r
        )
        self.tmax = Gauge(
            "exchange_tmax_seconds",
            "The configured default auction deadline.",
            registry=r,
            multiprocess_mode="max",
        )
        self.cap_remaining = Gauge(
            "exchange_buyer_cap_remaining_leads",
            "Leads a buyer can still take in its current cap window (as last seen).",
            ["buyer", "window"],
            registry=r,
            multiprocess_mode="min",
        )
        self.budget_remaining = Gauge(
            "exchange_buyer_budget_remaining_dollars",
            "Budget a buyer has left in its current window (as last seen).",
            ["buyer", "window"],
            registry=r,
            multiprocess_mode="min",
        )
        self.returns = Counter(
            "exchange_returns", "Sold leads returned by buyers.", ["buyer"], registry=r
        )
        self.sales_unrecorded = Counter(
            "exchange_sales_unrecorded",
            "Posts a buyer accepted whose sale the ledger refused to record (the lead went "
            "on down the ping tree; the buyer was not billed). Should stay 0.",
            ["buyer"],
            registry=r,
        )
        self.inflight = Gauge(
            "exchange_inflight_auctions",
            "Auctions in progress.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.overload_refusals = Counter(
            "exchange_overload_refusals",
            "Pings and direct posts answered 503 for overload, by reason: inflight (the "
            "process's max_inflight_auctions reached) or loop_lag (its event loop kept "
            "running later than overload_lag_ms), both before the auction started; "
            "ledger_late (the auction ran but its ping row had not committed by tmax).",
            ["reason"],
            registry=r,
        )
        self.buyer_connections = Counter(
            "exchange_buyer_connections",
            "Requests sent to buyer endpoints, by the connection each went out on: opened "
            "for it, or reused (kept alive from an earlier request). A buyer that closes "
            "keep-alive connections shows as opened.",
            ["event"],
            registry=r,
        )
        self.buyer_unsolicited = Counter(
            "exchange_buyer_unsolicited_responses",
            "Buyer connections closed for sending bytes no request asked for (a second "
            "response to one request, say); the buyer then gets no keep-alive reuse for a "
            "while, so a stray answer cannot be read as a later one.",
            ["buyer"],
            registry=r,
        )
        self.http_requests = Counter(
            "exchange_http_requests",
            "Seller/operator API answers by route and status code.",
            ["route", "code"],
            registry=r,
        )
        self.db_write_latency = Histogram(
            "exchange_db_write_seconds",
            "Time to write one batch or one sale.",
            ["table"],
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.db_rows_written = Counter(
            "exchange_db_rows_written", "Ledger rows written.", ["table"], registry=r
        )
        self.db_queue_depth = Gauge(
            "exchange_db_queue_rows",
            "Ledger rows waiting in the batch queue.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.loop_lag = Histogram(
            "exchange_event_loop_lag_seconds",
            "How late the event loop ran a timer, sampled every 10 ms: time the process "
            "was too busy to run what was due (auctions keep the recent lag back from "
            "their deadline).",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.worker_restarts = worker_restarts(r)
        self.db_up = Gauge(
            "exchange_db_up",
            "1 when the last database check succeeded.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.ledger_writer_up = Gauge(
            "exchange_ledger_writer_up",
            "1 while the batch writer writes; 0 once its rows have failed to write (or one "
            "write has hung) for 2 s: /readyz answers 503 meanwhile.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.ledger_rows_rejected = Counter(
            "exchange_ledger_rows_rejected",
            "Ledger rows PostgreSQL refused (or that could not be encoded), set aside in the "
            "dead-letter table ledger_rejected_rows. Should stay 0.",
            ["table"],
            registry=r,
        )
        for table in LEDGER_TABLES:
            self.ledger_rows_rejected.labels(table)
        # Every metric above, in the order the registry renders them (exposition).
        self._collectors = [v for v in vars(self).values() if isinstance(v, MetricWrapperBase)]

    def request_counter(self, buyer: str, phase: str, outcome: str) -> Any:
        return self.child(self.buyer_requests, buyer, phase, outcome)

    def latency_histogram(self, buyer: str, phase: str) -> Any:
        return self.child(self.buyer_latency, buyer, phase)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, resolved once per label set: ``labels()`` costs
        about 1.5 us, and the auction path asks for a dozen children per buyer."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def inc_later(self, child: Any, amount: float = 1) -> None:
        """A counter increment, applied at the next ``apply_pending``."""
        pending = self._pending_counts
        pending[child] = pending.get(child, 0) + amount

    def observe_later(self, child: Any, value: float) -> None:
        """A histogram observation, applied at the next ``apply_pending``."""
        tally = self._pending_observations.get(child)
        if tally is None:
            tally = self._pending_observations[child] = _Tally(child)
        tally.add(value)

    def buyer_pinged(self, buyer: str, outcome: str, latency_us: int | None) -> None:
        """One buyer's part in one auction: its outcome (``exchange_buyer_requests_total``,
        phase ping) and, when it was called, its latency (``exchange_buyer_latency``)."""
        key = (buyer, outcome)
        pending = self._pending_pings
        pending[key] = pending.get(key, 0) + 1
        if latency_us is not None:
            tally = self._pending_ping_latency.get(buyer)
            if tally is None:
                tally = self._pending_ping_latency[buyer] = _Tally(
                    self.latency_histogram(buyer, "ping")
                )
            tally.add(latency_us / 1e6)

    def watch_transport(self, stats: TransportStats) -> None:
        """Report the buyer transport's requests and opened connections (as
        exchange_buyer_connections_total), and its connections closed for unsolicited
        bytes (exchange_buyer_unsolicited_responses_total), whenever pending updates are
        applied. The transport counts those per buyer id the exchange gave it: ids from
        the config."""
        self._transport_stats = stats
        self._transport_seen = (0, 0)
        self._unsolicited_seen = {}

    def _apply_transport(self) -> None:
        stats = self._transport_stats
        if stats is None:
            return
        sent, opened = stats.requests_sent, stats.connections_opened
        seen_sent, seen_opened = self._transport_seen
        self._transport_seen = (sent, opened)
        new_opened = opened - seen_opened
        reused = (sent - seen_sent) - new_opened
        if new_opened > 0:
            self.child(self.buyer_connections, "opened").inc(new_opened)
        if reused > 0:
            self.child(self.buyer_connections, "reused").inc(reused)
        if stats.unsolicited:
            seen = self._unsolicited_seen
            for buyer, count in stats.unsolicited.items():
                new = count - seen.get(buyer, 0)
                if new > 0:
                    seen[buyer] = count
                    self.child(self.buyer_unsolicited, buyer).inc(new)

    def apply_pending(self) -> None:
        self.inflight.set(self.inflight_now)
        self._apply_transport()
        counts, self._pending_counts = self._pending_counts, {}
        observations, self._pending_observations = self._pending_observations, {}
        pings, self._pending_pings = self._pending_pings, {}
        latencies, self._pending_ping_latency = self._pending_ping_latency, {}
        for child, amount in counts.items():
            child.inc(amount)
        for (buyer, outcome), amount in pings.items():
            self.request_counter(buyer, "ping", outcome).inc(amount)
        for tally in (*observations.values(), *latencies.values()):
            child = tally.child
            # prometheus_client has no bulk observe: add to the child's buckets and sum
            # as observe() would (pinned by tests/test_metrics_batching.py).
            for bucket, count in zip(child._buckets, tally.counts, strict=True):
                if count:
                    bucket.inc(count)
            child._sum.inc(tally.total)

    def start_series(self, config: Config) -> None:
        """Create every config-labelled series at zero, so the first event of each is a
        visible increase (Prometheus cannot see the first sample of a new series rise)."""
        self.tmax.set(config.exchange.tmax_ms / 1000)
        verticals = list(config.verticals)
        for seller in config.sellers:
            self.payout.labels(seller.id)
            self.seller_sales.labels(seller.id)
            for vertical in seller.verticals or verticals:
                for status in PingStatus:
                    self.pings.labels(seller.id, vertical, status.value)
        for reason in Overload:
            self.overload_refusals.labels(reason.value)
        for event in ("opened", "reused"):
            self.buyer_connections.labels(event)
        for vertical in verticals:
            for series in (self.sales, self.unsold, self.deadline_misses):
                series.labels(vertical)
            self.auction_duration.labels(vertical)
            self.auction_overhead.labels(vertical)
        for buyer in config.buyers:
            self.revenue.labels(buyer.id)
            self.wins.labels(buyer.id)
            self.returns.labels(buyer.id)
            self.buyer_unsolicited.labels(buyer.id)
            for bid_outcome in BidOutcome:
                self.buyer_requests.labels(buyer.id, Phase.PING.value, bid_outcome.value)
            for post_outcome in PostOutcome:
                self.buyer_requests.labels(buyer.id, Phase.POST.value, post_outcome.value)
            self.buyer_latency.labels(buyer.id, Phase.PING.value)
            self.buyer_latency.labels(buyer.id, Phase.POST.value)

    async def exposition(self) -> bytes:
        """The text format of every metric, as prometheus_client renders it, but in slices
        of about EXPOSITION_SLICE samples with the event loop free to run auctions in
        between: a labelled metric is read and formatted a few series at a time (each
        series at once, so a histogram's buckets agree with its count). With several
        worker processes (PROMETHEUS_MULTIPROC_DIR set) it sums what every live worker
        recorded; reading their files runs in a thread, and the result is formatted in
        slices the same way."""
        self.apply_pending()
        families: Iterable[Metric]
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            families = _sample_slices(await asyncio.to_thread(_read_workers))
        else:
            families = _series_slices(self._collectors)
        parts: list[bytes] = []
        last_name = None
        for family in families:
            text = generate_latest(_Families(family))
            # A family's HELP and TYPE lines come once, before its first slice.
            parts.append(text.split(b"\n", 2)[2] if family.name == last_name else text)
            last_name = family.name
            await asyncio.sleep(0)
        return b"".join(parts)

    def record_lag(self, seconds: float) -> None:
        self.observe_later(self.loop_lag, seconds)

    def record_rejected(self, table: str, rows: int) -> None:
        self.child(self.ledger_rows_rejected, table).inc(rows)

    def record_flush(self, table: str, rows: int, seconds: float) -> None:
        self.observe_later(self.child(self.db_write_latency, table), seconds)
        self.inc_later(self.child(self.db_rows_written, table), rows)


class _Families:
    """A collector of given metric families (what generate_latest renders)."""

    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _read_workers() -> list[Metric]:
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return list(combined.collect())


def worker_restarts(registry: CollectorRegistry | None = None) -> Counter:
    """Workers replaced after exiting on their own. Counted by the ``serve --workers``
    supervisor, which serves no /metrics: with no registry, its count reaches the
    workers' /metrics through the multiprocess files; each worker's own series stays 0."""
    return Counter(
        "exchange_worker_restarts",
        "Workers of serve --workers that exited on their own and were replaced.",
        registry=registry,
    )


def _series_slices(collectors: Iterable[MetricWrapperBase]) -> Iterator[Metric]:
    """Each metric's family, in parts of a few series (about EXPOSITION_SLICE samples):
    a part is the metric's own collect() over some of its labelled children."""
    for collector in collectors:
        children: dict[Any, Any] = getattr(collector, "_metrics", {})
        if not children:
            yield from collector.collect()
            continue
        with collector._lock:
            series = list(children.items())
        per_part = 1
        start = 0
        while start < len(series):
            part = copy.copy(collector)
            part._metrics = dict(series[start : start + per_part])
            start += per_part
            for family in part.collect():
                if per_part == 1:
                    per_part = max(1, EXPOSITION_SLICE // max(1, len(family.samples)))
                yield family


def _sample_slices(families: Iterable[Metric]) -> Iterator[Metric]:
    """Each family in parts of EXPOSITION_SLICE samples."""
    for family in families:
        samples = family.samples
        for start in range(0, max(1, len(samples)), EXPOSITION_SLICE):
            part = Metric(family.name, family.documentation, family.type, family.unit)
            part.samples = samples[start : start + EXPOSITION_SLICE]
            yield part
