"""The exchange's metrics, driven by event: one ``record_*`` method per thing that
happened (an auction ran, a ping was answered, a post attempt, a sale, ...). Callers
say what happened in the domain's words; which series that moves, and whether it is
applied at once or deferred, is decided here.

The collectors themselves (names, help texts, labels, buckets) are in
exchange/telemetry/collectors.py; the deferred updates in batching.py; the scrape's
rendering in exposition.py.

Deferred or at once: the auction path (a ping's auction and answer, the in-flight gauge,
overload refusals, API answers, ledger flushes, event-loop lag) records into plain dicts,
applied to the series by ``apply_pending``: before every exposition, and every second
from the app (so other workers' scrapes see them too). Posts, sales, returns and gauges
set from outside the auctions update their series at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from exchange.core.config import Config
from exchange.core.holds import HoldState
from exchange.core.money import cents_to_dollars
from exchange.core.outcomes import CALLED_OUTCOMES, Overload, Phase, PingStatus, PostOutcome
from exchange.ledger.retention import Upkeep
from exchange.telemetry import exposition
from exchange.telemetry.batching import Child, Pending, Tally
from exchange.telemetry.collectors import (
    AuctionCollectors,
    BuyerCollectors,
    LedgerCollectors,
    ProcessCollectors,
    SaleCollectors,
    collectors_of,
)
from exchange.transport.base import TransportStats

# One buyer's part in one auction: its id, its outcome (a BidOutcome, or its word) and
# the microseconds it took to answer. The latency is observed only for a buyer that was
# called (exchange.core.outcomes.CALLED_OUTCOMES) and took time (a fixed price takes 0).
BuyerPinged = tuple[str, str, int | None]

_PING = Phase.PING.value
_POST = Phase.POST.value


class Metrics:
    """Every collector of one exchange, registered on one registry, and the events that
    move them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.auction = AuctionCollectors(self.registry)
        self.buyers = BuyerCollectors(self.registry)
        self.sales = SaleCollectors(self.registry)
        self.ledger = LedgerCollectors(self.registry)
        self.process = ProcessCollectors(self.registry)
        groups = (self.auction, self.buyers, self.sales, self.ledger, self.process)
        # Every collector, in the order the registry renders them (exposition).
        self._collectors = [c for group in groups for c in collectors_of(group)]
        self._children: dict[tuple[Any, tuple[str, ...]], Child] = {}
        self._pending = Pending()
        # The busiest series, one per buyer per auction: keyed by plain (buyer, outcome)
        # and buyer ids, resolved to their children when applied.
        self._buyer_pings: dict[tuple[str, str], int] = {}
        self._buyer_ping_latency: dict[str, Tally] = {}
        # A ping answer's four series, by (seller, vertical, status): one look-up a ping.
        self._answer_series: dict[tuple[str, str, PingStatus], tuple[Child, ...]] = {}
        # Auctions in progress, copied to the gauge by apply_pending (the gauge's own
        # inc/dec take a lock each, twice per ping).
        self._inflight = 0
        self._transport = _TransportCounts(self.buyers)

    def _series(self, metric: Any, *labels: str) -> Child:
        """``metric.labels(*labels)``, resolved once per label set: ``labels()`` costs
        about 1.5 us, and the auction path asks for a dozen children per buyer."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    # The auction path: deferred.

    def record_auction_started(self) -> None:
        self._inflight += 1

    def record_auction_finished(self) -> None:
        self._inflight -= 1

    def record_auction(self, winner: str | None, buyers: Iterable[BuyerPinged]) -> None:
        """An auction ranked its bids: the buyer ranked first (None with no bids), and
        each buyer's outcome (``exchange_buyer_requests_total``, phase ping) and, when it
        was called, its latency (``exchange_buyer_latency_seconds``)."""
        if winner is not None:
            self._pending.inc(self._series(self.buyers.wins, winner))
        pings = self._buyer_pings
        latencies = self._buyer_ping_latency
        for buyer, outcome, latency_us in buyers:
            key = (buyer, outcome)
            pings[key] = pings.get(key, 0) + 1
            if latency_us and outcome in CALLED_OUTCOMES:
                tally = latencies.get(buyer)
                if tally is None:
                    tally = latencies[buyer] = Tally(
                        self._series(self.buyers.latency, buyer, _PING)
                    )
                tally.add(latency_us / 1e6)

    def record_ping_answer(
        self,
        seller: str,
        vertical: str,
        status: PingStatus,
        duration_s: float,
        overhead_s: float,
        missed_deadline: bool,
    ) -> None:
        """A ping's answer is ready (its auction on record): its status, the time from
        the ping to the answer, the part of it not spent waiting on buyers, and whether
        it came later than the deadline allows."""
        key = (seller, vertical, status)
        series = self._answer_series.get(key)
        if series is None:
            auction = self.auction
            series = self._answer_series[key] = (
                self._series(auction.pings, seller, vertical, status.value),
                self._series(auction.duration, vertical),
                self._series(auction.overhead, vertical),
                self._series(auction.deadline_misses, vertical),
            )
        answered, duration, overhead, misses = series
        pending = self._pending
        pending.inc(answered)
        pending.observe(duration, duration_s)
        pending.observe(overhead, overhead_s)
        if missed_deadline:
            pending.inc(misses)

    def record_lead_score(self, vertical: str, score: int) -> None:
        """A ping of a vertical that scores its leads was scored (0-100)."""
        self._pending.observe(self._series(self.auction.lead_score, vertical), score)

    def record_overload(self, reason: Overload) -> None:
        """A ping or direct post answered 503 for overload."""
        self._pending.inc(self._series(self.auction.overload_refusals, reason.value))

    def record_http_answer(self, route: str, code: int) -> None:
        """The API answered ``code`` on ``route`` (a route template, never a raw path)."""
        self._pending.inc(self._series(self.process.http_requests, route, str(code)))

    def record_lag(self, seconds: float) -> None:
        self._pending.observe(self.process.loop_lag, seconds)

    def record_flush(self, table: str, rows: int, seconds: float) -> None:
        """The batch writer wrote ``rows`` rows of ``table`` in one batch."""
        self._pending.observe(self._series(self.ledger.write_seconds, table), seconds)
        self._pending.inc(self._series(self.ledger.rows_written, table), rows)

    # Posts, sales and the rest: at once.

    def record_post_attempt(self, buyer: str, outcome: PostOutcome, latency_us: int) -> None:
        """A post offered to one buyer (or skipped: not called, no latency)."""
        self._series(self.buyers.requests, buyer, _POST, outcome.value).inc()
        if outcome is not PostOutcome.SKIPPED:
            self._series(self.buyers.latency, buyer, _POST).observe(latency_us / 1e6)

    def record_bid_breach(self, buyer: str) -> None:
        """The buyer rejected a post for a reason its vertical does not allow: a binding
        bid broken (exchange/core/verdicts.py ``is_breach``)."""
        self.buyers.breaches.labels(buyer).inc()

    def record_sale(
        self,
        seller: str,
        buyer: str,
        vertical: str,
        price_cents: int,
        payout_cents: int,
        attempts: int,
        write_s: float,
    ) -> None:
        """A sale on record: ``attempts`` buyers were posted to for it, and writing it to
        the ledger took ``write_s``."""
        sales = self.sales
        self.ledger.write_seconds.labels("sales").observe(write_s)
        sales.sold.labels(vertical).inc()
        sales.revenue.labels(buyer).inc(float(cents_to_dollars(price_cents)))
        sales.payout.labels(seller).inc(float(cents_to_dollars(payout_cents)))
        sales.seller_sales.labels(seller).inc()
        sales.attempts_per_sale.observe(attempts)

    def record_sale_unrecorded(self, buyer: str) -> None:
        """The buyer accepted a post whose sale the ledger refused."""
        self.sales.unrecorded.labels(buyer).inc()

    def record_unsold(self, vertical: str) -> None:
        self.sales.unsold.labels(vertical).inc()

    def record_suppressed(self, vertical: str, list_name: str) -> None:
        """A posted lead refused for being on ``list_name`` (a name from the config)."""
        self.sales.suppressed.labels(vertical, list_name).inc()

    def record_return(self, buyer: str) -> None:
        self.sales.returns.labels(buyer).inc()

    def record_pool_entry(self, vertical: str) -> None:
        """An unsold lead entered its vertical's pool."""
        self.sales.pool_entries.labels(vertical).inc()

    def record_pool_claim(
        self, seller: str, buyer: str, vertical: str, price_cents: int, payout_cents: int
    ) -> None:
        """A pooled lead claimed: a sale like any other (no post attempts behind it)."""
        sales = self.sales
        sales.pool_claims.labels(vertical, buyer).inc()
        sales.sold.labels(vertical).inc()
        sales.revenue.labels(buyer).inc(float(cents_to_dollars(price_cents)))
        sales.payout.labels(seller).inc(float(cents_to_dollars(payout_cents)))
        sales.seller_sales.labels(seller).inc()

    def record_pool_expired(self, vertical: str, offers: int) -> None:
        self.sales.pool_expired.labels(vertical).inc(offers)

    def record_hold(self, vertical: str, outcome: HoldState) -> None:
        """A lead held for buyers off schedule (``held``), or its hold's end."""
        self.sales.holds.labels(vertical, outcome.value).inc()

    def record_held_leads(self, verticals: Iterable[str], held: Mapping[str, int]) -> None:
        """Leads held now in each of ``verticals`` (the configured ones), as the ledger
        has them by vertical (a vertical absent: none)."""
        for vertical in verticals:
            self.sales.held.labels(vertical).set(held.get(vertical, 0))

    def record_pool_size(self, vertical: str, offers: int, oldest_age_s: float) -> None:
        """The vertical's open offers and the oldest one's age, as the ledger has them."""
        self.sales.pool_offers.labels(vertical).set(offers)
        self.sales.pool_oldest_age.labels(vertical).set(oldest_age_s)

    def record_rejected(self, table: str, rows: int) -> None:
        """The ledger refused ``rows`` rows of ``table`` (now dead letters)."""
        self._series(self.ledger.rows_rejected, table).inc(rows)

    # Gauges, set when read or checked.

    def record_buyers_paused(self, paused: dict[str, bool]) -> None:
        """Which buyers the live settings in force have paused (all of them, each time)."""
        for buyer, is_paused in paused.items():
            self.buyers.paused.labels(buyer).set(1 if is_paused else 0)

    def record_auto_pause(self, buyer: str) -> None:
        self.buyers.auto_pauses.labels(buyer).inc()

    def record_cap_left(self, buyer: str, window: str, leads: int) -> None:
        self.buyers.cap_remaining.labels(buyer, window).set(leads)

    def record_budget_left(self, buyer: str, window: str, cents: int) -> None:
        self.buyers.budget_remaining.labels(buyer, window).set(float(cents_to_dollars(cents)))

    def record_ledger_queue(self, rows: int) -> None:
        self.ledger.queued_rows.set(rows)

    def record_ledger_writing(self, writing: bool) -> None:
        self.ledger.writer_up.set(1 if writing else 0)

    def record_database_up(self, up: bool) -> None:
        self.ledger.db_up.set(1 if up else 0)

    def record_ledger_upkeep(self, upkeep: Upkeep) -> None:
        """An upkeep attempt of this process, and the day partitions it read after it."""
        self.ledger.upkeep_runs.labels(upkeep.outcome).inc()
        if upkeep.run is not None:
            for dropped in upkeep.run.dropped:
                self.ledger.partitions_dropped.labels(dropped.table).inc()
        if upkeep.days is None:
            return
        for table, days in upkeep.days.items():
            self.ledger.partitions.labels(table).set(len(days))
            self.ledger.partitions_ahead.labels(table).set(upkeep.days_ahead(table) or 0)
            self.ledger.partitions_past_retention.labels(table).set(
                upkeep.past_retention(table) or 0
            )

    # Lifecycle.

    def start_series(self, config: Config) -> None:
        """Create every config-labelled series at zero, so the first event of each is a
        visible increase (Prometheus cannot see the first sample of a new series rise)."""
        self.auction.start(config)
        self.sales.start(config)
        self.buyers.start(config)

    def watch_transport(self, stats: TransportStats) -> None:
        """Report the buyer transport's requests and opened connections (as
        exchange_buyer_connections_total), and its connections closed for unsolicited
        bytes (exchange_buyer_unsolicited_responses_total), whenever pending updates are
        applied. The transport counts those per buyer id the exchange gave it: ids from
        the config."""
        self._transport.watch(stats)

    def apply_pending(self) -> None:
        """Everything deferred to its series (each update once)."""
        self.auction.inflight.set(self._inflight)
        self._transport.apply()
        pings, self._buyer_pings = self._buyer_pings, {}
        latencies, self._buyer_ping_latency = self._buyer_ping_latency, {}
        self._pending.apply()
        requests = self.buyers.requests
        for (buyer, outcome), amount in pings.items():
            self._series(requests, buyer, _PING, outcome).inc(amount)
        for tally in latencies.values():
            tally.apply()

    async def exposition(self) -> bytes:
        """The text format of every metric, with what is pending applied first, rendered
        in slices with the event loop free in between (exchange/telemetry/exposition.py)."""
        self.apply_pending()
        return await exposition.render(self._collectors)


class _TransportCounts:
    """The buyer transport's own running counts, and what of them the series hold."""

    def __init__(self, buyers: BuyerCollectors) -> None:
        self._buyers = buyers
        self._stats: TransportStats | None = None
        self._seen = (0, 0)  # requests sent, connections opened
        self._unsolicited_seen: dict[str, int] = {}

    def watch(self, stats: TransportStats) -> None:
        self._stats = stats
        self._seen = (0, 0)
        self._unsolicited_seen = {}

    def apply(self) -> None:
        stats = self._stats
        if stats is None:
            return
        sent, opened = stats.requests_sent, stats.connections_opened
        seen_sent, seen_opened = self._seen
        self._seen = (sent, opened)
        new_opened = opened - seen_opened
        reused = (sent - seen_sent) - new_opened
        if new_opened > 0:
            self._buyers.connections.labels("opened").inc(new_opened)
        if reused > 0:
            self._buyers.connections.labels("reused").inc(reused)
        if stats.unsolicited:
            seen = self._unsolicited_seen
            for buyer, count in stats.unsolicited.items():
                new = count - seen.get(buyer, 0)
                if new > 0:
                    seen[buyer] = count
                    self._buyers.unsolicited.labels(buyer).inc(new)
