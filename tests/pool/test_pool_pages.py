"""Listing the lead pool page by page (docs/distribution.md, "Pages"): following
``next_cursor`` walks every offer a buyer may claim, each once and newest first, even
where the offers it may claim are older than many it may not; a request looks at a
bounded number of offers; a cursor that is not one is refused, naming it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import exchange.auction.offers as offers_module
from exchange.tools.simulator import BuyerSimulator
from tests.pool.pooling import buyer_key, direct_post, pool_config, pull_buyer, pull_specs
from tests.support.harness import FULL_LEAD, Exchange, running_exchange

BUYERS: dict[str, dict[str, Any]] = {
    "texas-only": {"filters": {"state": {"in": ["TX"]}}},
    "everyone": {},
}


@asynccontextmanager
async def pool_of(
    database_url: str, texas: int, california: int
) -> AsyncIterator[tuple[Exchange, list[str], list[str]]]:
    """An exchange whose pool holds ``texas`` TX offers, then ``california`` newer CA
    ones; with the lead ids of each, newest first."""
    async with BuyerSimulator(pull_specs(*BUYERS)) as sim:
        text = pool_config([pull_buyer(sim, b, **extra) for b, extra in BUYERS.items()])
        async with running_exchange(text, database_url) as ex:
            made: dict[str, list[str]] = {"TX": [], "CA": []}
            for n, state in enumerate(["TX"] * texas + ["CA"] * california):
                lead = {**FULL_LEAD, "state": state, "email": f"person{n}@example.com",
                        "phone": f"(415) 555-{1000 + n:04d}"}  # fmt: skip
                made[state].insert(0, (await direct_post(ex, lead))["ping_id"])
            yield ex, made["TX"], made["CA"]


async def walk(ex: Exchange, buyer_id: str, limit: int) -> tuple[list[str], list[int]]:
    """Every page from the first until ``next_cursor`` is null: the lead ids in the
    order listed, and each page's size."""
    seen: list[str] = []
    sizes: list[int] = []
    query = f"?vertical=auto_insurance&limit={limit}"
    cursor: str | None = None
    for _ in range(50):
        page = query + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = await ex.call("GET", "/v1/pool" + page, key=buyer_key(buyer_id))
        assert status == 200, body
        seen += [o["lead_id"] for o in body["offers"]]
        sizes.append(len(body["offers"]))
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, sizes
    raise AssertionError("the pages never ended")


async def test_following_next_cursor_lists_every_claimable_offer_once_newest_first(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small pages and a small budget per request, so that a few offers show the walk.
    monkeypatch.setattr(offers_module, "LIST_PAGE", 4)
    monkeypatch.setattr(offers_module, "LIST_SCAN_LIMIT", 8)
    async with pool_of(database_url, texas=6, california=14) as (ex, texas, california):
        # The TX offers are older than fourteen CA ones the TX-only buyer may not claim:
        # its first page comes back empty, with a cursor to go on from, not as "no offers".
        found, sizes = await walk(ex, "texas-only", limit=100)
        assert found == texas
        assert sizes[0] == 0 and len(sizes) > 1
        # Everything, five at a time: no offer twice, none left out, newest first.
        found, sizes = await walk(ex, "everyone", limit=5)
        assert found == california + texas
        assert max(sizes) == 5


async def test_a_page_stops_at_its_limit_and_the_next_starts_after_it(
    database_url: str,
) -> None:
    async with pool_of(database_url, texas=0, california=5) as (ex, _, california):
        key = buyer_key("everyone")
        status, first, _ = await ex.call("GET", "/v1/pool?limit=2", key=key)
        assert status == 200 and [o["lead_id"] for o in first["offers"]] == california[:2]
        cursor = first["next_cursor"]
        status, second, _ = await ex.call("GET", f"/v1/pool?limit=2&cursor={cursor}", key=key)
        assert status == 200 and [o["lead_id"] for o in second["offers"]] == california[2:4]
        # A claim meanwhile does not shift the pages: the next starts after the last seen.
        status, _, _ = await ex.call("POST", f"/v1/pool/{california[0]}/claim", key=key)
        assert status == 200
        cursor = second["next_cursor"]
        status, third, _ = await ex.call("GET", f"/v1/pool?limit=2&cursor={cursor}", key=key)
        assert status == 200 and [o["lead_id"] for o in third["offers"]] == california[4:]
        assert third["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    ["abc", "", "%00", "A" * 31, "A" * 33, "f" * 32],
)
async def test_a_cursor_that_is_not_one_is_refused_naming_the_cursor(
    database_url: str, cursor: str
) -> None:
    async with pool_of(database_url, texas=0, california=1) as (ex, _, _):
        status, body, _ = await ex.call(
            "GET", f"/v1/pool?cursor={cursor}", key=buyer_key("everyone")
        )
        assert status == 422, body
        assert body["error"]["fields"] == [
            {"loc": ["query", "cursor"], "msg": "is not a next_cursor of a previous page"}
        ]
