"""Deferred metric updates (Metrics.inc_later / observe_later) end up exactly as direct
prometheus_client updates would: same buckets, counts and sums on the exposition."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exchange.core.outcomes import BidOutcome
from exchange.telemetry.metrics import EXPOSITION_SLICE, LATENCY_BUCKETS, Metrics
from exchange.transport.base import TransportStats

# On bucket bounds, between them, below the first, beyond the last (+Inf) and zero.
VALUES = [0.0, 0.0005, 0.001, 0.0010001, 0.02, 0.25, 0.2500001, 1.0, 9.99, 10.0, 11.0, 500.0]


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, tuple[object, ...]], float]:
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_deferred_observations_match_direct_observe_bucket_for_bucket() -> None:
    deferred = Metrics()
    direct_registry = CollectorRegistry()
    direct = Histogram(
        "exchange_buyer_latency_seconds", "x", ["buyer", "phase"], buckets=LATENCY_BUCKETS,
        registry=direct_registry,
    )  # fmt: skip
    for value in VALUES * 3:
        deferred.observe_later(deferred.latency_histogram("b1", "ping"), value)
        direct.labels("b1", "ping").observe(value)
    name = "exchange_buyer_latency_seconds"
    assert _samples(deferred.registry, name) != _samples(direct_registry, name)  # not yet
    deferred.apply_pending()
    assert _samples(deferred.registry, name) == _samples(direct_registry, name)


def test_deferred_increments_add_up_and_apply_once() -> None:
    deferred = Metrics()
    direct_registry = CollectorRegistry()
    direct = Counter("exchange_buyer_wins", "x", ["buyer"], registry=direct_registry)
    for buyer in ["a", "b", "a", "a"]:
        deferred.inc_later(deferred.child(deferred.wins, buyer))
        direct.labels(buyer).inc()
    deferred.apply_pending()
    deferred.apply_pending()  # nothing left to apply: no double counting
    name = "exchange_buyer_wins"
    assert _samples(deferred.registry, name) == _samples(direct_registry, name)


async def test_exposition_applies_what_is_pending() -> None:
    metrics = Metrics()
    metrics.inc_later(metrics.child(metrics.wins, "b7"), 3)
    text = (await metrics.exposition()).decode()
    assert 'exchange_buyer_wins_total{buyer="b7"} 3.0' in text


def _busy_metrics(buyers: int) -> Metrics:
    """Every series of ``buyers`` buyers, with values in them (and a label value that
    needs escaping)."""
    metrics = Metrics()
    ids = [f"buyer-{i}" for i in range(buyers)] + ['odd "quoted" \\ buyer']
    for i, buyer in enumerate(ids):
        for outcome in BidOutcome:
            metrics.buyer_pinged(buyer, outcome, VALUES[i % len(VALUES)])
        metrics.inc_later(metrics.child(metrics.wins, buyer), i)
    metrics.apply_pending()
    return metrics


async def test_the_sliced_exposition_is_byte_for_byte_the_librarys() -> None:
    metrics = _busy_metrics(40)
    sliced = await metrics.exposition()
    assert sliced == generate_latest(metrics.registry)
    assert sliced.count(b"# TYPE exchange_buyer_latency_seconds ") == 1
    assert b"_created" not in sliced  # not exported at all


async def test_a_large_scrape_lets_the_event_loop_run_between_slices() -> None:
    """A scrape of thousands of series must not hold every auction in flight for the
    whole rendering: other tasks run between its slices, several times."""
    metrics = _busy_metrics(100)
    ran_meanwhile = 0
    scraping = True

    async def other_work() -> None:
        nonlocal ran_meanwhile
        while scraping:
            ran_meanwhile += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_work())
    await asyncio.sleep(0)
    start = ran_meanwhile
    text = await metrics.exposition()
    scraping = False
    await other
    lines = text.count(b"\n")
    assert lines > 10 * EXPOSITION_SLICE
    assert ran_meanwhile - start >= lines // EXPOSITION_SLICE


def test_a_buyers_ping_outcomes_and_latencies_match_direct_updates() -> None:
    deferred = Metrics()
    direct_registry = CollectorRegistry()
    requests = Counter(
        "exchange_buyer_requests", "x", ["buyer", "phase", "outcome"], registry=direct_registry
    )
    latency = Histogram(
        "exchange_buyer_latency_seconds", "x", ["buyer", "phase"], buckets=LATENCY_BUCKETS,
        registry=direct_registry,
    )  # fmt: skip
    calls = [
        ("a", BidOutcome.BID, 5100), ("a", BidOutcome.TIMEOUT, 250_000),
        ("b", BidOutcome.FILTERED, None), ("a", BidOutcome.BID, 1000), ("b", "no_bid", 20),
    ]  # fmt: skip
    for buyer, outcome, latency_us in calls * 2:
        deferred.buyer_pinged(buyer, outcome, latency_us)
        requests.labels(buyer, "ping", str(outcome)).inc()
        if latency_us is not None:
            latency.labels(buyer, "ping").observe(latency_us / 1e6)
    deferred.inc_later(deferred.request_counter("a", "ping", "bid"))  # the general path too
    requests.labels("a", "ping", "bid").inc()
    deferred.apply_pending()
    deferred.apply_pending()
    for name in ("exchange_buyer_requests", "exchange_buyer_latency_seconds"):
        assert _samples(deferred.registry, name) == _samples(direct_registry, name)
    assert (
        _samples(deferred.registry, "exchange_buyer_requests")[
            (
                "exchange_buyer_requests_total",
                (("buyer", "a"), ("outcome", "bid"), ("phase", "ping")),
            )
        ]
        == 5
    )


def test_buyer_connection_counts_come_from_the_transport_once_each() -> None:
    metrics = Metrics()
    stats = TransportStats()
    metrics.watch_transport(stats)
    stats.requests_sent, stats.connections_opened = 10, 2
    metrics.apply_pending()
    stats.requests_sent, stats.connections_opened = 15, 3
    metrics.apply_pending()
    metrics.apply_pending()  # nothing new
    samples = _samples(metrics.registry, "exchange_buyer_connections")
    assert samples == {
        ("exchange_buyer_connections_total", (("event", "opened"),)): 3,
        ("exchange_buyer_connections_total", (("event", "reused"),)): 12,
    }
