"""Delayed delivery end to end: a lead only off-schedule buyers could take is held
(the seller hears ``queued``), then posted when one of them opens (the exchange's test
clock moved forward), against real buyers and a real database, across a restart."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import yaml

from exchange.config import parse_config
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    SELLER_KEY,
    Exchange,
    config_text,
    make_config,
    running_exchange,
)

PII_KEY = base64.b64encode(bytes(range(32))).decode()
EXCHANGE = {"pii_key": PII_KEY}


def spec(buyer_id: str, cents: int = 1500, **kw: Any) -> SimulatedBuyerSpec:
    # No signature check: the exchange's clock is moved hours ahead to open schedules,
    # and its signed timestamps with it, which a buyer would refuse as stale.
    return SimulatedBuyerSpec(buyer_id, bid_cents=(cents, cents), **kw)


def opens_in_two_hours() -> dict[str, Any]:
    """A schedule closed now that opens in two hours and stays open for two more."""
    now = datetime.now(UTC)
    start, end = now + timedelta(hours=2), now + timedelta(hours=4)
    return {"timezone": "UTC", "start": f"{start:%H}:00", "end": f"{end:%H}:00"}


def fixed_buyer(sim: BuyerSimulator, buyer_id: str, price: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": buyer_id, "verticals": ["auto_insurance"], "price": price,
        "post_url": sim.post_url(buyer_id), "secret": "s3cret-" + buyer_id, **extra,
    }  # fmt: skip


def delayed(sim: BuyerSimulator, buyer_id: str, price: float, hours: int = 12) -> dict[str, Any]:
    return fixed_buyer(
        sim, buyer_id, price, schedule=opens_in_two_hours(), delayed={"hold_hours": hours}
    )


async def direct_post(ex: Exchange, **extra: Any) -> dict[str, Any]:
    status, body, _ = await ex.call(
        "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": FULL_LEAD, **extra}
    )
    assert status == 200, body
    return dict(body)


async def settled(ex: Exchange, ping_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
    """The auction record once its post is no longer queued."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    while True:
        story = dict(await ex.story(ping_id))
        if story["post"]["status"] != "queued" or loop.time() > give_up:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)  # the delivery's last post attempt is noted after its sale
    return dict(await ex.story(ping_id))


async def test_a_lead_only_off_schedule_buyers_could_take_is_queued_then_sold_when_one_opens(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("late")]) as sim:
        config = make_config([delayed(sim, "late", 14.0)], exchange=EXCHANGE)
        async with running_exchange(config, database_url) as ex:
            answer = await direct_post(ex, external_id="held-1")
            assert answer == {"ping_id": answer["ping_id"], "status": "queued", "price": None}
            ping_id = answer["ping_id"]
            story = await ex.story(ping_id)
            assert story["post"]["status"] == "queued"
            assert story["hold"]["state"] == "held"
            assert [b["buyer"] for b in story["hold"]["buyers"]] == ["late"]
            assert story["sale"] is None
            await asyncio.sleep(1.5)  # a release pass or two: the buyer is still closed
            assert sim.counters("late").posts == 0

            ex.ctx.clock.advance(timedelta(hours=3))
            story = await settled(ex, ping_id)
            assert story["post"]["status"] == "sold"
            assert story["sale"]["buyer"] == "late"
            assert story["sale"]["price"] == 14.0
            assert story["sale"]["payout"] == 11.9  # 14.00 x 0.85
            assert story["hold"]["state"] == "sold"
            assert story["hold"]["buyer"] == "late"
            assert story["hold"]["delivery_attempts"] == 1
            assert [a["outcome"] for a in story["post_attempts"]] == ["accepted"]
            posted = [r.body for r in sim.received("late") if r.path == "/post"]
            assert len(posted) == 1
            assert posted[0]["lead"]["first_name"] == FULL_LEAD["first_name"]
            assert posted[0]["price"] == 14.0
            # The seller's repeat hears the final outcome.
            again = await direct_post(ex, external_id="held-1")
            assert again["status"] == "sold" and again["price"] == 11.9
            _, metrics, _ = await ex.call("GET", "/metrics", key=None)
            text = metrics.decode()
            for outcome, count in (("held", 1), ("sold", 1), ("expired", 0)):
                series = f'exchange_holds_total{{outcome="{outcome}",vertical="auto_insurance"}}'
                assert f"{series} {count}.0" in text
            assert 'exchange_held_leads{vertical="auto_insurance"} 0.0' in text
        db = await asyncpg.connect(database_url)
        try:
            row = await db.fetchrow("SELECT state, pii, pii_key_id FROM held_leads")
            sales = await db.fetchval("SELECT count(*) FROM sales")
        finally:
            await db.close()
        assert row is not None and row["state"] == "sold"
        assert row["pii"] is None and row["pii_key_id"] is None  # purged once delivered
        assert sales == 1


async def test_a_held_lead_is_delivered_by_a_new_exchange_after_a_restart(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("late")]) as sim:
        config = make_config([delayed(sim, "late", 9.0)], exchange=EXCHANGE)
        async with running_exchange(config, database_url) as first:
            ping_id = (await direct_post(first))["ping_id"]
        db = await asyncpg.connect(database_url)
        try:
            sealed = await db.fetchval("SELECT pii FROM held_leads")
        finally:
            await db.close()
        assert sealed is not None and str(FULL_LEAD["last_name"]).encode() not in sealed
        async with running_exchange(config, database_url) as second:
            second.ctx.clock.advance(timedelta(hours=3))
            story = await settled(second, ping_id)
            assert story["post"]["status"] == "sold"
            assert story["sale"]["buyer"] == "late"
            assert sim.counters("late").accepted == 1


async def test_a_rejecting_delayed_buyer_passes_the_held_lead_to_the_next_open_one(
    database_url: str,
) -> None:
    specs = [spec("picky", reject_rate=1.0), spec("keen")]
    async with BuyerSimulator(specs) as sim:
        buyers = [delayed(sim, "picky", 20.0), delayed(sim, "keen", 10.0)]
        async with running_exchange(make_config(buyers, exchange=EXCHANGE), database_url) as ex:
            ping_id = (await direct_post(ex))["ping_id"]
            ex.ctx.clock.advance(timedelta(hours=3))
            story = await settled(ex, ping_id)
            assert story["sale"]["buyer"] == "keen"
            assert [(a["buyer"], a["outcome"]) for a in story["post_attempts"]] == [
                ("picky", "rejected"),
                ("keen", "accepted"),
            ]
            assert story["hold"]["tried"] == ["picky", "keen"]
            assert sim.counters("picky").posts == 1


async def test_a_delayed_buyer_capped_when_it_opens_is_offered_the_held_lead_once_its_cap_has_room(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("late")]) as sim:
        buyer = {**delayed(sim, "late", 14.0, hours=30), "caps": {"daily": 1}}
        async with running_exchange(make_config([buyer], exchange=EXCHANGE), database_url) as ex:
            leads = [(await direct_post(ex, external_id=f"capped-{n}"))["ping_id"] for n in (1, 2)]
            ex.ctx.clock.advance(timedelta(hours=3))  # it opens: one lead today, by its cap
            for _ in range(150):  # up to 15 s for the first delivery
                if sim.counters("late").posts:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.5)  # a few more delivery passes, the cap full
            stories = [await ex.story(ping_id) for ping_id in leads]
            sold = [s for s in stories if s["post"]["status"] == "sold"]
            assert len(sold) == 1 and sold[0]["sale"]["buyer"] == "late"
            second = next(s["ping_id"] for s in stories if s["post"]["status"] != "sold")
            waiting = await ex.story(second)
            assert waiting["post"]["status"] == "queued"
            assert waiting["hold"]["state"] == "held"
            assert waiting["hold"]["tried"] == []  # capped is not tried: it waits its turn
            assert sim.counters("late").posts == 1

            ex.ctx.clock.advance(timedelta(days=1))  # the same hours the next day: room again
            story = await settled(ex, second)
            assert story["post"]["status"] == "sold"
            assert story["sale"]["buyer"] == "late"
            assert sim.counters("late").posts == 2


async def test_a_hold_nobody_takes_within_hold_hours_ends_unsold_hold_expired(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("picky", reject_rate=1.0)]) as sim:
        buyers = [delayed(sim, "picky", 20.0, hours=6)]
        async with running_exchange(make_config(buyers, exchange=EXCHANGE), database_url) as ex:
            ping_id = (await direct_post(ex))["ping_id"]
            ex.ctx.clock.advance(timedelta(hours=7))  # past its window before it opened
            story = await settled(ex, ping_id)
            assert story["post"]["status"] == "unsold"
            assert story["post"]["reason"] == "hold_expired"
            assert story["hold"]["state"] == "expired"
            assert sim.counters("picky").posts == 0
        db = await asyncpg.connect(database_url)
        try:
            pii = await db.fetchval("SELECT pii FROM held_leads")
        finally:
            await db.close()
        assert pii is None


async def test_a_lead_an_off_schedule_buyer_filters_out_is_not_held(database_url: str) -> None:
    async with BuyerSimulator([spec("texan")]) as sim:
        buyer = delayed(sim, "texan", 20.0)
        buyer["filters"] = {"state": {"in": ["TX"]}}  # the lead is from CA
        async with running_exchange(make_config([buyer], exchange=EXCHANGE), database_url) as ex:
            answer = await direct_post(ex)
            assert answer["status"] == "unsold" and answer["reason"] == "no_bids"
            assert (await ex.story(answer["ping_id"]))["hold"] is None


async def test_a_real_time_delayed_buyer_is_pinged_on_delivery_and_posted_at_its_new_bid(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("live", 2300)]) as sim:
        buyer = {
            "id": "live", "verticals": ["auto_insurance"], "ping_url": sim.ping_url("live"),
            "post_url": sim.post_url("live"), "secret": "s3cret-live",
            "schedule": opens_in_two_hours(), "delayed": {"hold_hours": 12},
        }  # fmt: skip
        async with running_exchange(make_config([buyer], exchange=EXCHANGE), database_url) as ex:
            ping_id = (await direct_post(ex))["ping_id"]
            assert sim.counters("live").pings == 0  # off schedule: not in the auction
            ex.ctx.clock.advance(timedelta(hours=3))
            story = await settled(ex, ping_id)
            assert story["sale"]["price"] == 23.0
            pinged = [r.body for r in sim.received("live") if r.path == "/ping"]
            assert len(pinged) == 1 and "first_name" not in pinged[0]["lead"]
            posted = [r.body for r in sim.received("live") if r.path == "/post"]
            assert posted[0]["bid_id"] is not None and posted[0]["price"] == 23.0


def suppressing(sim: BuyerSimulator) -> Any:
    """One delayed buyer, "late", and the vertical suppressing with list "dnc"."""
    exchange = {**EXCHANGE, "suppression_hash_key": "suppression-key-0123456789abcdef"}
    doc = yaml.safe_load(config_text([delayed(sim, "late", 14.0)], exchange=exchange))
    doc["verticals"]["auto_insurance"]["suppress"] = ["dnc"]
    return parse_config(yaml.safe_dump(doc), "test.yaml", env={})


async def held_then_listed(ex: Exchange, entry: str) -> tuple[str, dict[str, Any]]:
    """A lead held for "late", then ``entry`` (its phone or email) put on list "dnc"."""
    ping_id = (await direct_post(ex))["ping_id"]
    status, loaded, _ = await ex.call("POST", "/v1/suppression/dnc", [entry], key=ADMIN_TOKEN)
    assert status == 200 and loaded["added"] == 1, loaded
    return ping_id, loaded


async def ended_suppressed(ex: Exchange, sim: BuyerSimulator, ping_id: str) -> None:
    story = await settled(ex, ping_id)
    assert story["post"]["status"] == "unsold", story["post"]
    assert story["post"]["reason"] == "suppressed"
    assert story["post"]["suppressed_by"] == "dnc"
    assert story["sale"] is None
    assert sim.counters("late").posts == 0


async def test_a_held_lead_whose_person_is_suppressed_meanwhile_is_never_delivered(
    database_url: str,
) -> None:
    async with (
        BuyerSimulator([spec("late")]) as sim,
        running_exchange(suppressing(sim), database_url) as ex,
    ):
        ping_id, _ = await held_then_listed(ex, FULL_LEAD["email"])
        ex.ctx.clock.advance(timedelta(hours=2, minutes=30))  # the buyer opens
        await ended_suppressed(ex, sim, ping_id)


async def test_loading_a_suppression_list_ends_its_peoples_held_leads_before_any_buyer_opens(
    database_url: str,
) -> None:
    async with (
        BuyerSimulator([spec("late")]) as sim,
        running_exchange(suppressing(sim), database_url) as ex,
    ):
        ping_id, loaded = await held_then_listed(ex, FULL_LEAD["phone"])
        assert loaded["held_leads_rechecked"] == 1, loaded
        # No clock moved: the buyer is still closed, and the hold ends all the same.
        await ended_suppressed(ex, sim, ping_id)
    db = await asyncpg.connect(database_url)
    try:
        row = await db.fetchrow("SELECT state, pii FROM held_leads")
    finally:
        await db.close()
    assert row is not None and row["state"] != "held" and row["pii"] is None


SCORE_RULES = [
    {"field": "credit_rating", "in": ["excellent", "good"], "points": 40},
    {"field": "age", "gte": 25, "points": 20},
]


def scoring_config(buyers: list[dict[str, Any]], **vertical: Any) -> Any:
    doc = yaml.safe_load(config_text(buyers, exchange=EXCHANGE))
    doc["verticals"]["auto_insurance"].update({"score": SCORE_RULES, **vertical})
    return parse_config(yaml.safe_dump(doc), "test.yaml", env={})


async def test_a_delayed_buyer_filtering_on_the_score_is_held_for_and_sold_a_lead_scoring_enough(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("late")]) as sim:
        buyer = delayed(sim, "late", 14.0)
        buyer["filters"] = {"score": {"gte": 50}}  # FULL_LEAD scores 60
        async with running_exchange(scoring_config([buyer]), database_url) as ex:
            answer = await direct_post(ex)
            assert answer["status"] == "queued", answer
            ex.ctx.clock.advance(timedelta(hours=3))
            story = await settled(ex, answer["ping_id"])
            assert story["sale"] is not None and story["sale"]["buyer"] == "late", story
            assert [a["outcome"] for a in story["post_attempts"]] == ["accepted"]


async def test_a_real_time_delayed_buyer_is_pinged_on_delivery_with_the_score_and_its_floor(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("live", 900)]) as sim:
        buyer = {
            "id": "live", "verticals": ["auto_insurance"], "ping_url": sim.ping_url("live"),
            "post_url": sim.post_url("live"), "secret": "s3cret-live",
            "schedule": opens_in_two_hours(), "delayed": {"hold_hours": 12},
        }  # fmt: skip
        config = scoring_config([buyer], floor_by_score=[{"gte": 50, "floor": 10.00}])
        async with running_exchange(config, database_url) as ex:
            answer = await direct_post(ex)
            assert answer["status"] == "queued", answer
            ex.ctx.clock.advance(timedelta(hours=3))
            story = await settled(ex, answer["ping_id"])
            pinged = [r.body for r in sim.received("live") if r.path == "/ping"]
            assert len(pinged) == 1
            assert pinged[0]["score"] == 60 and pinged[0]["floor"] == 10.0, pinged[0]
            # Its $9.00 bid is under the score's $10.00 floor: no sale.
            assert story["sale"] is None, story["sale"]
            assert sim.counters("live").posts == 0


async def test_a_lead_from_a_sub_id_a_delayed_buyer_denies_is_neither_held_for_it_nor_sold_to_it(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("late")]) as sim:
        buyer = delayed(sim, "late", 14.0)
        buyer["sub_ids_deny"] = ["bad-src"]
        async with running_exchange(make_config([buyer], exchange=EXCHANGE), database_url) as ex:
            answer = await direct_post(ex, sub_id="bad-src")
            assert answer["status"] == "unsold" and answer["reason"] == "no_bids", answer
            assert (await ex.story(answer["ping_id"]))["hold"] is None
            ex.ctx.clock.advance(timedelta(hours=3))
            await asyncio.sleep(1.5)
            assert sim.counters("late").posts == 0


async def test_a_hold_whose_pii_no_key_opens_ends_unsold_at_its_window_and_is_purged(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("late")]) as sim:
        buyers = [delayed(sim, "late", 14.0, hours=6)]
        async with running_exchange(make_config(buyers, exchange=EXCHANGE), database_url) as ex:
            ping_id = (await direct_post(ex))["ping_id"]
        # The key is lost: the exchange comes back under another, the old one not retired.
        other = {"pii_key": base64.b64encode(bytes(range(50, 82))).decode()}
        async with running_exchange(make_config(buyers, exchange=other), database_url) as ex:
            ex.ctx.clock.advance(timedelta(hours=7))  # past every buyer's window
            story = await settled(ex, ping_id)
            assert story["post"]["status"] == "unsold", story["post"]
            assert story["post"]["reason"] == "hold_expired"
            assert story["hold"]["state"] == "expired"
            assert sim.counters("late").posts == 0
        db = await asyncpg.connect(database_url)
        try:
            row = await db.fetchrow("SELECT pii, pii_key_id FROM held_leads")
        finally:
            await db.close()
        assert row is not None and row["pii"] is None and row["pii_key_id"] is None


async def test_a_hold_of_a_vertical_no_longer_configured_ends_unsold_and_is_purged(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("late")]) as sim:
        buyers = [delayed(sim, "late", 14.0)]
        async with running_exchange(make_config(buyers, exchange=EXCHANGE), database_url) as ex:
            assert (await direct_post(ex))["status"] == "queued"
        # The exchange comes back with the vertical gone (renamed).
        doc = yaml.safe_load(config_text(buyers, exchange=EXCHANGE))
        doc["verticals"] = {"home_insurance": doc["verticals"]["auto_insurance"]}
        doc["buyers"][0]["verticals"] = ["home_insurance"]
        config = parse_config(yaml.safe_dump(doc), "test.yaml", env={})
        async with running_exchange(config, database_url) as ex:
            ex.ctx.clock.advance(timedelta(hours=3))
            db = await asyncpg.connect(database_url)
            try:
                for _ in range(50):
                    row = await db.fetchrow("SELECT state, pii FROM held_leads")
                    assert row is not None
                    if row["state"] != "held":
                        break
                    await asyncio.sleep(0.1)
                post = await db.fetchrow("SELECT status, reason FROM posts")
            finally:
                await db.close()
            assert row["state"] == "expired" and row["pii"] is None, row
            assert post is not None and post["status"] == "unsold", post
            assert sim.counters("late").posts == 0


async def test_a_fixed_price_delayed_buyer_under_the_sellers_floor_is_not_sold_the_held_lead(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("cheap"), spec("fair")]) as sim:
        buyers = [delayed(sim, "cheap", 3.0), delayed(sim, "fair", 6.0)]
        async with running_exchange(make_config(buyers, exchange=EXCHANGE), database_url) as ex:
            ping_id = (await direct_post(ex))["ping_id"]  # held for both at a $2.00 floor
        # Back with acme-media's floor raised to $4.00: in an auction now, $3.00 fixed is
        # below_floor.
        sellers = [{"id": "acme-media", "api_key": SELLER_KEY, "payout_share": 0.85,
                    "floor": 4.00}]  # fmt: skip
        config = make_config(buyers, exchange=EXCHANGE, sellers=sellers)
        async with running_exchange(config, database_url) as ex:
            ex.ctx.clock.advance(timedelta(hours=3))
            story = await settled(ex, ping_id)
            assert story["sale"] is not None and story["sale"]["buyer"] == "fair", story
            assert story["sale"]["price"] == 6.0
            assert sim.counters("cheap").posts == 0
            [skipped, accepted] = story["post_attempts"]
            assert skipped["buyer"] == "cheap" and skipped["outcome"] == "skipped"
            assert "below_floor" in skipped["reason"], skipped
            assert accepted["buyer"] == "fair" and accepted["outcome"] == "accepted"


async def test_a_lead_is_not_held_for_a_fixed_price_under_the_sellers_floor_alone(
    database_url: str,
) -> None:
    async with BuyerSimulator([spec("cheap")]) as sim:
        buyers = [delayed(sim, "cheap", 1.5)]  # acme-media's floor is $2.00
        async with running_exchange(make_config(buyers, exchange=EXCHANGE), database_url) as ex:
            answer = await direct_post(ex)
            assert answer["status"] == "unsold" and answer["reason"] == "no_bids", answer
            assert (await ex.story(answer["ping_id"]))["hold"] is None
