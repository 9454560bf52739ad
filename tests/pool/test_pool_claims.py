"""The lead pool end to end (SPEC section 10) against the real database and real buyer
servers: unsold direct posts enter the pool, buyers list them with their own key and the
first claim buys the lead; price decay, expiry, visibility, buyer controls, and the claim
as a sale like any other (record, reports, returns, metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import yaml

from exchange.auction.offers import sweep_pool
from exchange.tools.simulator import BuyerSimulator
from tests.pool.pooling import (
    DEDUPE_KEY,
    POOL,
    buyer_key,
    claim,
    direct_post,
    listing,
    pool_config,
    pull_buyer,
    pull_specs,
)
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    OTHER_SELLER_KEY,
    PING_LEAD,
    SELLER_KEY,
    Exchange,
    running_exchange,
)


@asynccontextmanager
async def pool_exchange(
    database_url: str, buyers: dict[str, dict[str, Any]], **config: Any
) -> AsyncIterator[Exchange]:
    async with BuyerSimulator(pull_specs(*buyers)) as sim:
        text = pool_config([pull_buyer(sim, b, **extra) for b, extra in buyers.items()], **config)
        async with running_exchange(text, database_url) as ex:
            yield ex


async def test_unsold_lead_enters_the_pool_and_the_first_claim_buys_it(database_url: str) -> None:
    async with pool_exchange(database_url, {"puller": {}, "late": {}}) as ex:
        posted = await direct_post(ex)
        lead_id = posted["ping_id"]
        offers = await listing(ex, "puller")
        assert [o["lead_id"] for o in offers] == [lead_id]
        offer = offers[0]
        assert offer["price"] == 20.0 and offer["age_minutes"] == 0
        assert offer["visibility"] == "cherry_pick"
        assert offer["lead"] == PING_LEAD  # the non-PII fields, none of the PII

        status, won = await claim(ex, "puller", lead_id)
        assert status == 200, won
        assert won["price"] == 20.0
        assert won["lead"] == {
            **PING_LEAD, "first_name": "Ada", "last_name": "Lovelace",
            "email": "ada.lovelace@example.com", "phone": "+14155552671",
            "street_address": "12 Analytical Engine Way",
        }  # fmt: skip
        status, late = await claim(ex, "late", lead_id)
        assert status == 409, late
        assert late["error"]["code"] == "conflict"
        status, again = await claim(ex, "puller", lead_id)
        assert status == 409, again
        assert await listing(ex, "late") == []

        story = await ex.story(lead_id)
        assert story["post"]["status"] == "unsold" and story["post"]["reason"] == "no_bids"
        assert story["pool"]["status"] == "claimed"
        assert story["pool"]["claimed_by"] == "puller"
        assert story["pool"]["price"] == 20.0 and story["pool"]["payout"] == 17.0
        assert story["sale"]["buyer"] == "puller"
        assert story["sale"]["price"] == 20.0 and story["sale"]["payout"] == 17.0


async def test_claim_price_decays_by_the_hour_to_the_floor(database_url: str) -> None:
    async with pool_exchange(database_url, {"puller": {}}) as ex:
        first = (await direct_post(ex))["ping_id"]
        ex.ctx.clock.advance(timedelta(hours=2, minutes=30))
        [offer] = await listing(ex, "puller")
        assert offer["price"] == 17.5 and offer["age_minutes"] == 150
        second = (await direct_post(ex, {**FULL_LEAD, "phone": "(415) 555-0100"}))["ping_id"]
        ex.ctx.clock.advance(timedelta(hours=10))
        prices = {o["lead_id"]: o["price"] for o in await listing(ex, "puller")}
        assert prices == {first: 7.5, second: 10.0}
        ex.ctx.clock.advance(timedelta(hours=20))
        prices = {o["lead_id"]: o["price"] for o in await listing(ex, "puller")}
        assert prices == {first: 2.0, second: 2.0}  # the floor
        status, won = await claim(ex, "puller", first)
        assert status == 200 and won["price"] == 2.0
        story = await ex.story(first)
        assert story["sale"]["price"] == 2.0 and story["sale"]["payout"] == 1.7


async def test_offer_leaves_the_pool_at_max_age_and_its_pii_is_purged(database_url: str) -> None:
    async with pool_exchange(database_url, {"puller": {}}) as ex:
        lead_id = (await direct_post(ex))["ping_id"]
        ex.ctx.clock.advance(timedelta(hours=72))
        assert await listing(ex, "puller") == []
        status, body = await claim(ex, "puller", lead_id)
        assert status == 404, body
        assert "left the pool" in body["error"]["message"]
        assert await sweep_pool(ex.ctx) == {"auto_insurance": 1}
        assert await sweep_pool(ex.ctx) == {}
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow("SELECT pii, pii_key_id, expired_at FROM pool_offers")
        finally:
            await conn.close()
        assert row["pii"] is None and row["pii_key_id"] is None
        assert row["expired_at"] is not None
        assert (await ex.story(lead_id))["pool"]["status"] == "expired"


async def test_blind_pool_lists_only_the_state(database_url: str) -> None:
    async with pool_exchange(
        database_url, {"puller": {}}, pool={**POOL, "visibility": "blind"}
    ) as ex:
        lead_id = (await direct_post(ex))["ping_id"]
        [offer] = await listing(ex, "puller")
        assert offer["lead"] == {"state": "CA"} and offer["visibility"] == "blind"
        status, won = await claim(ex, "puller", lead_id)
        assert status == 200 and won["lead"]["email"] == "ada.lovelace@example.com"


async def test_buyer_controls_hide_offers_and_refuse_claims_naming_why(
    database_url: str,
) -> None:
    now = datetime.now(UTC)
    buyers: dict[str, dict[str, Any]] = {
        "texas-only": {"filters": {"state": {"in": ["TX"]}}},
        "denies-acme": {"sellers_deny": ["acme-media"]},
        # Opens in two hours, for an hour: closed now.
        "closed-now": {"schedule": {"timezone": "UTC", "start": f"{(now.hour + 2) % 24:02d}:00",
                                    "end": f"{(now.hour + 3) % 24:02d}:00"}},
        "capped": {"caps": {"daily": 0}},
        "allowed": {},
    }  # fmt: skip
    async with pool_exchange(database_url, buyers) as ex:
        lead_id = (await direct_post(ex))["ping_id"]
        expected = {
            "texas-only": "filtered",
            "denies-acme": "seller_blocked",
            "closed-now": "off_schedule",
            "capped": "capped",
        }
        for buyer_id, word in expected.items():
            assert await listing(ex, buyer_id) == [], buyer_id
            status, body = await claim(ex, buyer_id, lead_id)
            assert status == 403, (buyer_id, body)
            assert f": {word}" in body["error"]["message"], (buyer_id, body)
        assert [o["lead_id"] for o in await listing(ex, "allowed")] == [lead_id]
        status, _ = await claim(ex, "allowed", lead_id)
        assert status == 200


async def test_a_buyer_that_bought_the_person_is_refused_the_duplicate(
    database_url: str,
) -> None:
    async with pool_exchange(
        database_url, {"repeat": {"dedupe_days": 30}, "fresh": {}},
        exchange={"dedupe_hash_key": DEDUPE_KEY},
    ) as ex:  # fmt: skip
        first = (await direct_post(ex))["ping_id"]
        assert (await claim(ex, "repeat", first))[0] == 200
        again = (await direct_post(ex, {**FULL_LEAD, "zip": "90211"}))["ping_id"]
        assert [o["lead_id"] for o in await listing(ex, "repeat")] == []
        status, body = await claim(ex, "repeat", again)
        assert status == 403 and ": duplicate" in body["error"]["message"], body
        assert (await claim(ex, "fresh", again))[0] == 200


async def test_only_sellers_allowing_the_pool_have_their_leads_pooled(
    database_url: str,
) -> None:
    sellers = [
        {"id": "acme-media", "api_key": SELLER_KEY, "payout_share": 0.85, "pool": True},
        {"id": "other-seller", "api_key": OTHER_SELLER_KEY, "payout_share": 0.8},
    ]
    async with pool_exchange(database_url, {"puller": {}}, sellers=sellers) as ex:
        await direct_post(ex, key=OTHER_SELLER_KEY)
        assert await listing(ex, "puller") == []
        pooled = (await direct_post(ex, {**FULL_LEAD, "phone": "(415) 555-0101"}))["ping_id"]
        assert [o["lead_id"] for o in await listing(ex, "puller")] == [pooled]


async def test_a_pool_sale_is_reported_paid_out_and_returnable(database_url: str) -> None:
    async with pool_exchange(database_url, {"puller": {"return_window_days": 7}}) as ex:
        lead_id = (await direct_post(ex))["ping_id"]
        assert (await claim(ex, "puller", lead_id))[0] == 200
        status, report, _ = await ex.call("GET", "/v1/reports/sellers", key=ADMIN_TOKEN)
        assert status == 200, report
        [acme] = [r for r in report["sellers"] if r["seller"] == "acme-media"]
        assert acme["sales"] == 1 and acme["revenue"] == 20.0 and acme["payout"] == 17.0
        status, back, _ = await ex.call(
            "POST", "/v1/returns", {"ping_id": lead_id, "reason": "wrong number"},
            key=buyer_key("puller"),
        )  # fmt: skip
        assert status == 201, back
        assert back["credit"] == 20.0 and back["seller_payout_reversed"] == 17.0
        status, text, _ = await ex.call("GET", "/metrics", key=None)
        metrics = text.decode() if isinstance(text, bytes) else str(text)
        assert 'exchange_pool_claims_total{buyer="puller",vertical="auto_insurance"} 1.0' in metrics
        assert 'exchange_pool_entries_total{vertical="auto_insurance"} 1.0' in metrics


async def test_pool_calls_refuse_bad_requests_with_clear_errors(database_url: str) -> None:
    async with pool_exchange(database_url, {"puller": {}}) as ex:
        status, body, _ = await ex.call("GET", "/v1/pool", key="not-a-buyer-key-0123456789")
        assert status == 401, body
        status, body, _ = await ex.call("GET", "/v1/pool?limit=0", key=buyer_key("puller"))
        assert status == 422 and body["error"]["fields"][0]["loc"] == ["query", "limit"]
        status, body, _ = await ex.call("GET", "/v1/pool?vertical=boats", key=buyer_key("puller"))
        assert status == 422 and body["error"]["fields"][0]["loc"] == ["query", "vertical"]
        status, body = await claim(ex, "puller", "not-a-uuid")
        assert status == 404, body
        status, body = await claim(ex, "puller", "01a24dbc-d088-76a2-9a2b-d0a7e4cd1582")
        assert status == 404 and "no lead" in body["error"]["message"], body


async def test_the_lead_score_is_a_field_buyers_filter_the_pool_on(database_url: str) -> None:
    score = [{"field": "credit_rating", "in": ["excellent", "good"], "points": 40},
             {"field": "age", "gte": 25, "points": 20}]  # fmt: skip
    async with pool_exchange(
        database_url, {"picky": {"filters": {"score": {"gte": 50}}}},
        vertical={"score": score},
    ) as ex:  # fmt: skip
        good = (await direct_post(ex))["ping_id"]
        weak_lead = {**FULL_LEAD, "age": 22, "credit_rating": "fair", "phone": "(415) 555-0102"}
        weak = (await direct_post(ex, weak_lead))["ping_id"]
        [offer] = await listing(ex, "picky")
        assert offer["lead_id"] == good and offer["lead"]["score"] == 60
        status, body = await claim(ex, "picky", weak)
        assert status == 403 and ": filtered" in body["error"]["message"], body


def suppressing_pool(database_url: str) -> AbstractAsyncContextManager[Exchange]:
    """A pool with one pull buyer, "puller", in a vertical suppressing with list "dnc"."""
    suppression = {"suppression_hash_key": "suppression-key-0123456789abcdef"}
    return pool_exchange(
        database_url, {"puller": {}}, exchange=suppression, vertical={"suppress": ["dnc"]}
    )


async def test_a_pooled_lead_whose_person_is_suppressed_meanwhile_leaves_the_pool_unsold(
    database_url: str,
) -> None:
    async with suppressing_pool(database_url) as ex:
        lead_id = (await direct_post(ex))["ping_id"]
        status, loaded, _ = await ex.call(
            "POST", "/v1/suppression/dnc", [FULL_LEAD["phone"]], key=ADMIN_TOKEN
        )
        assert status == 200 and loaded["added"] == 1, loaded
        status, body = await claim(ex, "puller", lead_id)
        assert status == 404, body
        assert "left the pool" in body["error"]["message"]
        assert await listing(ex, "puller") == []
        story = await ex.story(lead_id)
        assert story["pool"]["status"] == "expired" and story["sale"] is None


async def test_loading_a_suppression_list_takes_its_peoples_pooled_leads_out_with_their_pii(
    database_url: str,
) -> None:
    async with suppressing_pool(database_url) as ex:
        listed_person = (await direct_post(ex))["ping_id"]
        other = {**FULL_LEAD, "phone": "(415) 555-0199", "email": "someone.else@example.com"}
        other_person = (await direct_post(ex, other))["ping_id"]
        status, loaded, _ = await ex.call(
            "POST", "/v1/suppression/dnc", [FULL_LEAD["email"].upper()], key=ADMIN_TOKEN
        )
        assert status == 200, loaded
        assert loaded["pool_offers_withdrawn"] == 1 and loaded["used_by"] == ["auto_insurance"]
        # Gone at once, not at the next claim: its PII purged in the ledger.
        assert [o["lead_id"] for o in await listing(ex, "puller")] == [other_person]
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT ping_id::text, pii, expired_at FROM pool_offers")
        finally:
            await conn.close()
        found = {r["ping_id"]: r for r in rows}
        assert found[listed_person]["pii"] is None and found[listed_person]["expired_at"]
        assert found[other_person]["pii"] is not None
        story = await ex.story(listed_person)
        assert story["pool"]["status"] == "expired" and story["sale"] is None
        # Loading the same entry again finds nothing more to take out.
        status, again, _ = await ex.call(
            "POST", "/v1/suppression/dnc", [FULL_LEAD["email"]], key=ADMIN_TOKEN
        )
        assert status == 200 and again["added"] == 0 and again["pool_offers_withdrawn"] == 0


async def test_odd_pool_query_strings_and_lead_ids_get_clear_errors_never_a_500(
    database_url: str,
) -> None:
    async with pool_exchange(database_url, {"puller": {}}) as ex:
        key = buyer_key("puller")
        # Digits Python's isdigit() knows but int() does not read, and other odd limits.
        for limit in ("%C2%B2", "%E2%91%A0", "-1", "1e3", "99999999999999999999", "", "%00"):
            status, body, _ = await ex.call("GET", f"/v1/pool?limit={limit}", key=key)
            assert status == 422, (limit, status, body)
            assert body["error"]["fields"][0]["loc"] == ["query", "limit"], body
        for vertical in ("", "%00", "x" * 5000, "auto_insurance%00"):
            status, body, _ = await ex.call("GET", f"/v1/pool?vertical={vertical}", key=key)
            assert status == 422, (vertical[:20], status, body)
        for lead_id in ("%00", "x" * 3000, "01a24dbc-d088-76a2-9a2b-d0a7e4cd158%C3%A9",
                        "%7B01a24dbc-d088-76a2-9a2b-d0a7e4cd1582%7D"):  # fmt: skip
            status, body = await claim(ex, "puller", lead_id)
            assert status == 404, (lead_id[:20], status, body)


async def test_offers_left_by_a_pool_taken_out_of_the_config_are_still_swept_at_max_age(
    database_url: str,
) -> None:
    async with pool_exchange(database_url, {"puller": {}}) as ex:
        await direct_post(ex)
    # The exchange comes back with no vertical pooling: its old offers must still expire.
    async with BuyerSimulator(pull_specs("puller")) as sim:
        text = pool_config([pull_buyer(sim, "puller")])
        doc = yaml.safe_load(text)
        del doc["verticals"]["auto_insurance"]["pool"]
        async with running_exchange(yaml.safe_dump(doc), database_url) as ex:
            ex.ctx.clock.advance(timedelta(hours=72))
            conn = await asyncpg.connect(database_url)
            try:
                for _ in range(80):  # a sweep runs every 5 s
                    row = await conn.fetchrow("SELECT pii, expired_at FROM pool_offers")
                    assert row is not None
                    if row["expired_at"] is not None:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await conn.close()
            assert row["expired_at"] is not None and row["pii"] is None, row


async def test_a_paused_sellers_pooled_leads_are_neither_listed_nor_sold(
    database_url: str,
) -> None:
    async with pool_exchange(database_url, {"puller": {}}) as ex:
        lead_id = (await direct_post(ex))["ping_id"]
        assert [o["lead_id"] for o in await listing(ex, "puller")] == [lead_id]
        status, changed, _ = await ex.call(
            "PATCH", "/v1/sellers/acme-media", {"enabled": False}, key=ADMIN_TOKEN
        )
        assert status == 200, changed
        assert ex.ctx.settings_version == changed["version"]  # adopted where it was made
        assert await listing(ex, "puller") == []
        status, body = await claim(ex, "puller", lead_id)
        assert status == 403, body
        assert "seller acme-media is paused" in body["error"]["message"]
        assert (await ex.story(lead_id))["sale"] is None
