"""A buyer's redirect reaches the seller on a sale (SPEC section 8): in the answer to the
post, again on every retry (answered from the ledger, by this process or another one),
and in the auction record, whose post attempts show each verdict and reason. A redirect
the exchange will not pass on is dropped and the sale stands. Through the real exchange,
a real PostgreSQL and JSON buyers served over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
import yaml
from aiohttp import web

from tests.support.faults import Contract, serve_exchange
from tests.support.harness import FULL_LEAD, Exchange, config_text

THANKS = "https://buyer.example/thanks?lead=L-1"
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class JsonBuyer:
    """One buyer of SPEC section 5's JSON protocol: bids ``bid`` dollars on every ping and
    answers every post with ``post`` (JSON text as written on the wire)."""

    name: str
    bid: float
    post: bytes
    posts: int = 0


@dataclass
class BuyerServer:
    """Several JSON buyers on one aiohttp server on 127.0.0.1 (``/<buyer>/ping``,
    ``/<buyer>/post``)."""

    buyers: dict[str, JsonBuyer]
    url: str = ""
    runner: web.AppRunner | None = field(default=None, repr=False)

    async def _ping(self, request: web.Request) -> web.Response:
        buyer = self.buyers[request.match_info["buyer"]]
        return web.json_response({"bid": buyer.bid})

    async def _post(self, request: web.Request) -> web.Response:
        buyer = self.buyers[request.match_info["buyer"]]
        buyer.posts += 1
        return web.Response(body=buyer.post, content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{buyer}/ping", self._ping)
        app.router.add_post("/{buyer}/post", self._post)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def config(self) -> list[dict[str, Any]]:
        return [
            {"id": b.name, "verticals": ["auto_insurance"], "ping_url": f"{self.url}/{b.name}/ping",
             "post_url": f"{self.url}/{b.name}/post", "secret": f"{b.name}-secret"}
            for b in self.buyers.values()
        ]  # fmt: skip


def accepts(redirect: Any = None, **extra: Any) -> bytes:
    """A post answer accepting the lead, with ``redirect`` as its redirect_url (left out
    when None)."""
    answer: dict[str, Any] = {"accepted": True, **extra}
    if redirect is not None:
        answer["redirect_url"] = redirect
    return orjson.dumps(answer)


@asynccontextmanager
async def market(
    database_url: str, *buyers: JsonBuyer, max_sales: int = 1
) -> AsyncIterator[tuple[Exchange, BuyerServer]]:
    server = BuyerServer({b.name: b for b in buyers})
    await server.start()
    try:
        async with serve_exchange(_config(server, max_sales), database_url) as ex:
            yield ex, server
    finally:
        assert server.runner is not None
        await server.runner.cleanup()


def _config(server: BuyerServer, max_sales: int) -> str:
    doc = yaml.safe_load(config_text(server.config()))
    doc["verticals"]["auto_insurance"]["max_sales"] = max_sales
    return yaml.safe_dump(doc, sort_keys=False)


async def _post(ex: Exchange, ping_id: str) -> dict[str, Any]:
    """A post of the test lead; its answer, checked against the OpenAPI contract."""
    status, body, headers = await ex.call(
        "POST", "/v1/post", {"ping_id": ping_id, "lead": FULL_LEAD}
    )
    assert status == 200, body
    problems = Contract().problems("POST", "/v1/post", status, headers, orjson.dumps(body))
    assert problems == []
    answer: dict[str, Any] = body
    return answer


async def _record(ex: Exchange, ping_id: str, attempts: int) -> dict[str, Any]:
    """The auction record once its ``attempts`` post attempts (batched) are in, checked
    against the OpenAPI contract."""
    for _ in range(100):
        story = await ex.story(ping_id)
        if len(story["post_attempts"]) >= attempts:
            break
        await asyncio.sleep(0.02)
    problems = Contract().problems(
        "GET", "/v1/auctions/{ping_id}", 200, JSON_HEADERS, orjson.dumps(story)
    )
    assert problems == []
    record: dict[str, Any] = story
    return record


def _attempts(story: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    return [
        (a["buyer"], a["outcome"], a["reason"], a["redirect_url"]) for a in story["post_attempts"]
    ]


async def test_a_sale_answers_the_seller_with_the_buyers_redirect_and_a_retry_hears_it_again(
    database_url: str,
) -> None:
    top = JsonBuyer("top", 30.00, accepts(THANKS, buyer_lead_id="L-1"))
    async with market(database_url, top) as (ex, _):
        ping_id = (await ex.ping())["ping_id"]
        sold = await _post(ex, ping_id)
        assert sold == {"ping_id": ping_id, "status": "sold", "price": 25.5, "redirect_url": THANKS}
        assert await _post(ex, ping_id) == sold  # a retry: the ledger's answer
        assert top.posts == 1

        story = await _record(ex, ping_id, 1)
        assert _attempts(story) == [("top", "accepted", None, THANKS)]
        assert story["sale"]["redirect_url"] == THANKS
        assert story["sale"]["buyer_lead_id"] == "L-1"
        assert story["post"]["redirect_url"] == THANKS


async def test_a_retry_on_another_process_or_after_expiry_hears_the_same_redirect(
    database_url: str,
) -> None:
    top = JsonBuyer("top", 30.00, accepts(THANKS))
    async with market(database_url, top) as (ex, server):
        ping_id = (await ex.ping())["ping_id"]
        sold = await _post(ex, ping_id)
        assert sold["redirect_url"] == THANKS
        async with serve_exchange(_config(server, 1), database_url) as other:
            assert await _post(other, ping_id) == sold
        # The ping expired and forgotten here: the answer comes from the ledger alone.
        ex.ctx.pings.clear()
        ex.ctx.clock.advance(timedelta(seconds=ex.ctx.loaded.settings.ping_ttl_s + 60))
        try:
            assert await _post(ex, ping_id) == sold
        finally:
            ex.ctx.clock.reset()
        assert top.posts == 1


async def test_a_repeated_direct_post_hears_the_same_redirect(database_url: str) -> None:
    top = JsonBuyer("top", 30.00, accepts(THANKS))
    async with market(database_url, top) as (ex, _):
        body = {"vertical": "auto_insurance", "lead": FULL_LEAD, "external_id": "form-7"}
        status, first, _ = await ex.call("POST", "/v1/leads", body)
        assert status == 200 and first["status"] == "sold", first
        assert first["redirect_url"] == THANKS
        status, again, _ = await ex.call("POST", "/v1/leads", body)
        assert status == 200 and again == first
        assert top.posts == 1


def _long_url() -> str:
    base = "https://buyer.example/thanks?pad="
    return base + "x" * (2049 - len(base))


@pytest.mark.parametrize(
    "redirect",
    [
        "javascript:alert(document.cookie)",
        _long_url(),
        42,
        {"url": THANKS},
        [THANKS],
        True,
        "/thanks",
        "ftp://buyer.example/thanks",
        "https://buyer.example/\r\nSet-Cookie: session=1",
        "https://bank.example@elsewhere.example/",
        "https://buyer.example/thanks?email=ada.lovelace%40example.com",
        "https://buyer.example/thanks?phone=%2B14155552671",
    ],
    ids=["javascript", "too_long", "number", "object", "array", "boolean", "relative", "ftp",
         "crlf", "credentials", "lead_email", "lead_phone"],
)  # fmt: skip
async def test_a_bad_redirect_is_dropped_and_the_sale_stands(
    database_url: str, redirect: Any
) -> None:
    top = JsonBuyer("top", 30.00, accepts(redirect))
    async with market(database_url, top) as (ex, _):
        ping_id = (await ex.ping())["ping_id"]
        sold = await _post(ex, ping_id)
        assert sold == {"ping_id": ping_id, "status": "sold", "price": 25.5}
        assert await _post(ex, ping_id) == sold
        story = await _record(ex, ping_id, 1)
        assert _attempts(story) == [("top", "accepted", None, None)]
        assert story["sale"]["buyer"] == "top" and story["sale"]["redirect_url"] is None
        assert top.posts == 1


async def test_a_redirect_of_2048_characters_is_kept(database_url: str) -> None:
    longest = _long_url()[:2048]
    top = JsonBuyer("top", 30.00, accepts(longest))
    async with market(database_url, top) as (ex, _):
        ping_id = (await ex.ping())["ping_id"]
        sold = await _post(ex, ping_id)
        assert sold["redirect_url"] == longest
        assert await _post(ex, ping_id) == sold


async def test_a_shared_lead_answers_with_the_first_sales_redirect_and_the_record_shows_each(
    database_url: str,
) -> None:
    """Three buyers down the tree: a reject (its redirect is no sale's), a sale without a
    redirect, a sale with one. The seller hears the first sale's redirect there is; the
    record shows every attempt's verdict and reason, and each sale's redirect."""
    later = "https://second.example/welcome?ref=9"
    buyers = [
        JsonBuyer("rejecter", 40.00, orjson.dumps(
            {"accepted": False, "reason": "out_of_area", "redirect_url": THANKS})),
        JsonBuyer("first", 30.00, accepts()),
        JsonBuyer("second", 20.00, accepts(later)),
    ]  # fmt: skip
    async with market(database_url, *buyers, max_sales=2) as (ex, _):
        ping_id = (await ex.ping())["ping_id"]
        sold = await _post(ex, ping_id)
        assert sold == {"ping_id": ping_id, "status": "sold", "price": 42.5, "redirect_url": later}
        assert await _post(ex, ping_id) == sold
        story = await _record(ex, ping_id, 3)
        assert _attempts(story) == [
            ("rejecter", "rejected", "out_of_area", None),
            ("first", "accepted", None, None),
            ("second", "accepted", None, later),
        ]
        assert story["sale"]["buyer"] == "first" and story["sale"]["redirect_url"] is None
        assert story["post"]["redirect_url"] == later


async def test_the_redirect_is_kept_with_the_sale_in_the_ledger(database_url: str) -> None:
    top = JsonBuyer("top", 30.00, accepts(THANKS))
    async with market(database_url, top) as (ex, _):
        ping_id = (await ex.ping())["ping_id"]
        await _post(ex, ping_id)
        db = await asyncpg.connect(database_url)
        try:
            rows = await db.fetch("SELECT buyer_id, redirect_url FROM sales")
        finally:
            await db.close()
        assert [(r["buyer_id"], r["redirect_url"]) for r in rows] == [("top", THANKS)]
