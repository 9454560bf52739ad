"""Fuzzing what buyers answer: Hypothesis writes a buyer's raw HTTP answers (status
lines, framing, headers, JSON with bids past any column, NUL and lone surrogates in ids
and reasons, invalid UTF-8, truncated bodies, answers after the buyer's timeout, extra
answers on the same keep-alive connection) to the ping and to the post, through a real
exchange and its buyer transport.

Whatever one buyer answers, after each example:

(a) no seller request got a 5xx, except a 503 with Retry-After;
(b) the next auction, with the fuzzed buyer quietly not bidding, still quotes and sells
    to the honest buyer, and nothing the fuzzed buyer wrote before is read as its answer
    (once it has finished writing) or as the answer of its twin, a buyer on the same
    host and port that never bids;
(c) /readyz answers 200 (the database is up);
(d) the fuzzed auction's record (GET /v1/auctions/{ping_id}) answers 200;
(e) no bid, quote, posted price or sale in the ledger is above 10,000.00 (the vertical's
    max_bid; a bid above it is an error).

One exchange serves the whole run (rebuilt after an example that fails,
see tests/support/fuzzing.py); the fuzzed buyer is one raw-socket server whose answers are
switched per example.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from exchange.core.config import LoadedConfig
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.faults import RawBuyer, RawRequest
from tests.support.fuzzing import (
    LiveExchange,
    Raw,
    auction_record,
    honest_round,
    hostile_text,
    hostile_values,
    json_bytes,
    json_text,
    live_settings,
    money_problems,
    number_tokens,
    readiness_problem,
    seller_answer_problem,
)
from tests.support.harness import FULL_LEAD, PING_LEAD, make_config, realtime_buyer

CI_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "250"))
TMAX_MS = 250
FUZZED_TIMEOUT_MS = 150
FUZZED_POST_TIMEOUT_MS = 300
LATE_S = {"/ping": FUZZED_TIMEOUT_MS / 1000 + 0.05, "/post": FUZZED_POST_TIMEOUT_MS / 1000 + 0.05}
EXTRA_AFTER_S = 0.03  # a stray second answer, written after the real one
SETTLE_S = 0.03  # for the last bytes the buyer wrote to reach the exchange
HONEST_BID_CENTS = 1000
MAX_PAYOUT = 10_000.00 * 0.85

# -- what the fuzzed buyer writes ---------------------------------------------------------

OK = b"HTTP/1.1 200 OK"
ODD_STATUS_LINES = [
    b"HTTP/1.1 200 ", b"HTTP/1.1 200", b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 201 Created", b"HTTP/1.1 202 Accepted", b"HTTP/1.1 206 Partial",
    b"HTTP/1.1 299 X", b"HTTP/1.1 302 Found", b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.1 400 Bad", b"HTTP/1.1 500 Oops", b"HTTP/1.1 503 Busy", b"HTTP/1.1 999 What",
    b"HTTP/1.1 2OO OK", b"HTTP/1.1 -200 OK", b"HTTP/1.1 200000 OK", b"HTTP/2 200",
    b"HTTP/1.1 200 \xff\xfe", b"HTTP/1.1 200 OK\x00", b"ICY 200 OK", b"", b"\x00\x00",
]  # fmt: skip
status_lines = st.one_of(
    st.just(OK),
    st.just(OK),
    st.just(OK),
    st.sampled_from(ODD_STATUS_LINES),
    st.integers(min_value=0, max_value=1000).map(lambda code: b"HTTP/1.1 %d X" % code),
    st.binary(max_size=24),
)

JUNK_HEADERS = [
    b"X-Junk: \x01\x02", b"no-colon-here", b"X-Long: " + b"a" * 9000, b"X-Nul: a\x00b",
    b" Folded: continued", b"Content-Type: text/html", b"Content-Type: application/json",
    b"Content-Encoding: gzip", b"Content-Encoding: br", b"Transfer-Encoding: identity",
    b"Connection: close", b"Connection: keep-alive", b"Keep-Alive: timeout=0",
    b"Server: \xff\xfe", b"Content-Type: application/json; charset=latin-1",
    b"Location: http://127.0.0.1:1/elsewhere", b": empty-name",
]  # fmt: skip

FRAMINGS = [
    "length", "length", "length", "length", "chunked", "close", "short_length",
    "long_length", "no_length", "two_lengths", "length_and_chunked", "bad_chunked",
    "negative_length",
]  # fmt: skip


@dataclass(frozen=True)
class Reply:
    """One raw HTTP answer."""

    status_line: bytes
    framing: str
    headers: tuple[bytes, ...]
    body: bytes
    interim: bool = False  # a "100 Continue" first

    def render(self) -> bytes:
        body, framing = self.body, self.framing
        head = [self.status_line]
        if framing == "length":
            head.append(b"Content-Length: %d" % len(body))
        elif framing == "short_length":
            head.append(b"Content-Length: %d" % max(len(body) - 3, 0))
        elif framing == "long_length":
            head.append(b"Content-Length: %d" % (len(body) + 10))
        elif framing == "two_lengths":
            head += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1)]
        elif framing == "negative_length":
            head.append(b"Content-Length: -1")
        elif framing in ("chunked", "length_and_chunked", "bad_chunked"):
            head.append(b"Transfer-Encoding: chunked")
            if framing == "length_and_chunked":
                head.append(b"Content-Length: %d" % len(body))
            body = _chunked(body, broken=framing == "bad_chunked")
        elif framing == "close":
            head.append(b"Connection: close")
        head += self.headers
        interim = b"HTTP/1.1 100 Continue\r\n\r\n" if self.interim else b""
        return interim + b"\r\n".join(head) + b"\r\n\r\n" + body

    @property
    def closes(self) -> bool:
        return self.framing == "close"


def _chunked(body: bytes, broken: bool) -> bytes:
    half = len(body) // 2
    chunks = [part for part in (body[:half], body[half:]) if part]
    if broken:
        return b"".join(b"%x\r\n%s\r\n" % (len(c) + 7, c) for c in chunks) + b"zz\r\n\r\n"
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def _reply(status_line: bytes, body: bytes) -> Reply:
    return Reply(status_line, "length", (b"Content-Type: application/json",), body)


NO_BID = Reply(b"HTTP/1.1 204 No Content", "length", (), b"")
NOT_THIS_ONE = _reply(OK, b'{"accepted": false, "reason": "not this one"}')
# A stray bid as high as the rules allow: read as a later auction's answer, it would win.
STRAY_BID = _reply(OK, b'{"bid": 9999.99, "bid_id": "stray"}')
STRAY_ACCEPT = _reply(OK, b'{"accepted": true, "buyer_lead_id": "stray"}')

# Bids that win (the honest buyer bids 10.00), up to the largest allowed and just past it.
WINNING_BIDS = ["12.50", "25", "50.0", "9999.99", "10000.00", "10000", "1e4", "10000.01",
                "10000.001", "11.119", "15"]  # fmt: skip
ODD_BID_TOKENS = ['"12.50"', '"1e17"', '"NaN"', "null", "true", "false", "[]", "{}",
                  "[12.5]", '{"amount": 12.5}']  # fmt: skip

bids = st.one_of(
    st.sampled_from(WINNING_BIDS).map(Raw),
    st.sampled_from(WINNING_BIDS).map(Raw),
    number_tokens,
    st.sampled_from(ODD_BID_TOKENS).map(Raw),
    hostile_text,
)

ids = st.one_of(
    hostile_text,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(["null", "true", "1e400", "[]", '{"id": "\\u0000"}']).map(Raw),
    hostile_values,
)
extra_keys = st.dictionaries(
    st.sampled_from(["bid", "accepted", "extra", "\x00", "\ud800"]) | hostile_text,
    hostile_values,
    max_size=2,
)


def _object(required: dict[str, Any], optional: dict[str, Any], extra: dict[str, Any]) -> Any:
    """The answer object; an extra key that repeats a required one ("bid" twice) is
    written first, so which of the two counts is up to the reader."""
    if not set(extra) & set(required):
        return {**extra, **required, **optional}
    pairs = [*extra.items(), *required.items(), *optional.items()]
    return Raw("{" + ", ".join(f"{json_text(k)}: {json_text(v)}" for k, v in pairs) + "}")


bid_answers = st.builds(
    _object,
    st.fixed_dictionaries({"bid": bids}),
    st.fixed_dictionaries({}, optional={"bid_id": ids}),
    extra_keys,
)
post_answers = st.builds(
    _object,
    st.fixed_dictionaries(
        {
            "accepted": st.one_of(
                st.just(True),
                st.just(True),
                st.just(False),
                st.sampled_from(["null", '"true"', "1", "0", "{}", "[]", '"yes"']).map(Raw),
            )
        }
    ),
    st.fixed_dictionaries(
        {}, optional={"buyer_lead_id": ids, "reason": hostile_values, "redirect_url": ids}
    ),
    extra_keys,
)

ODD_BODIES = [
    b"", b" ", b"[]", b'"bid"', b"12.5", b"null", b"{", b"}", b"\xff\xfe\xc3",
    b'\xef\xbb\xbf{"bid": 12.5}', b'{"bid": 12.5}{"bid": 99}',
    b'{"bid": 12.5, "bid_id": "\x00"}', b'{"accepted": true, "buyer_lead_id": "\x01"}',
    b'{"bid": 12.5, "bid_id": "\\ud800"}', b'{"accepted": true, "reason": "\\udfff"}',
]  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn, answers: st.SearchStrategy[Any]) -> bytes:
    answer = draw(answers)
    text = json_bytes(answer, ascii_only=draw(st.booleans()))
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "invalid_utf8", "odd"]))
    if damage == "truncate" and text:
        return text[: draw(st.integers(min_value=0, max_value=len(text) - 1))]
    if damage == "invalid_utf8":
        at = draw(st.integers(min_value=0, max_value=len(text)))
        return (
            text[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]))
            + (text[at:])
        )
    if damage == "odd":
        return draw(st.sampled_from(ODD_BODIES) | st.binary(max_size=40))
    return text


def replies(answers: st.SearchStrategy[Any]) -> st.SearchStrategy[Reply]:
    """Well-framed JSON answers whose values are hostile, or anything at all."""
    clean = st.builds(lambda answer, ascii_only: _reply(OK, json_bytes(answer, ascii_only)),
                      answers, st.booleans())  # fmt: skip
    messy = st.builds(
        Reply,
        status_line=status_lines,
        framing=st.sampled_from(FRAMINGS),
        headers=st.lists(
            st.just(b"Content-Type: application/json") | st.sampled_from(JUNK_HEADERS), max_size=3
        ).map(tuple),
        body=bodies(answers),
        interim=st.booleans(),
    )
    return clean | messy


# Answers the exchange should take (a winning bid, an acceptance) with hostile ids and
# reasons: so the fuzzed buyer often wins, gets the post, and its ids reach the ledger.
winning_bids = st.builds(
    lambda bid, bid_id: _reply(OK, json_bytes({"bid": Raw(bid), "bid_id": bid_id})),
    st.sampled_from(WINNING_BIDS),
    hostile_text,
)
acceptances = st.builds(
    lambda accepted, extra: _reply(OK, json_bytes({"accepted": accepted, **extra})),
    st.sampled_from([True, True, True, False]),
    st.fixed_dictionaries({}, optional={"buyer_lead_id": hostile_text, "reason": hostile_text}),
)


@dataclass(frozen=True)
class Answering:
    """How the fuzzed buyer answers one request: its reply, maybe after its timeout, and
    maybe a stray second reply on the same connection (at once or a little later)."""

    reply: Reply
    late: bool = False
    stray: Reply | None = None
    stray_after_s: float = 0.0


def answerings(
    favoured: st.SearchStrategy[Reply], answers: st.SearchStrategy[Any], stray: Reply
) -> st.SearchStrategy[Answering]:
    return st.builds(
        Answering,
        reply=favoured | replies(answers),
        late=st.sampled_from([False, False, False, False, True]),
        stray=st.none() | st.none() | st.just(stray) | replies(answers),
        stray_after_s=st.sampled_from([0.0, EXTRA_AFTER_S]),
    )


QUIET = Answering(NO_BID), Answering(NOT_THIS_ONE)


@dataclass
class FuzzedBuyer:
    """The raw-socket buyer's behaviour: answers the ping and the post the current example
    says, and knows when it has finished writing."""

    ping: Answering = QUIET[0]
    post: Answering = QUIET[1]
    busy: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def answer_with(self, ping: Answering, post: Answering) -> None:
        self.ping, self.post = ping, post

    def quiet(self) -> None:
        self.ping, self.post = QUIET

    async def behaviour(self, request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        if request.path.startswith("/twin/"):
            answering = QUIET[1] if request.path.endswith("/post") else QUIET[0]
        else:
            answering = self.post if request.path == "/post" else self.ping
        self.busy += 1
        self.idle.clear()
        try:
            if answering.late:
                await asyncio.sleep(LATE_S["/post" if request.path.endswith("/post") else "/ping"])
            data = answering.reply.render()
            stray = answering.stray
            if stray is not None and answering.stray_after_s == 0:
                data, stray = data + stray.render(), None
            writer.write(data)
            await writer.drain()
            if stray is not None:
                await asyncio.sleep(answering.stray_after_s)
                writer.write(stray.render())
                await writer.drain()
            if answering.reply.closes:
                writer.close()
                await writer.wait_closed()
                return False
            return True
        finally:
            self.busy -= 1
            if not self.busy:
                self.idle.set()

    async def done_writing(self, give_up_s: float = 2.0) -> None:
        if self.busy:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(give_up_s):
                    await self.idle.wait()
        await asyncio.sleep(SETTLE_S)


@dataclass
class Market:
    buyer: FuzzedBuyer
    live: LiveExchange


@pytest.fixture(scope="module")
async def market(server_dsn: str) -> AsyncIterator[Market]:
    buyer = FuzzedBuyer()
    specs = [SimulatedBuyerSpec("honest", bid_cents=(HONEST_BID_CENTS, HONEST_BID_CENTS))]
    async with BuyerSimulator(specs, record=False) as sim, RawBuyer(buyer.behaviour) as raw:

        def config() -> LoadedConfig:
            def raw_buyer(buyer_id: str, prefix: str) -> dict[str, Any]:
                return {
                    "id": buyer_id, "verticals": ["auto_insurance"],
                    "ping_url": raw.url(f"{prefix}/ping"), "post_url": raw.url(f"{prefix}/post"),
                    "secret": "fuzzed-secret", "timeout_ms": FUZZED_TIMEOUT_MS,
                    "post_timeout_ms": FUZZED_POST_TIMEOUT_MS,
                }  # fmt: skip

            buyers = [realtime_buyer(sim, "honest"), raw_buyer("fuzzed", ""),
                      raw_buyer("twin", "/twin")]  # fmt: skip
            return make_config(buyers, exchange={"tmax_ms": TMAX_MS})

        live = LiveExchange(server_dsn, config)
        try:
            yield Market(buyer, live)
        finally:
            print(f"\nexchange builds: {live.builds} in {live.build_seconds:.1f} s")
            await live.close()


PING = {"vertical": "auto_insurance", "lead": PING_LEAD}


@live_settings(CI_EXAMPLES)
@given(
    ping=answerings(winning_bids, bid_answers, STRAY_BID),
    post=answerings(acceptances, post_answers, STRAY_ACCEPT),
    next_at_once=st.booleans(),
)
async def test_no_buyer_answer_stops_the_exchange(
    market: Market, ping: Answering, post: Answering, next_at_once: bool
) -> None:
    """``next_at_once``: the next auction starts as soon as the seller has its answers,
    while the fuzzed buyer may still be writing (a stray answer may then be taken as its
    own next answer, never as another buyer's); otherwise once it is done writing."""
    live = market.live
    async with live.example() as ex:
        market.buyer.answer_with(ping, post)
        ping_id = None
        try:
            status, quote, headers = await ex.call("POST", "/v1/ping", PING)
            assert seller_answer_problem("ping", status, quote, headers) is None  # (a)
            assert status in (200, 503), (status, quote)
            if status == 200:
                ping_id = quote["ping_id"]
            if status == 200 and quote["status"] == "bid":
                assert quote["price"] <= MAX_PAYOUT, quote  # (e)
                status, sale, headers = await ex.call(
                    "POST", "/v1/post", {"ping_id": ping_id, "lead": FULL_LEAD}
                )
                assert seller_answer_problem("post", status, sale, headers) is None  # (a)
                assert status in (200, 503), (status, sale)
                if status == 200 and sale["status"] == "sold":
                    assert sale["price"] <= MAX_PAYOUT, sale  # (e)
        finally:
            market.buyer.quiet()
        if not next_at_once:
            await market.buyer.done_writing()
        problems, check_id = await honest_round(ex)
        await market.buyer.done_writing()
        assert problems == [], problems  # (b)

        if ping_id is not None:
            problem, record = await auction_record(ex, ping_id)
            assert problem is None, problem  # (d)
            _count_outcomes(record)
            assert _twin_bids(record) == [], "another buyer's answer was read as the twin's"
        assert live.db is not None
        assert await money_problems(live.db) == []  # (e)
        assert await readiness_problem(ex) is None  # (c)

        assert check_id is not None
        problem, story = await auction_record(ex, check_id)
        assert problem is None, problem  # (d), for the auction after
        assert _twin_bids(story) == [], "another buyer's answer was read as the twin's"
        assert story["sale"] is not None and story["sale"]["buyer"] != "twin", story["sale"]
        if not next_at_once:
            fuzzed = next(row for row in story["buyers"] if row["buyer"] == "fuzzed")
            # It answered this auction 204 and had written everything before it began.
            assert fuzzed["outcome"] != "bid", ("an earlier answer was read as this one", fuzzed)
            assert story["sale"]["buyer"] == "honest", story["sale"]


def _twin_bids(record: Any) -> list[Any]:
    """The twin shares the fuzzed buyer's host and port and always answers 204 (and
    rejects): a bid or an accepted post of its own was read from the fuzzed buyer's bytes."""
    return [row for row in record["buyers"] if row["buyer"] == "twin" and row["outcome"] == "bid"]


def _count_outcomes(record: Any) -> None:
    """What the exchange made of the fuzzed answers (pytest --hypothesis-show-statistics)."""
    for row in record["buyers"]:
        if row["buyer"] == "fuzzed":
            event(f"ping: {row['outcome']} {str(row['reason'])[:40]}")
    for row in record["post_attempts"]:
        if row["buyer"] == "fuzzed":
            event(f"post: {row['outcome']} {str(row['reason'])[:40]}")
