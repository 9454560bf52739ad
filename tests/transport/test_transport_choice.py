"""The buyer transport the config names drives the auction: deadline, fallback and sale.
There is one, `h1`; a config still naming the removed `aiohttp` one is refused at load."""

from __future__ import annotations

import asyncio

import pytest

from exchange.app import build_transport
from exchange.config import ConfigError
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from exchange.transport.h1 import H1Transport
from tests.support.harness import make_config, realtime_buyer, running_exchange


async def test_config_picks_the_transport() -> None:
    default = build_transport(make_config([]))
    named = build_transport(make_config([], exchange={"transport": "h1"}))
    try:
        assert isinstance(default, H1Transport)
        assert isinstance(named, H1Transport)
    finally:
        await default.close()
        await named.close()


def test_a_config_naming_the_removed_aiohttp_transport_is_refused_at_load() -> None:
    with pytest.raises(ConfigError) as refused:
        make_config([], exchange={"transport": "aiohttp"})
    [problem] = refused.value.problems
    assert problem.startswith("test.yaml: exchange.transport: ")
    assert "aiohttp buyer transport was removed" in problem


async def test_the_transport_holds_the_deadline_and_falls_back(database_url: str) -> None:
    specs = [
        SimulatedBuyerSpec("hangs", secret=b"s-hangs", bid_cents=(9000, 9000), hang_rate=1.0),
        SimulatedBuyerSpec("rejects", secret=b"s-rejects", bid_cents=(3000, 3000),
                           reject_rate=1.0),
        SimulatedBuyerSpec("accepts", secret=b"s-accepts", bid_cents=(2000, 2000)),
    ]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        config = make_config(
            [realtime_buyer(sim, s.buyer_id) for s in specs],
            exchange={"tmax_ms": 150, "transport": "h1"},
        )
        async with running_exchange(config, database_url) as ex:
            loop = asyncio.get_running_loop()
            started = loop.time()
            answer = await ex.ping()
            assert loop.time() - started < 0.15 + 0.05
            assert answer["price"] == 25.5
            sold = await ex.post(answer["ping_id"])
            assert sold["price"] == 17.0
            story = await ex.story(answer["ping_id"])
            outcomes = {b["buyer"]: b["outcome"] for b in story["buyers"]}
            assert outcomes == {"hangs": "timeout", "rejects": "bid", "accepts": "bid"}
