"""A buyer connection answers only the request on it.

HTTP/1.1 pairs answers with requests by order alone, so a buyer that writes a second
response to one request would have it read as the answer to the next request on that
connection. These tests, with buyers written on raw sockets, pin what the exchange does
about it: connections are never shared between buyers (two buyers on one host and port
included), bytes nobody asked for close the connection they came on, a buyer that sent
them loses keep-alive reuse (exchange_buyer_unsolicited_responses_total counts it), and a
late answer is handled in the context of its own request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from buyers.adapter import HttpRequest
from exchange.transport.h1 import H1Transport
from tests.support.faults import RawBuyer, RawRequest, response_head, serve_exchange
from tests.support.harness import FULL_LEAD, PING_LEAD, SELLER_KEY, Exchange, make_config

JSON = ("Content-Type", "application/json")
STRAY_AFTER_S = 0.03  # the second answer comes this long after the first
AUCTIONS = 8
SECOND_SELLER_KEY = "second-test-key-0123456789"

Writer = asyncio.StreamWriter


def answer(body: bytes) -> bytes:
    return response_head(200, JSON, ("Content-Length", str(len(body)))) + body


def raw_buyer(raw: RawBuyer, buyer_id: str, **extra: Any) -> dict[str, Any]:
    """A buyer at /<id>/ping and /<id>/post on `raw`: buyers sharing one host and port."""
    return {
        "id": buyer_id,
        "verticals": ["auto_insurance"],
        "ping_url": raw.url(f"/{buyer_id}/ping"),
        "post_url": raw.url(f"/{buyer_id}/post"),
        "secret": f"secret-of-{buyer_id}-0123456789",
        **extra,
    }


async def answers_twice(writer: Writer, body: bytes) -> bool:
    """Answers, then 30 ms later writes a second answer, a 99.00 bid, on the same socket."""
    writer.write(answer(body))
    await writer.drain()
    await asyncio.sleep(STRAY_AFTER_S)
    writer.write(answer(b'{"bid": 99.0}'))
    await writer.drain()
    return True


async def a_answers_twice_b_once(request: RawRequest, writer: Writer) -> bool:
    if request.path == "/a/ping":
        return await answers_twice(writer, b'{"bid": 5.0}')
    if request.path == "/b/ping":
        writer.write(answer(b'{"bid": 4.0}'))
    else:
        writer.write(answer(b'{"accepted": true}'))
    await writer.drain()
    return True


async def test_a_buyers_second_answer_is_never_another_buyers_bid_on_the_same_host(
    database_url: str,
) -> None:
    async with RawBuyer(a_answers_twice_b_once) as raw:
        config = make_config([raw_buyer(raw, "a"), raw_buyer(raw, "b")])
        async with serve_exchange(config, database_url) as ex:
            ping_ids = [(await ex.ping())["ping_id"] for _ in range(AUCTIONS)]
            stories = []
            for ping_id in ping_ids:
                await ex.post(ping_id)
                stories.append(await ex.story(ping_id))
    for story in stories:
        rows = {row["buyer"]: row for row in story["buyers"]}
        assert (rows["b"]["outcome"], rows["b"]["bid"]) == ("bid", 4.0), story["ping_id"]
        sale = story["sale"]
        if sale is not None and sale["buyer"] == "b":
            assert sale["price"] == 4.0, story["ping_id"]


async def a_answers_twice(request: RawRequest, writer: Writer) -> bool:
    return await answers_twice(writer, b'{"bid": 5.0}')


async def test_a_buyer_that_answers_twice_gets_fresh_connections_from_then_on(
    database_url: str,
) -> None:
    async with RawBuyer(a_answers_twice) as raw:
        config = make_config([raw_buyer(raw, "a")])
        async with serve_exchange(config, database_url) as ex:
            stats = ex.ctx.transport.stats
            ping_ids = [(await ex.ping())["ping_id"] for _ in range(AUCTIONS)]
            await asyncio.sleep(STRAY_AFTER_S * 3)  # every second answer has come
            seen = stats.unsolicited.get("a", 0)
            opened, sent = stats.connections_opened, stats.requests_sent
            for _ in range(4):
                await ex.ping()
            fresh, asked = stats.connections_opened - opened, stats.requests_sent - sent
            stories = [await ex.story(ping_id) for ping_id in ping_ids]
            metrics = ex.ctx.metrics
            metrics.apply_pending()
            counted = metrics.registry.get_sample_value(
                "exchange_buyer_unsolicited_responses_total", {"buyer": "a"}
            )
    assert seen >= 1
    assert counted == stats.unsolicited["a"]
    # No reuse once a stray answer was seen: every request on a connection of its own.
    assert (fresh, asked) == (4, 4)
    bids = [row["bid"] for story in stories for row in story["buyers"] if row["buyer"] == "a"]
    assert len(bids) == AUCTIONS
    # A stray answer can be taken once, as that same buyer's next answer; never again.
    assert bids.count(99.0) <= 1, bids
    assert bids.count(5.0) >= AUCTIONS - 1, bids


def transport_buyer_server(extra: bytes) -> tuple[RawBuyer, list[int]]:
    """Answers the request with body "first" and `extra` in one write, then (should the
    next request come on that connection) the rest of a stray response before its answer;
    every other request gets its own body back. Records each request's peer port."""
    stray = answer(b"stray")
    owed: dict[Writer, bytes] = {}
    ports: list[int] = []

    async def behaviour(request: RawRequest, writer: Writer) -> bool:
        ports.append(writer.get_extra_info("peername")[1])
        rest = owed.pop(writer, b"")
        if request.body == b"first":
            writer.write(answer(b"first") + extra)
            owed[writer] = stray[len(extra) :]
        else:
            writer.write(rest + answer(request.body))
        await writer.drain()
        return True

    return RawBuyer(behaviour), ports


@pytest.mark.parametrize(
    "extra",
    [answer(b"stray"), b"HTTP/1.1 200 X\r\n", b"H"],
    ids=["whole-response", "status-line", "one-byte"],
)
async def test_bytes_after_a_response_in_the_same_write_close_the_connection(
    extra: bytes,
) -> None:
    server, ports = transport_buyer_server(extra)
    transport = H1Transport()
    try:
        async with server:
            url = server.url("/a/ping")
            first = await transport.send(HttpRequest("POST", url, (), b"first"), 2.0, buyer="a")
            second = await transport.send(HttpRequest("POST", url, (), b"second"), 2.0, buyer="a")
    finally:
        await transport.close()
    assert (first.body, second.body) == (b"first", b"second")
    assert len(set(ports)) == 2  # the second request went on a new connection
    assert transport.stats.connections_opened == 2
    assert transport.stats.unsolicited == {"a": 1}


async def test_bytes_on_an_idle_connection_close_it_and_end_that_buyers_reuse_only() -> None:
    async def behaviour(request: RawRequest, writer: Writer) -> bool:
        if request.body == b"first":
            return await answers_twice(writer, b"first")
        writer.write(answer(request.body))
        await writer.drain()
        return True

    def call(url: str, body: bytes) -> HttpRequest:
        return HttpRequest("POST", url, (), body)

    transport = H1Transport()
    try:
        async with RawBuyer(behaviour) as server:
            a, b = server.url("/a/ping"), server.url("/b/ping")
            await transport.send(call(a, b"first"), 2.0, buyer="a")
            await transport.send(call(b, b"b-1"), 2.0, buyer="b")
            await asyncio.sleep(STRAY_AFTER_S * 3)  # the stray arrived on a's idle connection
            assert transport.stats.unsolicited == {"a": 1}
            answers = [
                (await transport.send(call(a, b"a-2"), 2.0, buyer="a")).body,
                (await transport.send(call(a, b"a-3"), 2.0, buyer="a")).body,
                (await transport.send(call(b, b"b-2"), 2.0, buyer="b")).body,
            ]
    finally:
        await transport.close()
    assert answers == [b"a-2", b"a-3", b"b-2"]
    # a: one connection per request from then on; b: its one connection, reused.
    assert transport.stats.connections_opened == 4
    assert transport.stats.requests_sent == 5


async def second_seller_ping(ex: Exchange) -> Any:
    body = {"vertical": "auto_insurance", "lead": PING_LEAD}
    status, answered, _ = await ex.call("POST", "/v1/ping", body, key=SECOND_SELLER_KEY)
    assert status == 200, answered
    return answered


async def test_a_late_post_answer_is_logged_with_its_own_lead_and_seller(
    database_url: str,
) -> None:
    post_timeout_s, late_s = 0.2, 0.4

    async def behaviour(request: RawRequest, writer: Writer) -> bool:
        if request.path == "/a/post":
            await asyncio.sleep(late_s)
            writer.write(answer(b'{"accepted": true}'))
        else:
            writer.write(answer(b'{"bid": 5.0}'))
        await writer.drain()
        return True

    sellers = [
        {"id": "acme-media", "api_key": SELLER_KEY, "payout_share": 0.85},
        {"id": "second-seller", "api_key": SECOND_SELLER_KEY, "payout_share": 0.8},
    ]
    async with RawBuyer(behaviour) as raw:
        buyer = raw_buyer(raw, "a", post_timeout_ms=round(post_timeout_s * 1000))
        config = make_config([buyer], sellers=sellers)
        async with serve_exchange(config, database_url) as ex:
            stats = ex.ctx.transport.stats
            await ex.ping()  # acme-media's lead: its request opens the buyer's connection
            lead = await second_seller_ping(ex)
            with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
                status, posted, _ = await ex.call(
                    "POST",
                    "/v1/post",
                    {"ping_id": lead["ping_id"], "lead": FULL_LEAD},
                    key=SECOND_SELLER_KEY,
                )
                await asyncio.sleep(late_s)  # the late acceptance arrives
            # One connection carried all three requests: the post went on the one
            # acme-media's ping opened.
            assert (stats.connections_opened, stats.requests_sent) == (1, 3)
    assert status == 200, posted
    late = [entry for entry in logs if entry["event"] == "post_answer_after_timeout"]
    assert len(late) == 1, logs
    assert late[0]["ping_id"] == lead["ping_id"]
    assert late[0]["seller"] == "second-seller"
    assert late[0]["outcome"] == "accepted"
