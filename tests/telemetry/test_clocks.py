"""Times taken are measured on a high-resolution clock, not read off the event loop's: a
buyer that answers within a millisecond is recorded as the fraction of a millisecond it
took, in the auction record and in exchange_buyer_latency_seconds, and an auction's
overhead is a real, positive part of its duration. The exchange runs as `lead-exchange
serve`, on uvloop, whose loop clock has millisecond resolution and is read once per loop
iteration (what these numbers were taken from before)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from buyers.adapter import HttpRequest
from exchange.transport.base import deliver
from exchange.transport.h1 import H1Transport
from tests.support.faults import ExchangeProcess, RawBuyer, RawRequest, response_head
from tests.support.harness import ADMIN_TOKEN, PING_LEAD, SELLER_KEY, config_text

BID = b'{"bid": 12.50}'
AUCTIONS = 12


async def _answer_at_once(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
    head = response_head(
        200, ("Content-Type", "application/json"), ("Content-Length", str(len(BID)))
    )
    writer.write(head + BID)
    return True


@pytest.fixture
async def quick_buyer() -> AsyncIterator[RawBuyer]:
    async with RawBuyer(_answer_at_once) as buyer:
        yield buyer


async def test_the_transport_times_an_answer_from_its_request_written_to_its_last_byte(
    quick_buyer: RawBuyer,
) -> None:
    transport = H1Transport()
    request = HttpRequest("POST", quick_buyer.url(), (), b"{}")
    try:
        sent = [await deliver(transport, request, 1.0, buyer="quick") for _ in range(5)]
    finally:
        await transport.close()
    for delivery in sent:
        assert delivery.response is not None
        assert delivery.latency_us == delivery.response.elapsed_us
        assert delivery.latency_us > 0
    assert min(d.latency_us for d in sent) < 1000


@pytest.fixture
async def exchange(
    tmp_path: Path, database_url: str, quick_buyer: RawBuyer
) -> AsyncIterator[ExchangeProcess]:
    buyer = {
        "id": "quick",
        "verticals": ["auto_insurance"],
        "ping_url": quick_buyer.url("/ping"),
        "post_url": quick_buyer.url("/post"),
        "secret": "quick-buyer-secret-0123456789",
    }
    config = tmp_path / "exchange.yaml"
    config.write_text(config_text([buyer]))
    process = ExchangeProcess(config, database_url, tmp_path / "exchange.log")
    await process.start()
    try:
        yield process
    finally:
        process.signal(signal.SIGTERM)
        try:
            await process.wait(30)
        finally:
            process.kill()


async def _auctions(url: str) -> list[Any]:
    stories = []
    async with aiohttp.ClientSession() as http:
        for _ in range(AUCTIONS):
            async with http.post(
                url + "/v1/ping",
                json={"vertical": "auto_insurance", "lead": PING_LEAD},
                headers={"Authorization": f"Bearer {SELLER_KEY}"},
            ) as response:
                assert response.status == 200, await response.text()
                ping_id = (await response.json())["ping_id"]
            async with http.get(
                f"{url}/v1/auctions/{ping_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ) as response:
                assert response.status == 200, await response.text()
                stories.append(await response.json())
    return stories


async def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_buyer_answering_within_a_millisecond_is_recorded_under_one(
    exchange: ExchangeProcess,
) -> None:
    stories = await _auctions(exchange.url)
    latencies = []
    for story in stories:
        (row,) = story["buyers"]
        assert row["outcome"] == "bid"
        latencies.append(row["latency_ms"])
    assert all(latency > 0 for latency in latencies), latencies
    # A loopback buyer answering at once takes a few hundred microseconds; on a busy
    # machine some answers take longer, so the fastest is what is asserted.
    assert min(latencies) < 1.0, latencies

    series = await _metrics(exchange.url)
    labels = (("buyer", "quick"), ("phase", "ping"))
    count = series[("exchange_buyer_latency_seconds_count", labels)]
    bucket = tuple(sorted((*labels, ("le", "0.001"))))
    under_1ms = series[("exchange_buyer_latency_seconds_bucket", bucket)]
    assert count == AUCTIONS
    assert under_1ms == sum(1 for latency in latencies if latency <= 1.0) > 0
    assert series[("exchange_buyer_latency_seconds_sum", labels)] == pytest.approx(
        sum(latencies) / 1000, rel=0.01
    )


async def test_an_auctions_overhead_is_a_positive_part_of_its_duration(
    exchange: ExchangeProcess,
) -> None:
    stories = await _auctions(exchange.url)
    for story in stories:
        duration, overhead = story["duration_ms"], story["overhead_ms"]
        (row,) = story["buyers"]
        assert isinstance(duration, float) and isinstance(overhead, float)
        assert 0 < overhead < duration, story
        # The buyer's time is inside the auction's.
        assert 0 < row["latency_ms"] < duration, story

    series = await _metrics(exchange.url)
    vertical = (("vertical", "auto_insurance"),)
    assert series[("exchange_auction_overhead_seconds_count", vertical)] == AUCTIONS
    assert series[("exchange_auction_overhead_seconds_sum", vertical)] > 0
