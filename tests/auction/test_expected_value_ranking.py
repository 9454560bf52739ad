"""Expected-value ranking and binding bids through a running exchange: p(accept) learnt from
the ledger's post attempts and shared by every process, what the auction record shows of
it, and breaches counted in the record, the buyer report and the metrics."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

import yaml

from exchange.auction.acceptance import refresh
from exchange.config import ConfigError, parse_config
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    Exchange,
    config_text,
    realtime_buyer,
    running_exchange,
)


def spec(buyer_id: str, cents: int, **kw: Any) -> SimulatedBuyerSpec:
    return SimulatedBuyerSpec(
        buyer_id, secret=b"s3cret-" + buyer_id.encode(), bid_cents=(cents, cents), **kw
    )


def config(buyers: list[dict[str, Any]], **vertical: Any) -> str:
    doc = yaml.safe_load(config_text(buyers))
    doc["verticals"]["auto_insurance"].update(vertical)
    return yaml.safe_dump(doc, sort_keys=False)


async def learn(ex: Exchange) -> None:
    """This process's post attempts written, and its view of p(accept) read back."""
    ctx = ex.ctx
    await ctx.writer.flush()
    await refresh(ctx.acceptance, ctx.store, ctx.loaded.config, ctx.clock.now())


async def sell(ex: Exchange) -> dict[str, Any]:
    ping = await ex.ping()
    await ex.post(ping["ping_id"])
    story: dict[str, Any] = await ex.story(ping["ping_id"])
    return story


def ranked(story: dict[str, Any]) -> list[str]:
    rows = sorted((b for b in story["buyers"] if b["rank"]), key=lambda b: b["rank"])
    return [b["buyer"] for b in rows]


async def test_a_high_bidder_that_rejects_falls_below_an_honest_buyer_as_its_posts_are_recorded(
    database_url: str,
) -> None:
    specs = [spec("inflated", 3000, reject_rate=1.0), spec("honest", 2200)]
    async with BuyerSimulator(specs) as sim:
        text = config([realtime_buyer(sim, s.buyer_id) for s in specs], ranking="expected_value")
        async with running_exchange(text, database_url) as ex:
            first = await sell(ex)
            # No history: both at the prior (8 of 10), so the higher bid leads.
            assert first["ranking"] == "expected_value"
            assert ranked(first) == ["inflated", "honest"]
            top = first["buyers"][0]
            assert (top["buyer"], top["p_accept"], top["expected_value"]) == (
                "inflated", 0.8, 24.0
            )  # fmt: skip
            assert first["price"] == 30.0  # the quote: the top of the ranking
            for _ in range(4):
                await sell(ex)
            await learn(ex)
            # inflated: 8 / (10 + 5) = 0.533 -> 16.00; honest: 13 / 15 = 0.867 -> 19.06.
            later = await sell(ex)
            assert ranked(later) == ["honest", "inflated"]
            rows = {b["buyer"]: b for b in later["buyers"]}
            assert rows["honest"]["p_accept"] == round(13 / 15, 6)
            assert rows["honest"]["expected_value"] == 19.06
            assert rows["inflated"]["expected_value"] == 16.0
            assert later["price"] == 22.0
            assert later["sale"]["price"] == 22.0
            assert [a["buyer"] for a in later["post_attempts"]] == ["honest"]


async def test_price_ranking_keeps_the_highest_bid_first_whatever_its_record(
    database_url: str,
) -> None:
    specs = [spec("inflated", 3000, reject_rate=1.0), spec("honest", 2200)]
    async with BuyerSimulator(specs) as sim:
        text = config([realtime_buyer(sim, s.buyer_id) for s in specs])
        async with running_exchange(text, database_url) as ex:
            for _ in range(5):
                await sell(ex)
            await learn(ex)
            story = await sell(ex)
            assert story["ranking"] == "price"
            assert ranked(story) == ["inflated", "honest"]
            # The record still shows what expected value would have done.
            rows = {b["buyer"]: b for b in story["buyers"]}
            assert rows["inflated"]["p_accept"] == round(8 / 15, 6)


async def test_every_process_sharing_the_ledger_ranks_with_the_same_acceptance(
    database_url: str,
) -> None:
    specs = [spec("inflated", 3000, reject_rate=1.0), spec("honest", 2200)]
    async with BuyerSimulator(specs) as sim:
        text = config([realtime_buyer(sim, s.buyer_id) for s in specs], ranking="expected_value")
        async with (
            running_exchange(text, database_url) as first,
            running_exchange(text, database_url) as second,
        ):
            for _ in range(5):
                await sell(first)
            await first.ctx.writer.flush()
            await learn(second)
            assert ranked(await sell(second)) == ["honest", "inflated"]


async def test_breaches_are_counted_exactly_under_concurrent_posts(database_url: str) -> None:
    specs = [spec("breaker", 3000, reject_rate=1.0), spec("backfill", 1000)]
    leads = 60
    async with BuyerSimulator(specs) as sim:
        buyers = [realtime_buyer(sim, "breaker"), realtime_buyer(sim, "backfill")]
        text = config(buyers, reject_reasons_allowed=["duplicate", "out_of_area"])
        async with running_exchange(text, database_url) as ex:

            async def direct_post(i: int) -> Any:
                status, body, _ = await ex.call(
                    "POST", "/v1/leads",
                    {"vertical": "auto_insurance", "lead": FULL_LEAD, "external_id": f"x{i}"},
                )  # fmt: skip
                assert status == 200, body
                return body

            answers = await asyncio.gather(*(direct_post(i) for i in range(leads)))
            assert {a["status"] for a in answers} == {"sold"}
            status, report, _ = await ex.call("GET", "/v1/reports/buyers", key=ADMIN_TOKEN)
            assert status == 200
            by_buyer = {r["buyer"]: r for r in report["buyers"]}
            assert by_buyer["breaker"]["breaches"] == leads
            assert by_buyer["backfill"]["breaches"] == 0
            assert _metric(await _metrics(ex), "breaker") == leads
            story = await ex.story(answers[0]["ping_id"])
            attempts = [(a["buyer"], a["outcome"], a["breach"]) for a in story["post_attempts"]]
            assert attempts == [("breaker", "rejected", True), ("backfill", "accepted", False)]
            # A breach is a reject: it lowers the buyer's p(accept) like any other.
            await learn(ex)
            rates = ex.ctx.acceptance.rates("auto_insurance", ex.ctx.loaded.config)
            assert rates.of("breaker") == Fraction(0 + 8, leads + 10)
            assert rates.of("backfill") == Fraction(leads + 8, leads + 10)


async def test_a_reject_for_an_allowed_reason_is_not_a_breach(database_url: str) -> None:
    specs = [spec("picky", 3000, reject_rate=1.0), spec("backfill", 1000)]
    async with BuyerSimulator(specs) as sim:
        buyers = [realtime_buyer(sim, "picky"), realtime_buyer(sim, "backfill")]
        text = config(buyers, reject_reasons_allowed=["Simulated Reject"])
        async with running_exchange(text, database_url) as ex:
            story = await sell(ex)
            assert [(a["buyer"], a["breach"]) for a in story["post_attempts"]] == [
                ("picky", False), ("backfill", False)
            ]  # fmt: skip
            assert _metric(await _metrics(ex), "picky") == 0


async def test_without_reject_reasons_allowed_bids_are_not_binding(database_url: str) -> None:
    specs = [spec("picky", 3000, reject_rate=1.0), spec("backfill", 1000)]
    async with BuyerSimulator(specs) as sim:
        text = config([realtime_buyer(sim, "picky"), realtime_buyer(sim, "backfill")])
        async with running_exchange(text, database_url) as ex:
            story = await sell(ex)
            assert [a["breach"] for a in story["post_attempts"]] == [False, False]


async def _metrics(ex: Exchange) -> str:
    async with ex.http.get(ex.url + "/metrics") as response:
        return await response.text()


def _metric(text: str, buyer: str) -> float:
    prefix = f'exchange_bid_breaches_total{{buyer="{buyer}"}} '
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return float(line[len(prefix) :])


async def test_first_bid_sells_to_the_first_bid_at_the_floor_and_cancels_the_others(
    database_url: str,
) -> None:
    specs = [
        spec("fast", 1000),
        spec("cheap", 100),  # under the seller's 2.00 floor: does not end the wait
        spec("slow", 3000, latency_ms=(400.0, 400.0)),
    ]
    async with BuyerSimulator(specs) as sim:
        text = config([realtime_buyer(sim, s.buyer_id) for s in specs], auction="first_bid")
        async with running_exchange(text, database_url) as ex:
            ping = await ex.ping()
            assert ping["price"] == 8.5  # 10.00 x 0.85: speed over price
            sold = await ex.post(ping["ping_id"])
            assert sold["status"] == "sold"
            story = await ex.story(ping["ping_id"])
            rows = {b["buyer"]: b for b in story["buyers"]}
            assert (rows["fast"]["outcome"], rows["fast"]["rank"]) == ("bid", 1)
            assert rows["cheap"]["outcome"] == "below_floor"
            assert rows["slow"]["outcome"] == "cancelled"
            assert rows["slow"]["reason"] == "another buyer bid first"
            assert rows["slow"]["rank"] is None
            assert [a["buyer"] for a in story["post_attempts"]] == ["fast"]


def test_weight_on_a_real_time_buyer_needs_the_weighted_tie_breaker() -> None:
    buyer = {"id": "rt", "verticals": ["auto_insurance"], "ping_url": "http://127.0.0.1:9/p",
             "post_url": "http://127.0.0.1:9/q", "weight": 3}  # fmt: skip
    try:
        parse_config(config([buyer]), "test.yaml", env={})
    except ConfigError as exc:
        assert "buyers[0].weight" in str(exc)
    else:
        raise AssertionError("a real-time buyer's weight was silently ignored")
    doc = yaml.safe_load(config([buyer]))
    doc["exchange"]["tie_breakers"] = ["company_size", "weighted"]
    loaded = parse_config(yaml.safe_dump(doc), "test.yaml", env={})
    assert loaded.config.buyers[0].weight == 3
