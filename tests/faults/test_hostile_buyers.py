"""Buyers that misbehave on purpose, written on raw sockets: answers dripped byte by byte,
50 MB bodies (declared, chunked, or until close), sockets that never close, gzip bombs,
invalid UTF-8 and JSON, redirects to another buyer, header floods, endless interim
responses. Through the real exchange and its buyer transport: the ping still answers
within tmax, the hostile buyer is recorded as a timeout or an error, the honest buyer
wins, and memory stays bounded.

Also here: overload. With slow buyers and a low ``exchange.max_inflight_auctions``, the
auctions past the limit are refused at once (503 + Retry-After), not queued past tmax.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.faults import RawBuyer, RawRequest, RssPeak, response_head, serve_exchange
from tests.support.harness import FULL_LEAD, PING_LEAD, Exchange, make_config, realtime_buyer

TMAX_MS = 300
SLACK_S = 0.1  # client-side HTTP and scheduling on a loaded CI box, on top of tmax
BODY_BYTES = 50 * 1024 * 1024
CHUNK = b"x" * 65536
MAX_RSS_GROWTH = 20 * 1024 * 1024
JSON = ("Content-Type", "application/json")
TRANSPORTS = ["h1"]

Writer = asyncio.StreamWriter


# -- hostile behaviours: each answers one request on the raw socket -------------------------


async def _answer(writer: Writer, status: int, body: bytes, *headers: tuple[str, str]) -> bool:
    writer.write(response_head(status, JSON, ("Content-Length", str(len(body))), *headers) + body)
    await writer.drain()
    return True


async def slow_drip(request: RawRequest, writer: Writer) -> bool:
    """A good answer, one byte every 20 ms: it would take a second and a half."""
    body = b'{"bid": 99.0}'
    for byte in response_head(200, JSON, ("Content-Length", str(len(body)))) + body:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.02)
    return False


async def never_answers(request: RawRequest, writer: Writer) -> bool:
    await asyncio.sleep(3600)
    return False


async def head_then_silence(request: RawRequest, writer: Writer) -> bool:
    writer.write(response_head(200, JSON, ("Content-Length", "100")) + b'{"bid": 9')
    await writer.drain()
    await asyncio.sleep(3600)
    return False


async def _stream(writer: Writer, total: int, frame: Callable[[bytes], bytes]) -> None:
    sent = 0
    while sent < total:
        writer.write(frame(CHUNK))
        await writer.drain()
        sent += len(CHUNK)


async def huge_declared(request: RawRequest, writer: Writer) -> bool:
    writer.write(response_head(200, JSON, ("Content-Length", str(BODY_BYTES))))
    await _stream(writer, BODY_BYTES, lambda chunk: chunk)
    return False


async def huge_chunked(request: RawRequest, writer: Writer) -> bool:
    writer.write(response_head(200, JSON, ("Transfer-Encoding", "chunked")))
    await _stream(writer, BODY_BYTES, lambda chunk: b"%x\r\n%s\r\n" % (len(chunk), chunk))
    writer.write(b"0\r\n\r\n")
    return False


async def huge_until_close(request: RawRequest, writer: Writer) -> bool:
    writer.write(response_head(200, JSON, ("Connection", "close")))
    await _stream(writer, BODY_BYTES, lambda chunk: chunk)
    return False


@cache
@cache
def gzip_bomb(answer: bytes = b'{"bid": 99.0}') -> bytes:
    """50 MB of JSON whitespace and then a high bid, gzipped to ~50 kB: under the response
    cap, so the exchange reads it whole; decompressed, it would be a valid 99.00 bid.
    Made once, before any exchange runs (``_arm_bombs``): compressing 50 MB takes a few
    hundred ms, and on the test's event loop, which the exchange under test shares, that
    would be a stall of the test's own making, not the buyer's."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    spaces = b" " * (1024 * 1024)
    parts = [packer.compress(spaces) for _ in range(BODY_BYTES // len(spaces))]
    parts += [packer.compress(answer), packer.flush()]
    return b"".join(parts)


def _arm_bombs() -> None:
    gzip_bomb(b'{"bid": 99.0}')
    gzip_bomb(b'{"accepted": true}')


async def gzip_bombed(request: RawRequest, writer: Writer) -> bool:
    answer = b'{"accepted": true}' if request.path == "/post" else b'{"bid": 99.0}'
    return await _answer(writer, 200, gzip_bomb(answer), ("Content-Encoding", "gzip"))


async def invalid_utf8(request: RawRequest, writer: Writer) -> bool:
    return await _answer(writer, 200, b'{"bid": 99.0, "bid_id": "\xff\xfe\xc3"}')


async def invalid_json(request: RawRequest, writer: Writer) -> bool:
    return await _answer(writer, 200, b'{"bid": 99.0, "accepted": true')


async def header_flood(request: RawRequest, writer: Writer) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for n in range(200_000):
        writer.write(b"X-Flood-%d: %s\r\n" % (n, b"y" * 200))
        if n % 100 == 0:
            await writer.drain()
    return False


async def endless_interim(request: RawRequest, writer: Writer) -> bool:
    for _ in range(10_000):
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.005)
    return False


async def garbage_status_line(request: RawRequest, writer: Writer) -> bool:
    writer.write(b'HTTP/1.1 2OO OK\r\nContent-Length: 13\r\n\r\n{"bid": 99.0}')
    await writer.drain()
    return False


def redirect_to(url: str) -> Callable[[RawRequest, Writer], Awaitable[bool]]:
    async def redirect(request: RawRequest, writer: Writer) -> bool:
        target = url.replace("/ping", request.path)
        return await _answer(writer, 307, b"{}", ("Location", target))

    return redirect


@dataclass(frozen=True)
class Hostility:
    behaviour: Callable[[RawRequest, Writer], Awaitable[bool]] | None  # None: redirect
    outcomes: frozenset[str]  # what the auction may record for the hostile buyer


HOSTILE = {
    "slow_drip": Hostility(slow_drip, frozenset({"timeout"})),
    "never_answers": Hostility(never_answers, frozenset({"timeout"})),
    "head_then_silence": Hostility(head_then_silence, frozenset({"timeout"})),
    "50MB_declared": Hostility(huge_declared, frozenset({"error"})),
    "50MB_chunked": Hostility(huge_chunked, frozenset({"error"})),
    "50MB_until_close": Hostility(huge_until_close, frozenset({"error"})),
    "gzip_bomb": Hostility(gzip_bombed, frozenset({"error"})),
    "invalid_utf8": Hostility(invalid_utf8, frozenset({"error"})),
    "invalid_json": Hostility(invalid_json, frozenset({"error"})),
    "header_flood": Hostility(header_flood, frozenset({"error"})),
    "endless_interim": Hostility(endless_interim, frozenset({"timeout", "error"})),
    "garbage_status_line": Hostility(garbage_status_line, frozenset({"error"})),
    "redirect_to_another_buyer": Hostility(None, frozenset({"error"})),
}


@asynccontextmanager
async def hostile_setup(
    name: str, database_url: str, transport: str, post_timeout_ms: int = 400, **exchange: Any
) -> AsyncIterator[tuple[Exchange, RawBuyer, BuyerSimulator]]:
    """An exchange with the hostile buyer, an honest one bidding 10.00, and a bait buyer
    (not configured) bidding 99.00 and accepting everything: the redirect target."""
    specs = [SimulatedBuyerSpec("honest", bid_cents=(1000, 1000)),
             SimulatedBuyerSpec("bait", bid_cents=(9900, 9900))]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        hostility = HOSTILE[name]
        behaviour = hostility.behaviour or redirect_to(sim.ping_url("bait"))
        async with RawBuyer(behaviour) as hostile:
            config = make_config(
                [
                    realtime_buyer(sim, "honest"),
                    {"id": "hostile", "verticals": ["auto_insurance"], "ping_url": hostile.url(),
                     "post_url": hostile.url("/post"), "secret": "hostile-secret",
                     "post_timeout_ms": post_timeout_ms},
                ],
                exchange={"tmax_ms": TMAX_MS, "transport": transport, **exchange},
            )  # fmt: skip
            _arm_bombs()
            async with serve_exchange(config, database_url) as ex:
                yield ex, hostile, sim


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_buyer_cannot_stall_or_bloat_the_auction(
    database_url: str, name: str, transport: str
) -> None:
    async with hostile_setup(name, database_url, transport) as (ex, hostile, sim):
        # Warm up connections and the ledger's commit-time estimate, so the measurement is
        # of the hostility: a first ping on a busy machine may find its row late (503).
        for _ in range(5):
            status, _, _ = await ex.call(
                "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD}
            )
            if status == 200:
                break
        async with RssPeak() as memory:
            started = time.monotonic()
            answer = await ex.ping()
            elapsed = time.monotonic() - started
        story = await ex.story(answer["ping_id"])
        outcomes = {row["buyer"]: row for row in story["buyers"]}
        sold = await ex.post(answer["ping_id"])
        print(f"\n{name}/{transport}: ping {elapsed * 1000:.0f} ms, "
              f"outcome {outcomes['hostile']['outcome']} ({outcomes['hostile']['reason']}), "
              f"rss +{memory.growth / 1e6:.1f} MB")  # fmt: skip

    assert elapsed < TMAX_MS / 1000 + SLACK_S
    assert hostile.requests, "the hostile buyer was never asked"
    assert outcomes["hostile"]["outcome"] in HOSTILE[name].outcomes, outcomes["hostile"]
    assert outcomes["honest"]["outcome"] == "bid" and outcomes["honest"]["rank"] == 1
    assert answer["status"] == "bid" and answer["price"] == 8.5  # 10.00 x 0.85
    assert sold["status"] == "sold" and sold["price"] == 8.5
    assert sim.counters("bait").pings == sim.counters("bait").posts == 0
    assert memory.growth < MAX_RSS_GROWTH


# -- hostility at post time ------------------------------------------------------------------

POST_HOSTILE = ["slow_drip", "never_answers", "50MB_chunked", "gzip_bomb", "invalid_json",
                "redirect_to_another_buyer"]  # fmt: skip
POST_TIMEOUT_MS = 400


def bids_then(name: str, bait_url: str) -> Callable[[RawRequest, Writer], Awaitable[bool]]:
    """Bids an honest 50.00 on the ping; misbehaves on the post (which carries PII)."""
    hostile = HOSTILE[name].behaviour or redirect_to(bait_url)

    async def behaviour(request: RawRequest, writer: Writer) -> bool:
        if request.path == "/ping":
            return await _answer(writer, 200, b'{"bid": 50.0, "bid_id": "h1"}')
        return await hostile(request, writer)

    return behaviour


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", POST_HOSTILE)
async def test_hostile_post_endpoint_falls_back_down_the_ping_tree(
    database_url: str, name: str, transport: str
) -> None:
    specs = [SimulatedBuyerSpec("honest", bid_cents=(1000, 1000)),
             SimulatedBuyerSpec("bait", bid_cents=(9900, 9900))]  # fmt: skip
    async with BuyerSimulator(specs) as sim, RawBuyer(bids_then(name, sim.ping_url("bait"))) as hb:
        config = make_config(
            [realtime_buyer(sim, "honest"),
             {"id": "hostile", "verticals": ["auto_insurance"], "ping_url": hb.url(),
              "post_url": hb.url("/post"), "secret": "s", "post_timeout_ms": POST_TIMEOUT_MS}],
            exchange={"tmax_ms": TMAX_MS, "transport": transport},
        )  # fmt: skip
        _arm_bombs()
        async with serve_exchange(config, database_url) as ex:
            answer = await ex.ping()
            assert answer["price"] == 42.5  # the hostile buyer's 50.00 leads the tree
            async with RssPeak() as memory:
                started = time.monotonic()
                sold = await ex.post(answer["ping_id"])
                elapsed = time.monotonic() - started
            story = await ex.story(answer["ping_id"])
    attempts = [(a["buyer"], a["outcome"]) for a in story["post_attempts"]]
    print(f"\npost {name}/{transport}: {elapsed * 1000:.0f} ms, {attempts}, "
          f"rss +{memory.growth / 1e6:.1f} MB")  # fmt: skip
    assert attempts[0][0] == "hostile" and attempts[0][1] in ("timeout", "error")
    assert attempts[-1] == ("honest", "accepted")
    assert sold["status"] == "sold" and sold["price"] == 8.5
    assert story["sale"]["buyer"] == "honest"
    assert elapsed < POST_TIMEOUT_MS / 1000 + 0.5
    # A redirect is never followed: the full lead (with PII) goes nowhere else.
    assert sim.counters("bait").posts == 0
    assert memory.growth < MAX_RSS_GROWTH


# -- overload ----------------------------------------------------------------------------------

LIMIT = 4
BURST = 24
BUYER_LATENCY_MS = 250


Body = dict[str, Any] | Callable[[int], dict[str, Any]]


async def _burst(ex: Exchange, path: str, body: Body, n: int) -> list[tuple[int, float, Any]]:
    async def one(i: int) -> tuple[int, float, Any]:
        started = time.monotonic()
        payload = body(i) if callable(body) else body
        status, answer, headers = await ex.call("POST", path, payload)
        return status, time.monotonic() - started, (answer, headers)

    return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.fixture
async def slow_exchange(database_url: str) -> AsyncIterator[tuple[Exchange, BuyerSimulator]]:
    specs = [SimulatedBuyerSpec("slow", bid_cents=(1000, 1000),
                                latency_ms=(BUYER_LATENCY_MS, BUYER_LATENCY_MS))]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        config = make_config(
            [realtime_buyer(sim, "slow")],
            exchange={"tmax_ms": 400, "max_inflight_auctions": LIMIT},
        )
        async with serve_exchange(config, database_url) as ex:
            yield ex, sim


@pytest.mark.parametrize("path", ["/v1/ping", "/v1/leads"])
async def test_auctions_past_the_limit_are_refused_at_once(
    slow_exchange: tuple[Exchange, BuyerSimulator], path: str
) -> None:
    ex, sim = slow_exchange
    lead = PING_LEAD if path == "/v1/ping" else FULL_LEAD
    results = await _burst(ex, path, {"vertical": "auto_insurance", "lead": lead}, BURST)
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    print(f"\n{path}: {len(served)} served, {len(refused)} refused in "
          f"max {max(r[1] for r in refused) * 1000:.0f} ms")  # fmt: skip
    assert len(served) + len(refused) == BURST
    assert len(served) == LIMIT
    assert sim.counters("slow").pings == LIMIT
    for _, elapsed, (body, headers) in refused:
        assert body["error"]["code"] == "not_ready"
        assert int(headers["Retry-After"]) >= 1
        assert elapsed < 0.1  # at once, not after waiting for a slot
    assert max(r[1] for r in results) < 0.4 + SLACK_S + (1.0 if path == "/v1/leads" else 0)
    # The slots free up: the next auction runs.
    status, _, _ = await ex.call("POST", path, {"vertical": "auto_insurance", "lead": lead})
    assert status == 200


async def test_the_limit_holds_for_pings_with_external_ids(
    slow_exchange: tuple[Exchange, BuyerSimulator],
) -> None:
    ex, sim = slow_exchange
    results = await _burst(
        ex, "/v1/ping",
        lambda i: {"vertical": "auto_insurance", "lead": PING_LEAD, "external_id": f"e-{i}"},
        BURST,
    )  # fmt: skip
    statuses = [r[0] for r in results]
    assert statuses.count(200) <= LIMIT, statuses
    assert sim.counters("slow").pings <= LIMIT


@pytest.fixture
async def quick_exchange(database_url: str) -> AsyncIterator[Exchange]:
    """tmax 100 ms, so the default overload threshold is 50 ms."""
    specs = [SimulatedBuyerSpec("quick", bid_cents=(1000, 1000), latency_ms=(1, 3))]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, "quick")], exchange={"tmax_ms": 100})
        async with serve_exchange(config, database_url) as ex:
            yield ex


PING = {"vertical": "auto_insurance", "lead": PING_LEAD}


def _refusals(ex: Exchange, reason: str) -> float:
    ex.ctx.metrics.apply_pending()
    value = ex.ctx.metrics.registry.get_sample_value(
        "exchange_overload_refusals_total", {"reason": reason}
    )
    return value or 0.0


async def test_a_process_that_keeps_running_late_refuses_new_auctions_then_recovers(
    quick_exchange: Exchange,
) -> None:
    ex = quick_exchange
    assert ex.ctx.loaded.overload_lag_s == 0.05
    loop = asyncio.get_running_loop()
    hog_until = loop.time() + 1.0

    def hog() -> None:  # more work than CPU: the loop holds 80 ms at a time, again and again
        time.sleep(0.08)
        if loop.time() < hog_until:
            loop.call_soon(hog)

    loop.call_soon(hog)
    answers = []
    while loop.time() < hog_until:
        answers.append(await ex.call("POST", "/v1/ping", PING))
    refused = [(body, headers) for status, body, headers in answers if status == 503]
    assert refused, [status for status, _, _ in answers]
    for body, headers in refused:
        assert body["error"]["code"] == "not_ready"
        assert "exchange overloaded: running" in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1
    assert _refusals(ex, "loop_lag") == len(refused)
    await asyncio.sleep(0.05)  # caught up: the next ping runs
    status, body, _ = await ex.call("POST", "/v1/ping", PING)
    assert status == 200, body


async def test_one_stall_does_not_refuse_the_pings_queued_behind_it(
    quick_exchange: Exchange,
) -> None:
    ex = quick_exchange
    loop = asyncio.get_running_loop()
    pings = [loop.create_task(ex.call("POST", "/v1/ping", PING)) for _ in range(5)]
    # The requests are written, then the loop stalls once (a long garbage collection, say)
    # while they wait unread.
    loop.call_soon(time.sleep, 0.15)
    statuses = [status for status, _, _ in await asyncio.gather(*pings)]
    assert statuses == [200] * 5
    assert _refusals(ex, "loop_lag") == 0


def test_the_overload_threshold_defaults_to_half_of_tmax_and_can_be_turned_off() -> None:
    assert make_config([], exchange={"tmax_ms": 250}).overload_lag_s == 0.125
    assert make_config([], exchange={"tmax_ms": 30}).overload_lag_s == 0.02  # the floor
    assert make_config([], exchange={"overload_lag_ms": 30}).overload_lag_s == 0.03
    assert make_config([], exchange={"overload_lag_ms": 0}).overload_lag_s == 0
