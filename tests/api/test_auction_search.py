"""GET /v1/auctions (SPEC section 11): filters, newest first, pages that neither skip nor
repeat, a seller's key scoped to its own auctions, and every bad parameter named."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from exchange.tools.simulator import SimulatedBuyerSpec
from tests.api.market import SELLERS, running_market
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    OTHER_SELLER_KEY,
    PING_LEAD,
    SELLER_KEY,
    Exchange,
)

FIRST_KEY = "first-buyer-api-key-0123456789"


def market(database_url: str) -> AbstractAsyncContextManager[Exchange]:
    return running_market(
        database_url,
        [
            SimulatedBuyerSpec("ca-buyer", secret=b"s-ca", bid_cents=(2000, 2000)),
            SimulatedBuyerSpec("any-buyer", secret=b"s-any", bid_cents=(1000, 1000)),
        ],
        {
            "ca-buyer": {"filters": {"state": {"in": ["CA"]}}},
            "any-buyer": {"filters": {"state": {"in": ["CA", "NY"]}}},
        },
    )


async def search(ex: Exchange, query: str = "", key: str = ADMIN_TOKEN) -> tuple[int, Any]:
    status, body, _ = await ex.call("GET", f"/v1/auctions{query}", key=key)
    return status, body


async def ping(ex: Exchange, state: str, key: str = SELLER_KEY, **extra: Any) -> str:
    status, body, _ = await ex.call(
        "POST",
        "/v1/ping",
        {"vertical": "auto_insurance", "lead": {**PING_LEAD, "state": state}, **extra},
        key=key,
    )
    assert status == 200, body
    return str(body["ping_id"])


async def test_auctions_are_listed_newest_first_and_filtered(database_url: str) -> None:
    async with market(database_url) as ex:
        sold = await ping(ex, "CA", external_id="lead-77")
        assert (await ex.post(sold))["status"] == "sold"
        bid_only = await ping(ex, "NY")
        no_bid = await ping(ex, "TX")
        theirs = await ping(ex, "CA", key=OTHER_SELLER_KEY)

        status, page = await search(ex)
        assert status == 200
        ids = [a["ping_id"] for a in page["auctions"]]
        assert ids == [theirs, no_bid, bid_only, sold]
        assert page["next_cursor"] is None
        first = page["auctions"][-1]
        assert first["status"] == "sold" and first["external_id"] == "lead-77"
        assert (first["price"], first["payout"], first["sold_price"]) == (20.0, 17.0, 20.0)

        async def ids_for(query: str) -> list[str]:
            status, page = await search(ex, query)
            assert status == 200, page
            return [a["ping_id"] for a in page["auctions"]]

        assert await ids_for("?seller=other-seller") == [theirs]
        assert await ids_for("?status=sold") == [sold]
        assert await ids_for("?status=no_bid") == [no_bid]
        assert await ids_for("?status=bid") == [theirs, bid_only]
        assert await ids_for("?external_id=lead-77") == [sold]
        assert await ids_for("?buyer=ca-buyer") == [theirs, no_bid, bid_only, sold]
        assert await ids_for("?vertical=auto_insurance&seller=acme-media&status=bid") == [bid_only]
        assert await ids_for("?vertical=home") == []
        assert await ids_for("?from=2000-01-01T00:00:00Z&to=2001-01-01T00:00:00Z") == []


async def test_pages_cover_every_auction_once_in_order(database_url: str) -> None:
    async with market(database_url) as ex:
        made = [await ping(ex, "CA" if i % 2 else "TX") for i in range(7)]
        seen: list[str] = []
        query = "?limit=3"
        pages = 0
        while True:
            status, page = await search(ex, query)
            assert status == 200
            assert len(page["auctions"]) <= 3
            seen.extend(a["ping_id"] for a in page["auctions"])
            pages += 1
            if page["next_cursor"] is None:
                break
            # New auctions arriving meanwhile do not shift the pages already read.
            await ping(ex, "CA")
            query = f"?limit=3&cursor={page['next_cursor']}"
        assert seen == list(reversed(made))
        assert pages == 3


async def test_a_seller_key_reads_its_own_auctions_only(database_url: str) -> None:
    async with market(database_url) as ex:
        mine = await ping(ex, "CA")
        theirs = await ping(ex, "CA", key=OTHER_SELLER_KEY)
        status, page = await search(ex, key=SELLER_KEY)
        assert status == 200
        assert [a["ping_id"] for a in page["auctions"]] == [mine]
        status, page = await search(ex, "?seller=acme-media", key=OTHER_SELLER_KEY)
        assert status == 403
        status, page = await search(ex, "?external_id=x&seller=other-seller", key=SELLER_KEY)
        assert status == 403
        status, page = await search(ex, key=OTHER_SELLER_KEY)
        assert [a["ping_id"] for a in page["auctions"]] == [theirs]
        status, _ = await search(ex, key="not-a-key-0123456789")
        assert status == 401


async def test_every_bad_parameter_is_named_at_once(database_url: str) -> None:
    async with market(database_url) as ex:
        status, body = await search(
            ex, "?limit=9999&status=won&from=yesterday&cursor=%%%&colour=red"
        )
        assert status == 422
        named = {tuple(d["loc"]) for d in body["error"]["fields"]}
        assert named == {
            ("query", "limit"),
            ("query", "status"),
            ("query", "from"),
            ("query", "cursor"),
            ("query", "colour"),
        }
        status, body = await search(ex, "?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z")
        assert status == 422


async def test_a_post_in_progress_and_an_unsold_one_have_their_status(database_url: str) -> None:
    async with market(database_url) as ex:
        lonely = await ping(ex, "TX")
        assert (await ex.post(lonely, {**FULL_LEAD, "state": "TX"}))["status"] == "unsold"
        _, page = await search(ex, "?status=unsold")
        assert [a["ping_id"] for a in page["auctions"]] == [lonely]


async def test_a_seller_key_reads_its_own_report_row_only(database_url: str) -> None:
    async with market(database_url) as ex:
        await ping(ex, "CA")
        await ping(ex, "CA", key=OTHER_SELLER_KEY)
        status, body, _ = await ex.call("GET", "/v1/reports/sellers", key=SELLER_KEY)
        assert status == 200
        assert [row["seller"] for row in body["sellers"]] == ["acme-media"]
        status, body, _ = await ex.call("GET", "/v1/reports/sellers", key=ADMIN_TOKEN)
        assert sorted(row["seller"] for row in body["sellers"]) == ["acme-media", "other-seller"]
        status, _, _ = await ex.call("GET", "/v1/reports/sellers", key="not-a-key-0123456789")
        assert status == 401


async def test_the_record_shows_every_sale_of_a_shared_lead_and_its_returns(
    database_url: str,
) -> None:
    specs = [
        SimulatedBuyerSpec("first", secret=b"s-first", bid_cents=(3000, 3000)),
        SimulatedBuyerSpec("second", secret=b"s-second", bid_cents=(2000, 2000)),
    ]
    async with running_market(
        database_url,
        specs,
        {"first": {"api_key": FIRST_KEY, "return_window_days": 7}},
        sellers=[{**SELLERS[0], "max_sales": 2}, SELLERS[1]],
    ) as ex:
        shared = await ping(ex, "CA")
        assert (await ex.post(shared))["status"] == "sold"
        story = await ex.story(shared)
        assert [(s["sale_seq"], s["buyer"], s["price"], s["payout"]) for s in story["sales"]] == [
            (1, "first", 30.0, 25.5),
            (2, "second", 20.0, 17.0),
        ]
        assert all(s["at"] and s["returned_at"] is None for s in story["sales"])
        assert story["sale"] == story["sales"][0]
        assert story["returns"] == []

        status, _, _ = await ex.call(
            "POST", "/v1/returns", {"ping_id": shared, "reason": "wrong number"}, key=FIRST_KEY
        )
        assert status == 201
        story = await ex.story(shared)
        [returned] = story["returns"]
        assert (returned["buyer"], returned["reason"]) == ("first", "wrong number")
        assert (returned["credit"], returned["payout_reversed"]) == (30.0, 25.5)
        assert story["sales"][0]["returned_at"] == returned["at"]
        assert story["sales"][1]["returned_at"] is None

        not_posted = await ping(ex, "TX")
        story = await ex.story(not_posted)
        assert (story["sale"], story["sales"], story["returns"]) == (None, [], [])


async def test_a_limit_of_digits_int_cannot_read_is_named_not_a_500(database_url: str) -> None:
    async with market(database_url) as ex:
        for limit in ("%C2%B2", "%E2%91%A0"):  # "²" and "①": str.isdigit() says yes
            status, body = await search(ex, f"?limit={limit}")
            assert status == 422, (limit, status, body)
            assert body["error"]["fields"][0]["loc"] == ["query", "limit"]
