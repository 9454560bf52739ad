"""Deferred metric updates (exchange/telemetry/batching.py) end up exactly as direct
prometheus_client updates would: same buckets, counts and sums on the exposition; and the
prometheus_client private attributes they rely on are still what they were."""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import version
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exchange.core.outcomes import BidOutcome, Overload, PingStatus
from exchange.telemetry.batching import Pending, Tally, labelled_series, with_series
from exchange.telemetry.collectors import LATENCY_BUCKETS, OVERHEAD_BUCKETS
from exchange.telemetry.exposition import EXPOSITION_SLICE
from exchange.telemetry.metrics import Metrics
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
        "exchange_auction_overhead_seconds", "x", ["vertical"], buckets=OVERHEAD_BUCKETS,
        registry=direct_registry,
    )  # fmt: skip
    for value in VALUES * 3:
        deferred.record_ping_answer("s1", "auto", PingStatus.BID, 0.01, value, False)
        direct.labels("auto").observe(value)
    name = "exchange_auction_overhead_seconds"
    assert _samples(deferred.registry, name) != _samples(direct_registry, name)  # not yet
    deferred.apply_pending()
    assert _samples(deferred.registry, name) == _samples(direct_registry, name)


def test_deferred_increments_add_up_and_apply_once() -> None:
    deferred = Metrics()
    direct_registry = CollectorRegistry()
    direct = Counter("exchange_buyer_wins", "x", ["buyer"], registry=direct_registry)
    for buyer in ["a", "b", "a", "a"]:
        deferred.record_auction(buyer, [])
        direct.labels(buyer).inc()
    deferred.apply_pending()
    deferred.apply_pending()  # nothing left to apply: no double counting
    name = "exchange_buyer_wins"
    assert _samples(deferred.registry, name) == _samples(direct_registry, name)


async def test_exposition_applies_what_is_pending() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.record_overload(Overload.LOOP_LAG)
    text = (await metrics.exposition()).decode()
    assert 'exchange_overload_refusals_total{reason="loop_lag"} 3.0' in text


def _busy_metrics(buyers: int) -> Metrics:
    """Every series of ``buyers`` buyers, with values in them (and a label value that
    needs escaping)."""
    metrics = Metrics()
    ids = [f"buyer-{i}" for i in range(buyers)] + ['odd "quoted" \\ buyer']
    for i, buyer in enumerate(ids):
        latency_us = int(VALUES[i % len(VALUES)] * 1e6)
        metrics.record_auction(None, [(buyer, outcome, latency_us) for outcome in BidOutcome])
        for _ in range(i):
            metrics.record_auction(buyer, [])
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
    # A buyer screened out, or bidding a fixed price (latency 0), was not called: its
    # outcome counts, its latency does not.
    auction = [
        ("a", BidOutcome.BID, 5100), ("a", BidOutcome.TIMEOUT, 250_000),
        ("b", BidOutcome.FILTERED, None), ("b", BidOutcome.CAPPED, 300), ("b", "no_bid", 20),
        ("c", BidOutcome.BID, 0),
    ]  # fmt: skip
    observed = [("a", 5100), ("a", 250_000), ("b", 20)]
    for _ in range(2):
        deferred.record_auction("a", auction)
        for buyer, outcome, _ in auction:
            requests.labels(buyer, "ping", str(outcome)).inc()
        for buyer, latency_us in observed:
            latency.labels(buyer, "ping").observe(latency_us / 1e6)
    deferred.record_auction(None, [("a", BidOutcome.BID, 1000)])
    requests.labels("a", "ping", "bid").inc()
    latency.labels("a", "ping").observe(0.001)
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
        == 3
    )
    assert deferred.registry.get_sample_value("exchange_buyer_wins_total", {"buyer": "a"}) == 2


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


def test_pending_updates_apply_as_plain_counter_and_histogram_calls_would() -> None:
    """The one place that writes prometheus_client's private attributes: a histogram's
    buckets, sum and count after ``Pending.apply`` equal what as many ``observe`` calls
    give, values on bucket bounds included, for every bucket layout the exchange uses."""
    for buckets in (LATENCY_BUCKETS, OVERHEAD_BUCKETS, (1, 2, 3, 4, 5, 7, 10, 15, 20)):
        deferred_registry, direct_registry = CollectorRegistry(), CollectorRegistry()
        deferred = Histogram("h", "x", ["k"], buckets=buckets, registry=deferred_registry)
        direct = Histogram("h", "x", ["k"], buckets=buckets, registry=direct_registry)
        counted = Counter("c", "x", ["k"], registry=deferred_registry)
        direct_count = Counter("c", "x", ["k"], registry=direct_registry)
        pending = Pending()
        values = [*VALUES, *(float(b) for b in buckets), -1.0, 0.5 * float(buckets[0])]
        for value in values:
            pending.observe(deferred.labels("v"), value)
            direct.labels("v").observe(value)
            pending.inc(counted.labels("v"), 2.5)
            direct_count.labels("v").inc(2.5)
        pending.apply()
        pending.apply()
        assert generate_latest(deferred_registry) == generate_latest(direct_registry)


def test_prometheus_client_still_has_the_private_attributes_relied_on() -> None:
    """exchange/telemetry/batching.py names what it reads and writes inside
    prometheus_client; an upgrade that renames or reshapes any of it fails here, naming
    the installed version, before the metrics go quietly wrong."""
    installed = f"prometheus_client {version('prometheus_client')}"
    histogram = Histogram("h", "x", ["k"], buckets=(0.1, 1.0), registry=CollectorRegistry())
    child = histogram.labels("v")
    for name in ("_upper_bounds", "_buckets", "_sum"):
        assert hasattr(child, name), f"{installed}: a histogram child has no {name}"
    assert list(child._upper_bounds) == [0.1, 1.0, float("inf")], installed
    assert len(child._buckets) == len(child._upper_bounds), installed
    for name in ("_metrics", "_lock"):
        assert hasattr(histogram, name), f"{installed}: a labelled metric has no {name}"
    # Buckets are kept per bound, not cumulative: the count is their total.
    tally = Tally(child)
    tally.add(0.5)
    tally.add(0.5)
    tally.apply()
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.collect()[0].samples}
    assert samples[("h_bucket", "0.1")] == 0, installed
    assert samples[("h_bucket", "1.0")] == 2, installed
    assert samples[("h_count", None)] == 2 and samples[("h_sum", None)] == 1.0, installed
    # A copy holding some of the children renders just those, in creation order.
    histogram.labels("w")
    histogram.labels("x")
    series = labelled_series(histogram)
    assert [labels for labels, _ in series] == [("v",), ("w",), ("x",)], installed
    part = with_series(histogram, series[1:])
    rendered = {s.labels["k"] for s in part.collect()[0].samples}
    assert rendered == {"w", "x"}, f"{installed}: collect() does not render only _metrics"
    assert {s.labels["k"] for s in histogram.collect()[0].samples} == {"v", "w", "x"}


def test_outside_telemetry_metrics_are_driven_only_by_record_events() -> None:
    """The rest of the exchange says what happened (``metrics.record_sale(...)``); no module
    outside exchange/telemetry/ picks a collector or its labels itself."""
    root = Path(__file__).resolve().parents[2]
    reaching = re.compile(r"\.labels\(|metrics\.(auction|buyers|sales|ledger|process)\b|metrics\._")
    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for package in ("exchange", "buyers")
        for path in sorted((root / package).rglob("*.py"))
        if "telemetry" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if reaching.search(line)
    ]
    assert not found, "\n".join(found)
