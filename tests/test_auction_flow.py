"""Ping, rank, post, fall back: the auction end to end against real buyers and a real
database."""

from __future__ import annotations

from buyers.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.harness import make_config, realtime_buyer, running_exchange


def spec(buyer_id: str, cents: int, **kw: object) -> SimulatedBuyerSpec:
    return SimulatedBuyerSpec(
        buyer_id, secret=b"s3cret-" + buyer_id.encode(), bid_cents=(cents, cents), **kw
    )  # type: ignore[arg-type]


async def test_highest_bid_wins_and_seller_is_paid_its_share(database_url: str) -> None:
    specs = [spec("low", 1000), spec("high", 2500), spec("mid", 1800)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, s.buyer_id) for s in specs])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            assert answer["status"] == "bid"
            assert answer["price"] == 21.25  # 25.00 x 0.85
            sold = await ex.post(answer["ping_id"])
            assert sold == {"ping_id": answer["ping_id"], "status": "sold", "price": 21.25}
            story = await ex.story(answer["ping_id"])
            assert story["sale"]["buyer"] == "high"
            assert story["sale"]["price"] == 25.0
            assert story["sale"]["payout"] == 21.25
            ranks = {b["buyer"]: b["rank"] for b in story["buyers"]}
            assert ranks == {"high": 1, "mid": 2, "low": 3}
            assert sim.counters("high").accepted == 1
            assert sim.counters("mid").posts == 0
