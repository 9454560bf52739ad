"""Every metric the exchange exposes on ``GET /metrics``: names, help texts, labels and
buckets (SPEC section 7 names, plus what an operator needs to act), grouped by area.

Labels come only from the configuration (buyer, seller and vertical ids) and from the
closed enums in exchange/core/outcomes.py, never from request data, so the series count is
bounded by the config. Buckets are fine-grained under the auction deadline.

Nothing here updates a series: exchange/telemetry/metrics.py does, one method per event.
Each group registers its collectors in the order its attributes are assigned, which is
the order a scrape renders them in.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

from exchange.core.config import Config
from exchange.core.holds import HoldState
from exchange.core.outcomes import BidOutcome, Overload, Phase, PingStatus, PostOutcome

# No `_created` series: a gauge beside every counter and histogram series that nothing
# here reads, a fifth of every scrape's lines (and of its time on the event loop).
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds. From 100 us (a buyer next door answers in a few hundred microseconds, and
# latencies are measured to the microsecond: docs/observability.md), dense from 1 ms to
# 1 s (the default tmax), sparse beyond.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04,
    0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.25,
    1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip
OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 7, 10, 15, 20)
SCORE_BUCKETS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)  # the lead score, 0-100
LAG_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# The batch writer's tables (exchange/ledger/rows.py ROW_TYPES), a closed label set.
LEDGER_TABLES = ("pings", "bid_outcomes", "post_attempts")
CONNECTION_EVENTS = ("opened", "reused")


def collectors_of(group: object) -> list[MetricWrapperBase]:
    """A group's collectors, in the order it registered them."""
    return [v for v in vars(group).values() if isinstance(v, MetricWrapperBase)]


class AuctionCollectors:
    """Pings and their auctions: answers, duration, overhead, deadline misses, auctions in
    progress and refused for overload, the configured deadline."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.pings = Counter(
            "exchange_pings",
            "Pings answered, by answer status (bid or no_bid).",
            ["seller", "vertical", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "exchange_auction_duration_seconds",
            "Ping received to answer ready.",
            ["vertical"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "exchange_auction_overhead_seconds",
            "Auction time not spent waiting on buyers.",
            ["vertical"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.lead_score = Histogram(
            "exchange_lead_score",
            "Lead scores of pings (exchange/core/scoring.py), of verticals that score.",
            ["vertical"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.deadline_misses = Counter(
            "exchange_deadline_misses",
            "Ping answers ready later than tmax + 5 ms.",
            ["vertical"],
            registry=r,
        )
        self.tmax = Gauge(
            "exchange_tmax_seconds",
            "The configured default auction deadline.",
            registry=r,
            multiprocess_mode="max",
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

    def start(self, config: Config) -> None:
        self.tmax.set(config.exchange.tmax_ms / 1000)
        verticals = list(config.verticals)
        for seller in config.sellers:
            for vertical in seller.verticals or verticals:
                for status in PingStatus:
                    self.pings.labels(seller.id, vertical, status.value)
        for reason in Overload:
            self.overload_refusals.labels(reason.value)
        for vertical in verticals:
            self.deadline_misses.labels(vertical)
            self.duration.labels(vertical)
            self.overhead.labels(vertical)
            if config.verticals[vertical].score:
                self.lead_score.labels(vertical)


class BuyerCollectors:
    """Each buyer's part: outcomes and latency per phase, wins, what its caps leave, and
    the connections its requests went out on."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "exchange_buyer_requests",
            "Buyer outcomes per phase (ping: bid outcome; "
            "post: post outcome). Exclusions before a call are counted with phase=ping.",
            ["buyer", "phase", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "exchange_buyer_latency_seconds",
            "Time from sending a request to a buyer to "
            "its answer (timeouts count at the deadline).",
            ["buyer", "phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.wins = Counter(
            "exchange_buyer_wins",
            "Auctions where the buyer's bid ranked first.",
            ["buyer"],
            registry=r,
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
        self.connections = Counter(
            "exchange_buyer_connections",
            "Requests sent to buyer endpoints, by the connection each went out on: opened "
            "for it, or reused (kept alive from an earlier request). A buyer that closes "
            "keep-alive connections shows as opened.",
            ["event"],
            registry=r,
        )
        self.paused = Gauge(
            "exchange_buyer_paused",
            "1 while a buyer is paused in the live settings (enabled: false), by an "
            "operator or by auto-pause; 0 while it takes leads.",
            ["buyer"],
            registry=r,
            multiprocess_mode="max",
        )
        self.auto_pauses = Counter(
            "exchange_buyer_auto_pauses",
            "Times this process paused a buyer automatically for its errors and timeouts "
            "(exchange.auto_pause).",
            ["buyer"],
            registry=r,
        )
        self.unsolicited = Counter(
            "exchange_buyer_unsolicited_responses",
            "Buyer connections closed for sending bytes no request asked for (a second "
            "response to one request, say); the buyer then gets no keep-alive reuse for a "
            "while, so a stray answer cannot be read as a later one.",
            ["buyer"],
            registry=r,
        )
        self.breaches = Counter(
            "exchange_bid_breaches",
            "Posts a buyer rejected for a reason its vertical does not allow "
            "(reject_reasons_allowed), or for none: binding bids broken.",
            ["buyer"],
            registry=r,
        )

    def start(self, config: Config) -> None:
        for event in CONNECTION_EVENTS:
            self.connections.labels(event)
        for buyer in config.buyers:
            self.wins.labels(buyer.id)
            self.unsolicited.labels(buyer.id)
            self.breaches.labels(buyer.id)
            for bid_outcome in BidOutcome:
                self.requests.labels(buyer.id, Phase.PING.value, bid_outcome.value)
            for post_outcome in PostOutcome:
                self.requests.labels(buyer.id, Phase.POST.value, post_outcome.value)
            self.latency.labels(buyer.id, Phase.PING.value)
            self.latency.labels(buyer.id, Phase.POST.value)


class SaleCollectors:
    """What posts came to: leads sold and unsold, the money on each side, how deep in the
    ping tree a sale was made, returns, and sales the ledger refused."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.sold = Counter("exchange_sales", "Leads sold.", ["vertical"], registry=r)
        self.unsold = Counter(
            "exchange_unsold_posts", "Posts that ended unsold.", ["vertical"], registry=r
        )
        self.revenue = Counter(
            "exchange_revenue_dollars", "Sale prices paid by buyers.", ["buyer"], registry=r
        )
        self.payout = Counter(
            "exchange_payout_dollars", "Payouts owed to sellers.", ["seller"], registry=r
        )
        self.attempts_per_sale = Histogram(
            "exchange_post_attempts_per_sale",
            "Buyers posted to before one accepted (fallback depth + 1).",
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.seller_sales = Counter(
            "exchange_seller_sales", "Sales of the seller's leads.", ["seller"], registry=r
        )
        self.returns = Counter(
            "exchange_returns", "Sold leads returned by buyers.", ["buyer"], registry=r
        )
        self.unrecorded = Counter(
            "exchange_sales_unrecorded",
            "Posts a buyer accepted whose sale the ledger refused to record (the lead went "
            "on down the ping tree; the buyer was not billed). Should stay 0.",
            ["buyer"],
            registry=r,
        )
        self.suppressed = Counter(
            "exchange_leads_suppressed",
            "Posted leads refused, unsold, because a phone or email is on a suppression list "
            "of the vertical (the first list that matched).",
            ["vertical", "list"],
            registry=r,
        )
        # The lead pool (exchange/auction/offers.py). Its gauges are read from the ledger
        # by every process's sweep: the same value whichever process is scraped.
        self.pool_offers = Gauge(
            "exchange_pool_offers", "Open offers in the lead pool.", ["vertical"],
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.pool_oldest_age = Gauge(
            "exchange_pool_oldest_offer_age_seconds",
            "Age of the oldest open offer in the lead pool (0: none).",
            ["vertical"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.pool_entries = Counter(
            "exchange_pool_entries", "Unsold leads offered to the pool.", ["vertical"], registry=r
        )
        self.pool_claims = Counter(
            "exchange_pool_claims", "Pooled leads claimed (each a sale).", ["vertical", "buyer"],
            registry=r,
        )  # fmt: skip
        self.pool_expired = Counter(
            "exchange_pool_expired", "Offers that left the pool unclaimed at max_age_hours.",
            ["vertical"], registry=r,
        )  # fmt: skip
        # Delayed delivery (exchange/auction/delivery.py). The gauge is read from the ledger by
        # every process's release pass: the same value whichever process is scraped.
        self.held = Gauge(
            "exchange_held_leads", "Leads held for buyers off schedule (delayed delivery).",
            ["vertical"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.holds = Counter(
            "exchange_holds",
            "Holds by outcome: held (a lead held), sold (delivered), expired (ended unsold).",
            ["vertical", "outcome"], registry=r,
        )  # fmt: skip

    def start(self, config: Config) -> None:
        for seller in config.sellers:
            self.payout.labels(seller.id)
            self.seller_sales.labels(seller.id)
        for vertical in config.verticals:
            self.sold.labels(vertical)
            self.unsold.labels(vertical)
        for buyer in config.buyers:
            self.revenue.labels(buyer.id)
            self.returns.labels(buyer.id)
        for vertical, settings in config.verticals.items():
            for list_name in settings.suppress:
                self.suppressed.labels(vertical, list_name)
        pooled = [v for v, c in config.verticals.items() if c.pool is not None]
        for vertical in pooled:
            self.pool_offers.labels(vertical)
            self.pool_oldest_age.labels(vertical)
            self.pool_entries.labels(vertical)
            self.pool_expired.labels(vertical)
        for buyer in config.buyers:
            for vertical in set(buyer.verticals) & set(pooled):
                self.pool_claims.labels(vertical, buyer.id)
        for vertical in config.verticals:
            self.held.labels(vertical)
            for outcome in HoldState:
                self.holds.labels(vertical, outcome.value)


class LedgerCollectors:
    """The PostgreSQL ledger: write times, rows written, queued and refused, and whether
    the database answers and the batch writer writes."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.write_seconds = Histogram(
            "exchange_db_write_seconds",
            "Time to write one batch or one sale.",
            ["table"],
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.rows_written = Counter(
            "exchange_db_rows_written", "Ledger rows written.", ["table"], registry=r
        )
        self.queued_rows = Gauge(
            "exchange_db_queue_rows",
            "Ledger rows waiting in the batch queue.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.db_up = Gauge(
            "exchange_db_up",
            "1 when the last database check succeeded.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.writer_up = Gauge(
            "exchange_ledger_writer_up",
            "1 while the batch writer writes; 0 once its rows have failed to write (or one "
            "write has hung) for 2 s: /readyz answers 503 meanwhile.",
            registry=r,
            multiprocess_mode="livemin",
        )
        # The ledger's upkeep (exchange/ledger/retention.py): every process reads the day
        # partitions after each attempt, whichever process did the work.
        self.upkeep_runs = Counter(
            "exchange_ledger_upkeep_runs",
            "Ledger upkeep attempts by outcome: done (this process did the run), skipped "
            "(another process held the lock), failed.",
            ["outcome"],
            registry=r,
        )
        self.partitions_dropped = Counter(
            "exchange_ledger_partitions_dropped",
            "Day partitions dropped past exchange.retention_days, by table.",
            ["table"],
            registry=r,
        )
        self.partitions = Gauge(
            "exchange_ledger_partitions",
            "Day partitions of each partitioned ledger table.",
            ["table"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.partitions_ahead = Gauge(
            "exchange_ledger_partitions_ahead",
            "Day partitions made for the days after today (-1: not even today's, so new rows go "
            "to the default partition).",
            ["table"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.partitions_past_retention = Gauge(
            "exchange_ledger_partitions_past_retention",
            "Day partitions older than exchange.retention_days still kept (unarchived with "
            "archive_before_drop, or their drop failed). Should stay 0.",
            ["table"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.rows_rejected = Counter(
            "exchange_ledger_rows_rejected",
            "Ledger rows PostgreSQL refused (or that could not be encoded), set aside in the "
            "dead-letter table ledger_rejected_rows. Should stay 0.",
            ["table"],
            registry=r,
        )
        for table in LEDGER_TABLES:
            self.rows_rejected.labels(table)


class ProcessCollectors:
    """The process around the auctions: API answers, event-loop lag, worker restarts."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.http_requests = Counter(
            "exchange_http_requests",
            "Seller/operator API answers by route and status code.",
            ["route", "code"],
            registry=r,
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


def worker_restarts(registry: CollectorRegistry | None = None) -> Counter:
    """Workers replaced after exiting on their own. Counted by the ``serve --workers``
    supervisor, which serves no /metrics: with no registry, its count reaches the
    workers' /metrics through the multiprocess files; each worker's own series stays 0."""
    return Counter(
        "exchange_worker_restarts",
        "Workers of serve --workers that exited on their own and were replaced.",
        registry=registry,
    )
