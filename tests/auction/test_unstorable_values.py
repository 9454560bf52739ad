"""Values the ledger cannot store never reach it: a buyer's NUL in a bid id, a bid of
1e17 dollars, a seller's NUL in a field or an integer beyond 64 bits are refused at the
edge with a clear outcome, and trading goes on. Through the real exchange, a real
PostgreSQL and raw-socket buyers on 127.0.0.1.

Also here: a sale the buyer accepted is billed whatever text came with the verdict, a
sale the ledger still refuses sends the lead on down the tree, and a second post of a
ping with other contact details is a 409, not a "sold" for a lead it did not sell.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import yaml

from exchange.config import ConfigError, parse_config
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.faults import RawBuyer, RawRequest, response_head, serve_exchange
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    PING_LEAD,
    Exchange,
    config_text,
    realtime_buyer,
)

JSON = ("Content-Type", "application/json")
Behaviour = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[bool]]


def answers(ping: bytes, post: bytes = b'{"accepted": true}') -> Behaviour:
    """A buyer that answers every ping with ``ping`` and every post with ``post``: JSON
    text as written on the wire (so ``\\u0000`` is the JSON escape a buyer would send)."""

    async def behaviour(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        body = ping if request.path == "/ping" else post
        writer.write(response_head(200, JSON, ("Content-Length", str(len(body)))) + body)
        await writer.drain()
        return True

    return behaviour


def _config(buyers: list[dict[str, Any]], **vertical: Any) -> str:
    """The test config, its vertical given a free-text non-PII field and an integer
    without bounds (where unstorable values could hide)."""
    doc = yaml.safe_load(config_text(buyers))
    fields = doc["verticals"]["auto_insurance"]["fields"]
    fields["notes"] = {"type": "string"}
    fields["household_size"] = {"type": "integer"}
    doc["verticals"]["auto_insurance"].update(vertical)
    return yaml.safe_dump(doc, sort_keys=False)


@asynccontextmanager
async def market(
    database_url: str, behaviour: Behaviour, **vertical: Any
) -> AsyncIterator[tuple[Exchange, RawBuyer]]:
    """An exchange with the raw buyer ``odd`` and an honest buyer bidding 10.00."""
    honest = SimulatedBuyerSpec("honest", bid_cents=(1000, 1000))
    async with BuyerSimulator([honest]) as sim, RawBuyer(behaviour) as odd:
        buyers = [
            realtime_buyer(sim, "honest"),
            {"id": "odd", "verticals": ["auto_insurance"], "ping_url": odd.url(),
             "post_url": odd.url("/post"), "secret": "odd-secret", "post_timeout_ms": 500},
        ]  # fmt: skip
        async with serve_exchange(_config(buyers, **vertical), database_url) as ex:
            yield ex, odd


def _rows(story: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["buyer"]: row for row in story["buyers"]}


async def _trading_goes_on(ex: Exchange, times: int = 3) -> None:
    """Pings, their records and posts keep working, and the exchange says it is ready."""
    for _ in range(times):
        answer = await ex.ping()
        assert answer["status"] == "bid"
        story = await ex.story(answer["ping_id"])
        assert story["ping_id"] == answer["ping_id"]
    sold = await ex.post(answer["ping_id"])
    assert sold["status"] == "sold"
    status, _, _ = await ex.call("GET", "/readyz", key=None)
    assert status == 200
    status, _, _ = await ex.call("GET", "/v1/reports/buyers", key=ADMIN_TOKEN)
    assert status == 200


# -- buyers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ping", "reason"),
    [
        (rb'{"bid": 20.00, "bid_id": "a\u0000b"}', "bid_id must not contain the NUL"),
        (rb'{"bid": 20.00, "bid_id": "a\ud800b"}', "invalid json"),
        (b'{"bid": 1e17}', "bid above max_bid (10000.00)"),
        (b'{"bid": 90000000000000000}', "bid above max_bid (10000.00)"),
        (b'{"bid": 10000.01}', "bid above max_bid (10000.00)"),
    ],
    ids=["nul_in_bid_id", "lone_surrogate_in_bid_id", "1e17", "9e16_as_integer", "cent_over"],
)
async def test_an_unstorable_or_insane_bid_is_that_buyers_error_and_trading_goes_on(
    database_url: str, ping: bytes, reason: str
) -> None:
    async with market(database_url, answers(ping)) as (ex, odd):
        answer = await ex.ping()
        story = await ex.story(answer["ping_id"])
        assert _rows(story)["odd"]["outcome"] == "error"
        assert reason in _rows(story)["odd"]["reason"]
        assert answer["price"] == 8.5  # the honest 10.00, never the odd buyer's
        await _trading_goes_on(ex)
        assert odd.requests


async def test_a_bid_at_max_bid_is_a_bid_and_max_bid_is_set_per_vertical(
    database_url: str,
) -> None:
    async with market(database_url, answers(b'{"bid": 60.00}'), max_bid=60.00) as (ex, _):
        answer = await ex.ping()
        assert answer["price"] == 51.0  # 60.00 x 0.85
    async with market(database_url, answers(b'{"bid": 60.01}'), max_bid=60.00) as (ex, _):
        answer = await ex.ping()
        story = await ex.story(answer["ping_id"])
        assert _rows(story)["odd"]["reason"] == "bid above max_bid (60.00)"
        assert answer["price"] == 8.5


def test_max_bid_is_checked_at_load_against_floors_and_fixed_prices() -> None:
    fixed = {"id": "fixed", "verticals": ["auto_insurance"], "price": 70.00,
             "post_url": "http://127.0.0.1:9/post"}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config(_config([fixed], max_bid=60.00, floor=61.00), "test.yaml", env={})
    problems = "\n".join(caught.value.problems)
    assert "verticals.auto_insurance.floor: above the vertical's max_bid" in problems
    assert "buyers[0].price: above verticals.auto_insurance.max_bid (60.00)" in problems


async def test_a_post_accepted_with_a_nul_in_its_lead_id_is_sold_and_billed(
    database_url: str,
) -> None:
    behaviour = answers(b'{"bid": 50.00}', rb'{"accepted": true, "buyer_lead_id": "id\u00001"}')
    async with market(database_url, behaviour) as (ex, _):
        answer = await ex.ping()
        sold = await ex.post(answer["ping_id"])
        assert sold == {"ping_id": answer["ping_id"], "status": "sold", "price": 42.5}
        story = await ex.story(answer["ping_id"])
        assert story["sale"]["buyer"] == "odd"
        assert story["sale"]["buyer_lead_id"] == "id\ufffd1"
        again = await ex.post(answer["ping_id"])  # a retry hears the same sale
        assert again == sold
        await _trading_goes_on(ex)


async def test_a_reject_reason_with_a_nul_moves_the_lead_on_and_is_recorded(
    database_url: str,
) -> None:
    behaviour = answers(b'{"bid": 50.00}', rb'{"accepted": false, "reason": "no\u0000pe"}')
    async with market(database_url, behaviour) as (ex, _):
        answer = await ex.ping()
        sold = await ex.post(answer["ping_id"])
        assert sold["status"] == "sold" and sold["price"] == 8.5
        await asyncio.sleep(0.1)  # post attempts are batched
        story = await ex.story(answer["ping_id"])
        attempts = [(a["buyer"], a["outcome"], a["reason"]) for a in story["post_attempts"]]
        assert attempts == [("odd", "rejected", "no\ufffdpe"), ("honest", "accepted", None)]
        await _trading_goes_on(ex)


async def test_a_sale_the_ledger_refuses_sends_the_lead_down_the_tree(database_url: str) -> None:
    """Should a sale still be refused (here: a constraint added to the test database),
    the lead is not left accepted and unbilled: it goes to the next buyer."""
    async with market(database_url, answers(b'{"bid": 50.00}')) as (ex, _):
        db = await asyncpg.connect(database_url)
        try:
            await db.execute(
                "ALTER TABLE sales ADD CONSTRAINT refuse_odd CHECK (buyer_id <> 'odd')"
            )
        finally:
            await db.close()
        answer = await ex.ping()
        sold = await ex.post(answer["ping_id"])
        assert sold["status"] == "sold" and sold["price"] == 8.5
        await asyncio.sleep(0.1)
        story = await ex.story(answer["ping_id"])
        attempts = [(a["buyer"], a["outcome"]) for a in story["post_attempts"]]
        assert attempts == [("odd", "error"), ("honest", "accepted")]
        assert "ledger refused the sale (23514)" in story["post_attempts"][0]["reason"]
        assert story["sale"]["buyer"] == "honest"
        ex.ctx.metrics.apply_pending()
        unrecorded = ex.ctx.metrics.registry.get_sample_value(
            "exchange_sales_unrecorded_total", {"buyer": "odd"}
        )
        assert unrecorded == 1


# -- sellers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "loc", "msg"),
    [
        ("/v1/ping", {"lead": {**PING_LEAD, "notes": "a\u0000b"}}, ["lead", "notes"], "NUL"),
        ("/v1/leads", {"lead": {**FULL_LEAD, "notes": "a\u0000b"}}, ["lead", "notes"], "NUL"),
        ("/v1/ping", {"lead": {**PING_LEAD, "household_size": 2**64}},
         ["lead", "household_size"], "must be between"),
        ("/v1/ping", {"lead": {**PING_LEAD, "household_size": 2**63}},
         ["lead", "household_size"], "must be between"),
        ("/v1/ping", {"lead": PING_LEAD, "external_id": "x\u0000y"}, ["external_id"], "NUL"),
        ("/v1/leads", {"lead": FULL_LEAD, "external_id": "x\u0000y"}, ["external_id"], "NUL"),
    ],
    ids=["nul_in_ping_field", "nul_in_direct_post_field", "integer_2_64", "integer_2_63",
         "nul_in_ping_external_id", "nul_in_direct_post_external_id"],
)  # fmt: skip
async def test_a_seller_value_the_ledger_cannot_store_is_a_422_naming_the_field(
    database_url: str, path: str, body: dict[str, Any], loc: list[str], msg: str
) -> None:
    async with market(database_url, answers(b'{"bid": 5.00}')) as (ex, _):
        # The standard library's encoder writes integers of any size, as a seller's might.
        raw = json.dumps({"vertical": "auto_insurance", **body}).encode()
        status, answer, _ = await ex.call("POST", path, raw=raw)
        assert status == 422, answer
        assert any(f["loc"] == loc and msg in f["msg"] for f in answer["error"]["fields"]), answer
        await _trading_goes_on(ex)


async def test_a_return_reason_with_a_nul_is_a_422(database_url: str) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("honest", bid_cents=(1000, 1000))]) as sim:
        key = "honest-return-key-0123456789"
        buyer = realtime_buyer(sim, "honest", return_api_key=key, return_window_days=7)
        async with serve_exchange(_config([buyer]), database_url) as ex:
            answer = await ex.ping()
            await ex.post(answer["ping_id"])
            body = {"ping_id": answer["ping_id"], "reason": "bad\u0000lead"}
            status, error, _ = await ex.call("POST", "/v1/returns", body, key=key)
            assert status == 422, error
            assert error["error"]["fields"][0]["loc"] == ["reason"]
            body["reason"] = "disconnected phone"
            status, _, _ = await ex.call("POST", "/v1/returns", body, key=key)
            assert status == 201


# -- one ping, one lead ----------------------------------------------------------------------

OTHER_PEOPLE = [
    {**FULL_LEAD, "first_name": f"Person{i}", "email": f"person{i}@example.com",
     "phone": f"(415) 555-{2600 + i:04d}"}
    for i in range(10)
]  # fmt: skip


async def test_concurrent_posts_of_one_ping_with_other_peoples_details_sell_one_lead(
    database_url: str,
) -> None:
    async with market(database_url, answers(b'{"bid": 50.00}')) as (ex, odd):
        answer = await ex.ping()
        ping_id = answer["ping_id"]
        results = await asyncio.gather(
            *(ex.call("POST", "/v1/post", {"ping_id": ping_id, "lead": lead})
              for lead in OTHER_PEOPLE)
        )  # fmt: skip
        sold = [body for status, body, _ in results if status == 200]
        conflicts = [body for status, body, _ in results if status == 409]
        assert len(sold) == 1 and sold[0]["status"] == "sold", results
        assert len(conflicts) == 9
        assert all(c["error"]["fields"][0]["loc"] == ["lead"] for c in conflicts)
        assert len([r for r in odd.requests if r.path == "/post"]) == 1


async def test_a_repost_of_the_same_lead_hears_its_sale_and_another_lead_a_409(
    database_url: str,
) -> None:
    async with market(database_url, answers(b'{"bid": 50.00}')) as (ex, _):
        answer = await ex.ping()
        first = await ex.post(answer["ping_id"], OTHER_PEOPLE[0])
        assert first["status"] == "sold"
        assert await ex.post(answer["ping_id"], OTHER_PEOPLE[0]) == first
        status, error, _ = await ex.call(
            "POST", "/v1/post", {"ping_id": answer["ping_id"], "lead": OTHER_PEOPLE[1]}
        )
        assert status == 409, error
        assert "different lead" in error["error"]["message"]
        # Also with the ping expired (the lead answered from the ledger, not memory).
        ex.ctx.pings.clear()
        ex.ctx.clock.advance(timedelta(seconds=ex.ctx.loaded.settings.ping_ttl_s + 3600))
        status, error, _ = await ex.call(
            "POST", "/v1/post", {"ping_id": answer["ping_id"], "lead": OTHER_PEOPLE[1]}
        )
        assert status == 409, error
        status, again, _ = await ex.call(
            "POST", "/v1/post", {"ping_id": answer["ping_id"], "lead": OTHER_PEOPLE[0]}
        )
        assert status == 200 and again == first


async def test_a_repeated_external_id_with_other_contact_details_is_a_409(
    database_url: str,
) -> None:
    async with market(database_url, answers(b'{"bid": 50.00}')) as (ex, _):
        body = {"vertical": "auto_insurance", "external_id": "form-17"}
        status, first, _ = await ex.call("POST", "/v1/leads", {**body, "lead": OTHER_PEOPLE[0]})
        assert status == 200 and first["status"] == "sold"
        status, again, _ = await ex.call("POST", "/v1/leads", {**body, "lead": OTHER_PEOPLE[0]})
        assert status == 200 and again == first
        status, error, _ = await ex.call("POST", "/v1/leads", {**body, "lead": OTHER_PEOPLE[1]})
        assert status == 409, error


async def test_a_ping_row_the_ledger_refuses_fails_that_ping_alone_with_a_422(
    database_url: str,
) -> None:
    """Should a ping row still be refused (here: a constraint added to the test database),
    that ping alone fails, the row waits in the dead-letter table, and trading goes on."""
    async with market(database_url, answers(b'{"bid": 5.00}')) as (ex, _):
        db = await asyncpg.connect(database_url)
        try:
            await db.execute(
                "ALTER TABLE pings ADD CONSTRAINT refuse_notes"
                " CHECK (coalesce(lead->>'notes', '') <> 'refuse me')"
            )
            status, error, _ = await ex.call(
                "POST", "/v1/ping",
                {"vertical": "auto_insurance", "lead": {**PING_LEAD, "notes": "refuse me"}},
            )  # fmt: skip
            assert status == 422, error
            assert "ledger refused to record this auction" in error["error"]["message"]
            await _trading_goes_on(ex)
            dead = await db.fetchval(
                "SELECT count(*) FROM ledger_rejected_rows WHERE table_name = 'pings'"
            )
            assert dead == 1
        finally:
            await db.close()
