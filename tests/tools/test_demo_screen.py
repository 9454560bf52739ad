"""The demo's figures and screen, from fixed data: percentiles from the exchange's
histogram buckets as Prometheus computes them, who is named the limit, and a frame that
shows the exchange's figures apart from the sellers', the buyers and the last auctions."""

from __future__ import annotations

import random

import pytest
from rich.console import Console

from exchange.tools.demo_figures import (
    ExchangeFigures,
    Scrape,
    SellerFigures,
    bucket_bound,
    bucket_quantile,
    buyer_rows,
    findings,
)
from exchange.tools.demo_latency import LatencyTally
from exchange.tools.demo_screen import AuctionRow, Snapshot, plain_line, screen, summary_lines

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)


def _exposition(auctions: int, slow: int, misses: int, refused: int, bids: int) -> str:
    """An exchange's /metrics: ``auctions`` answered, ``slow`` of them in 250-500 ms."""
    fast = auctions - slow
    counts = {0.05: 0, 0.1: fast, 0.25: fast, 0.5: auctions, 1.0: auctions}
    lines = ["# TYPE exchange_auction_duration_seconds histogram"]
    for le in BUCKETS:
        lines.append(f'exchange_auction_duration_seconds_bucket{{le="{le}",vertical="v"}} '
                     f"{counts[le]}")  # fmt: skip
    lines += [
        f'exchange_auction_duration_seconds_bucket{{le="+Inf",vertical="v"}} {auctions}',
        f'exchange_auction_duration_seconds_count{{vertical="v"}} {auctions}',
        f'exchange_auction_duration_seconds_sum{{vertical="v"}} {auctions * 0.1}',
        "# TYPE exchange_deadline_misses counter",
        f'exchange_deadline_misses_total{{vertical="v"}} {misses}',
        "# TYPE exchange_http_requests counter",
        f'exchange_http_requests_total{{code="503",route="/v1/ping"}} {refused}',
        f'exchange_http_requests_total{{code="200",route="/v1/ping"}} {auctions}',
        "# TYPE exchange_overload_refusals counter",
        f'exchange_overload_refusals_total{{reason="inflight"}} {refused}',
        "# TYPE exchange_tmax_seconds gauge",
        "exchange_tmax_seconds 0.5",
        "# TYPE exchange_buyer_requests counter",
        f'exchange_buyer_requests_total{{buyer="b1",outcome="bid",phase="ping"}} {bids}',
        'exchange_buyer_requests_total{buyer="b1",outcome="timeout",phase="ping"} 3',
        'exchange_buyer_requests_total{buyer="b1",outcome="filtered",phase="ping"} 7',
        'exchange_buyer_requests_total{buyer="b1",outcome="accepted",phase="post"} 6',
        'exchange_buyer_requests_total{buyer="b1",outcome="rejected",phase="post"} 2',
        "# TYPE exchange_buyer_wins counter",
        f'exchange_buyer_wins_total{{buyer="b1"}} {bids // 2}',
        "# TYPE exchange_revenue_dollars counter",
        f'exchange_revenue_dollars_total{{buyer="b1"}} {bids * 0.25}',
        "# TYPE exchange_buyer_cap_remaining_leads gauge",
        'exchange_buyer_cap_remaining_leads{buyer="b1",window="hour"} 17',
    ]
    return "\n".join(lines) + "\n"


def test_percentiles_from_buckets_interpolate_as_prometheus_does() -> None:
    cumulative = {0.1: 10.0, 0.2: 20.0, float("inf"): 20.0}
    assert bucket_quantile(50, cumulative) == 0.1
    assert bucket_quantile(75, cumulative) == pytest.approx(0.15)
    assert bucket_quantile(99, {0.1: 10.0, float("inf"): 20.0}) == 0.1  # past the last bound
    assert bucket_quantile(50, {0.1: 0.0, float("inf"): 0.0}) is None
    # What the demo shows: the bound the percentile is at most, never above the data.
    assert bucket_bound(75, cumulative) == 0.2 and bucket_bound(50, cumulative) == 0.1


def test_exchange_figures_are_the_difference_between_two_scrapes() -> None:
    first = Scrape.parse(_exposition(100, 0, 1, 0, 50), at=10.0)
    last = Scrape.parse(_exposition(300, 100, 4, 5, 150), at=20.0)
    figures = ExchangeFigures.between(first, last)
    assert figures.auctions == 200 and figures.per_second == 20.0
    assert figures.past_tmax == 3 and figures.answered_503 == 5
    assert figures.refusals == {"inflight": 5}
    assert figures.tmax_ms == 500.0
    # 100 of the 200 new auctions took 250-500 ms: the median is at the 100 ms bound.
    assert figures.duration_ms.p50 == 100.0
    assert figures.duration_ms.p99 is not None and 250.0 < figures.duration_ms.p99 <= 500.0
    (row,) = buyer_rows(first, last, {"b1": "xml"})
    assert (row.format, row.bids, row.wins, row.timeouts) == ("xml", 100, 50, 0)
    assert row.pings == 100  # called: bids and timeouts; the filtered were not called
    assert row.accept_rate is None  # no post since the first scrape
    assert [(cap.window, cap.leads) for cap in row.caps] == [("hour", 17)]


def test_latency_tally_percentiles_are_within_two_percent_and_survive_json() -> None:
    rng = random.Random(7)
    values = sorted(rng.uniform(0.5, 900.0) for _ in range(5000))
    tally = LatencyTally()
    for value in values:
        tally.add(value)
    again = LatencyTally.from_json(tally.to_json())
    for percent in (50, 95, 99):
        exact = values[int(len(values) * percent / 100) - 1]
        assert abs(again.percentile(percent) - exact) <= exact * 0.021  # type: ignore[operator]
    band = sum(1 for v in values if 800.0 / 1.02 < v <= 800.0 * 1.02)
    assert abs(again.above(800.0) - sum(1 for v in values if v > 800.0)) <= band


def _sellers(wait_ms: float, asked: int = 500, sent: int = 500) -> SellerFigures:
    wait, ping = LatencyTally(), LatencyTally()
    for _ in range(sent):
        wait.add(wait_ms)
        ping.add(wait_ms + 200.0)
    return SellerFigures(seconds=10.0, asked=asked, sent=sent, answered=sent, wait=wait,
                         ping=ping, codes={"200": sent})  # fmt: skip


def test_a_slow_demo_client_is_named_the_limit_not_the_exchange() -> None:
    cores = {"exchange": 0.3, "buyers": 0.2, "sellers": 0.97, "database": 0.1, "machine": 1.6}
    found = findings(cores, 2, _sellers(wait_ms=1800.0), None)
    assert [f.limit for f in found] == [True]
    assert found[0].text.startswith("the demo's seller client is the bottleneck")
    assert "exchange's own figures do not" in found[0].text


def test_busy_buyers_and_a_full_machine_are_named_and_a_quiet_run_says_so() -> None:
    busy = {"exchange": 0.5, "buyers": 0.9, "sellers": 0.1, "database": 0.2, "machine": 1.9}
    texts = [f.text for f in findings(busy, 2, _sellers(wait_ms=1.0), None)]
    assert texts[0].startswith("the simulated buyers are saturated")
    assert texts[1].startswith("the machine is full (1.9 of 2 cores busy, 0.2 of them")
    quiet = {"exchange": 0.2, "buyers": 0.1, "sellers": 0.1, "database": 0.1, "machine": 0.6}
    (only,) = findings(quiet, 2, _sellers(wait_ms=1.0), None)
    assert not only.limit and only.text.startswith("nothing here is saturated")


def _snapshot() -> Snapshot:
    first = Scrape.parse(_exposition(0, 0, 0, 0, 0), at=0.0)
    last = Scrape.parse(_exposition(500, 20, 0, 0, 400), at=10.0)
    exchange = ExchangeFigures.between(first, last)
    sellers = _sellers(wait_ms=0.4)
    cores = {"exchange": 0.25, "buyers": 0.1, "sellers": 0.1, "database": 0.05, "screen": 0.02,
             "machine": 0.6}  # fmt: skip
    story = {"buyers": [{"buyer": "b1", "outcome": "bid", "rank": 1},
                        {"buyer": "b2", "outcome": "timeout", "rank": None}],
             "sale": {"buyer": "b1"}, "duration_ms": 212.5}  # fmt: skip
    recent = [AuctionRow("12:00:01", "acme-media", "01a2-ping", "bid", "12.5", "sold", "12.50",
                         None, 214.0, story)]  # fmt: skip
    return Snapshot(
        url="http://127.0.0.1:8080", rate=50.0, buyer_count=8, data_dir="/tmp/demo",
        admin_token="token-1", elapsed_s=10.0, tmax_ms=500.0,
        exchange_window=exchange, exchange_total=exchange, sellers_window=sellers,
        sellers_total=sellers, cores_window=cores, cores_total=cores, cpus=2,
        findings_window=findings(cores, 2, sellers, exchange),
        findings_total=findings(cores, 2, sellers, exchange),
        buyers=buyer_rows(first, last, {"b1": "form"}), recent=recent,
        example_ping_id="01a2-ping",
    )  # fmt: skip


def test_the_screen_shows_each_source_under_its_name() -> None:
    console = Console(record=True, width=130, height=48, color_system=None)
    console.print(screen(_snapshot(), width=130))
    text = console.export_text()
    assert "the exchange's own figures (its /metrics)" in text
    assert "≤100/≤100/≤500" in text  # its duration percentiles, as bucket bounds
    assert "what the sellers measured (end to end, this client included)" in text
    assert "who is the limit" in text and "nothing here is saturated" in text
    story = "curl -s -H 'Authorization: Bearer token-1' http://127.0.0.1:8080/v1/auctions/01a2-ping"
    assert story in text
    assert "/metrics" in text
    assert "b1" in text and "form" in text and "hour 17" in text and "$100.00" in text
    assert "bid $12.50, sold" in text and "1 of 2" in text and "212" in text


def test_plain_line_and_summary_keep_the_exchange_apart_from_the_sellers() -> None:
    snap = _snapshot()
    line = plain_line(snap)
    assert line.index("| exchange: 50.0 auctions/s") < line.index("| sellers: ")
    summary = summary_lines(snap)
    assert summary[0].startswith("summary: ran 10 s at 50 leads/s asked")
    assert summary[1].startswith("the exchange (its /metrics): 500 auctions;")
    assert summary[2].startswith("the lead pool: 0 unsold leads entered it, 0 were claimed")
    assert summary[3].startswith("the sellers (end to end, in the demo's client): ")
    assert summary[4].startswith("CPU (mean cores): exchange 0.25")
    assert summary[5].startswith("limit: none; nothing here is saturated")
