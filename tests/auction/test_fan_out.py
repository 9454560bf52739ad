"""The fan-out on its own: real buyers on loopback, the real transport."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from buyers.adapter import BuyerEndpoint, HttpRequest, PingOffer
from buyers.json_adapter import JsonAdapter
from exchange.auction.context import Clock
from exchange.auction.pinging import _fan_out
from exchange.core.outcomes import BidOutcome
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from exchange.transport.h1 import H1Transport

OFFER = PingOffer("9a1f3c1e-2b7d-4d6e-8f00-0123456789ab", "auto_insurance", 250, 100,
                  {"state": "CA", "zip": "90210"})  # fmt: skip


class _BrokenAdapter:
    def ping_request(self, offer: PingOffer, timestamp: int) -> HttpRequest:
        raise KeyError("a field this adapter expected")


def _buyer(buyer_id: str, adapter: Any) -> Any:
    return SimpleNamespace(rules=SimpleNamespace(buyer_id=buyer_id), adapter=adapter,
                           timeout_ms=None)  # fmt: skip


async def test_an_adapter_that_raises_costs_its_buyer_not_the_auction() -> None:
    spec = SimulatedBuyerSpec("good", bid_cents=(1500, 1500))
    async with BuyerSimulator([spec]) as sim:
        url = sim.ping_url("good")
        good = JsonAdapter(BuyerEndpoint("good", url, url, b""))
        transport = H1Transport()
        ctx = cast(Any, SimpleNamespace(transport=transport, clock=Clock()))
        try:
            deadline = asyncio.get_running_loop().time() + 1.0
            buyers = [_buyer("broken", _BrokenAdapter()), _buyer("good", good)]
            calls = (await _fan_out(ctx, buyers, OFFER, deadline)).calls
        finally:
            await transport.close()
    by_id = {call.buyer_id: call for call in calls}
    assert by_id["broken"].outcome is BidOutcome.ERROR
    assert by_id["broken"].reason == "adapter failed: KeyError"
    assert (by_id["good"].outcome, by_id["good"].price_cents) == (BidOutcome.BID, 1500)
