"""`lead-exchange serve --workers 2`: two processes on one port, one ledger, and one
/metrics that sums what every worker recorded, whichever worker a scrape reaches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from buyers.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.faults import ExchangeProcess
from tests.harness import PING_LEAD, SELLER_KEY, config_text, realtime_buyer

PINGS = 40


@pytest.fixture
async def buyers() -> AsyncIterator[BuyerSimulator]:
    specs = [
        SimulatedBuyerSpec("alpha", bid_cents=(1500, 3000), latency_ms=(1, 5), seed=1),
        SimulatedBuyerSpec("beta", bid_cents=(1000, 2500), latency_ms=(1, 5), seed=2),
    ]
    async with BuyerSimulator(specs, record=False) as sim:
        yield sim


def _pings_counted(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "exchange_pings":
            return sum(s.value for s in family.samples if s.name == "exchange_pings_total")
    return 0.0


async def test_every_workers_metrics_add_up_on_each_scrape(
    tmp_path: Path, buyers: BuyerSimulator, database_url: str
) -> None:
    config = tmp_path / "exchange.yaml"
    config.write_text(config_text([realtime_buyer(buyers, b) for b in buyers.buyer_ids()]))
    exchange = ExchangeProcess(
        config, database_url, tmp_path / "exchange.log", extra_args=["--workers", "2"]
    )
    await exchange.start()
    try:
        # A connection each, so the kernel spreads them over both workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(PINGS):
                async with http.post(
                    exchange.url + "/v1/ping",
                    json={"vertical": "auto_insurance", "lead": PING_LEAD},
                    headers={"Authorization": f"Bearer {SELLER_KEY}"},
                ) as response:
                    assert response.status == 200, await response.text()
            # Workers hand their counts over at least every second; then every scrape,
            # whichever worker answers it, has them all.
            give_up = time.monotonic() + 10
            counted: list[float] = []
            while time.monotonic() < give_up:
                async with http.get(exchange.url + "/metrics") as response:
                    assert response.status == 200
                    counted.append(_pings_counted(await response.text()))
                if counted[-5:] == [PINGS] * 5:
                    break
                await asyncio.sleep(0.2)
    finally:
        exchange.signal(15)
        await exchange.wait(30)
    assert counted[-5:] == [PINGS] * 5, (counted, exchange.log_tail())
