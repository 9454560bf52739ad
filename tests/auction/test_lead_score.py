"""The lead score end to end: computed on every ping, sent to buyers, filtered on, a
floor, kept in the auction record and averaged in the seller report. Real exchange,
real database, real loopback buyers."""

from __future__ import annotations

from typing import Any

import asyncpg
import yaml

from exchange.config import parse_config
from exchange.core.config import LoadedConfig
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    ADMIN_TOKEN,
    PING_LEAD,
    Exchange,
    config_text,
    realtime_buyer,
    running_exchange,
)

RULES = [
    {"field": "credit_rating", "in": ["excellent", "good"], "points": 40},
    {"field": "age", "gte": 25, "points": 20},
    {"field": "state", "in": ["CA"], "points": 30},
    {"field": "credit_rating", "in": ["poor"], "points": -30},
]
# PING_LEAD (good credit, 34, CA) scores 90; these score 60, 30 and 0.
SCORE_60 = {**PING_LEAD, "state": "TX"}
SCORE_30 = {**PING_LEAD, "credit_rating": "fair", "age": 20}
SCORE_0 = {**PING_LEAD, "state": "TX", "credit_rating": "poor", "age": 20}


def spec(buyer_id: str, cents: int) -> SimulatedBuyerSpec:
    return SimulatedBuyerSpec(buyer_id, secret=f"s-{buyer_id}".encode(), bid_cents=(cents, cents))


def scored_config(buyers: list[dict[str, Any]], **vertical: Any) -> LoadedConfig:
    doc = yaml.safe_load(config_text(buyers))
    doc["verticals"]["auto_insurance"].update({"score": RULES, **vertical})
    return parse_config(yaml.safe_dump(doc), "score.yaml", env={})


def outcomes(story: dict[str, Any]) -> dict[str, str]:
    return {b["buyer"]: b["outcome"] for b in story["buyers"]}


async def test_buyers_get_the_score_in_the_ping_and_the_record_keeps_it(database_url: str) -> None:
    async with BuyerSimulator([spec("judge", 1200)]) as sim:
        config = scored_config([realtime_buyer(sim, "judge")])
        async with running_exchange(config, database_url) as ex:
            for lead, score in ((PING_LEAD, 90), (SCORE_60, 60), (SCORE_30, 30), (SCORE_0, 0)):
                sim.clear()
                answer = await ex.ping(lead)
                body = sim.received("judge")[0].body
                assert body["score"] == score and "score" not in body["lead"]
                assert list(body) == ["ping_id", "vertical", "tmax_ms", "floor", "score", "lead"]
                assert (await ex.story(answer["ping_id"]))["score"] == score
                assert (await stored_score(database_url, answer["ping_id"])) == score
            async with ex.http.get(ex.url + "/metrics") as response:
                exposition = await response.text()
            lines = exposition.splitlines()
            assert 'exchange_lead_score_count{vertical="auto_insurance"} 4.0' in lines
            assert 'exchange_lead_score_sum{vertical="auto_insurance"} 180.0' in lines
            assert 'exchange_lead_score_bucket{le="0.0",vertical="auto_insurance"} 1.0' in lines
            assert 'exchange_lead_score_bucket{le="60.0",vertical="auto_insurance"} 3.0' in lines


async def test_an_unscored_vertical_sends_and_keeps_no_score(database_url: str) -> None:
    async with BuyerSimulator([spec("judge", 1200)]) as sim:
        doc = yaml.safe_load(config_text([realtime_buyer(sim, "judge")]))
        config = parse_config(yaml.safe_dump(doc), "plain.yaml", env={})
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            assert "score" not in sim.received("judge")[0].body
            assert (await ex.story(answer["ping_id"]))["score"] is None
            assert (await seller_row(ex))["avg_score"] is None


async def test_a_buyer_filtering_on_the_score_sees_only_leads_that_pass(database_url: str) -> None:
    async with BuyerSimulator([spec("picky", 2000), spec("anyone", 1000)]) as sim:
        buyers = [
            realtime_buyer(sim, "picky", filters={"score": {"gte": 60}}),
            realtime_buyer(sim, "anyone"),
        ]
        async with running_exchange(scored_config(buyers), database_url) as ex:
            low = await ex.ping(SCORE_30)
            assert low["price"] == 8.5  # anyone's 10.00 at the 0.85 share
            story = await ex.story(low["ping_id"])
            assert outcomes(story) == {"picky": "filtered", "anyone": "bid"}
            reason = next(b["reason"] for b in story["buyers"] if b["buyer"] == "picky")
            assert "score" in reason
            high = await ex.ping(SCORE_60)
            assert high["price"] == 17.0
            assert len(sim.received("picky")) == 1


async def test_the_score_floor_drops_bids_under_it_and_buyers_are_told_the_floor(
    database_url: str,
) -> None:
    floors = [{"gte": 80, "floor": 15.00}, {"gte": 50, "floor": 8.00}]
    async with BuyerSimulator([spec("ten", 1000)]) as sim:
        config = scored_config([realtime_buyer(sim, "ten")], floor_by_score=floors)
        async with running_exchange(config, database_url) as ex:
            top = await ex.ping(PING_LEAD)  # 90: floor 15.00 beats the seller's 2.00
            assert top["status"] == "no_bid"
            assert sim.received("ten")[-1].body["floor"] == 15.0
            assert outcomes(await ex.story(top["ping_id"])) == {"ten": "below_floor"}
            middle = await ex.ping(SCORE_60)  # 60: floor 8.00
            assert middle["status"] == "bid" and middle["price"] == 8.5
            assert sim.received("ten")[-1].body["floor"] == 8.0
            low = await ex.ping(SCORE_30)  # 30: no score floor, the seller's 2.00 stands
            assert low["status"] == "bid"
            assert sim.received("ten")[-1].body["floor"] == 2.0


async def test_the_seller_report_averages_scores_exactly_per_seller_and_sub_id(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("judge", 1200)]) as sim:
        config = scored_config([realtime_buyer(sim, "judge")])
        async with running_exchange(config, database_url) as ex:
            for lead, sub_id in ((PING_LEAD, "a"), (SCORE_60, "a"), (SCORE_60, "b"),
                                 (SCORE_0, None)):  # fmt: skip
                await ex.ping(lead, **({"sub_id": sub_id} if sub_id else {}))
            # (90 + 60 + 60 + 0) / 4 = 52.5; sub-ID a: 75.0, b: 60.0, none: 0.0.
            assert (await seller_row(ex))["avg_score"] == 52.5
            status, body, _ = await ex.call("GET", "/v1/reports/sellers?by=sub_id", key=ADMIN_TOKEN)
            assert status == 200, body
            by_sub = {r["sub_id"]: r["avg_score"] for r in body["sellers"]}
            assert by_sub == {"a": 75.0, "b": 60.0, None: 0.0}
            await ex.ping(SCORE_30, sub_id="b")  # b: (60 + 30) / 2 = 45.0; all: 240 / 5
            assert (await seller_row(ex))["avg_score"] == 48.0
            _, body, _ = await ex.call("GET", "/v1/reports/sellers?by=sub_id", key=ADMIN_TOKEN)
            assert {r["sub_id"]: r["avg_score"] for r in body["sellers"]}["b"] == 45.0


async def test_an_average_is_rounded_to_one_decimal_half_up(database_url: str) -> None:
    async with BuyerSimulator([spec("judge", 1200)]) as sim:
        config = scored_config([realtime_buyer(sim, "judge")])
        async with running_exchange(config, database_url) as ex:
            for lead in (PING_LEAD, *[SCORE_0] * 7):  # 90 / 8 = 11.25: 11.3, not 11.2
                await ex.ping(lead)
            assert (await seller_row(ex))["avg_score"] == 11.3
            await ex.ping(SCORE_60)  # 150 / 9 = 16.66...
            assert (await seller_row(ex))["avg_score"] == 16.7
            await ex.ctx.store.rebuild_rollups()  # the rollups rebuilt from the rows agree
            assert (await seller_row(ex))["avg_score"] == 16.7


async def seller_row(ex: Exchange) -> dict[str, Any]:
    status, body, _ = await ex.call("GET", "/v1/reports/sellers", key=ADMIN_TOKEN)
    assert status == 200, body
    return next(r for r in body["sellers"] if r["seller"] == "acme-media")


async def stored_score(database_url: str, ping_id: str) -> int | None:
    conn = await asyncpg.connect(database_url)
    try:
        score: int | None = await conn.fetchval(
            "SELECT score FROM pings WHERE ping_id = $1::uuid", ping_id
        )
        return score
    finally:
        await conn.close()
