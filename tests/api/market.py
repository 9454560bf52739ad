"""The market the seller-scoped API tests run (auction search, self-service, sub-IDs): two
sellers with keys of their own, each test's simulated buyers bidding in real time, and
the exchange running over them on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    OTHER_SELLER_KEY,
    SELLER_KEY,
    Exchange,
    make_config,
    realtime_buyer,
    running_exchange,
)

# No floor and every vertical for both, unlike the harness' default sellers.
SELLERS: list[dict[str, Any]] = [
    {"id": "acme-media", "api_key": SELLER_KEY, "payout_share": 0.85},
    {"id": "other-seller", "api_key": OTHER_SELLER_KEY, "payout_share": 0.8},
]


@asynccontextmanager
async def running_market(
    database_url: str,
    specs: Sequence[SimulatedBuyerSpec],
    buyers: Mapping[str, Mapping[str, Any]] | None = None,
    sellers: Sequence[Mapping[str, Any]] = SELLERS,
) -> AsyncIterator[Exchange]:
    """An exchange with ``sellers`` and a real-time buyer per spec, in the specs' order,
    each with the config keys ``buyers`` gives its id (filters, api_key, ...)."""
    async with BuyerSimulator(specs) as sim:
        config = make_config(
            [realtime_buyer(sim, s.buyer_id, **(buyers or {}).get(s.buyer_id, {})) for s in specs],
            sellers=sellers,
        )
        async with running_exchange(config, database_url) as ex:
            yield ex
