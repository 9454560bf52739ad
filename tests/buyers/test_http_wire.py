"""Hostile lead values on the wire: no value a lead can carry changes the structure of a
configured buyer's request (SPEC section 8).

Every format the ``http`` adapter writes is checked: a JSON body, a form body, an XML
body, a GET query string, and ``{bid_id}`` / ``{ping_id}`` placeholders in the URL path.
Two layers:

- Hypothesis over the adapter's own bytes: any text (every code point but NUL and lone
  surrogates, which the lead schema never lets in) parses back, by an independent reader
  (orjson, ``urllib.parse.parse_qsl``, lxml), to exactly the values sent. XML is the one
  format with characters it cannot carry; those arrive as U+FFFD, as
  buyers/templates.py documents, and nothing else changes.
- Concrete hostile values sent through the exchange's real transport (H1Transport) to a
  raw asyncio server on 127.0.0.1 that keeps the exact request bytes: the request line
  and header lines are exactly the expected ones (no ``X-Injected`` header, one
  ``Content-Length``), and the body and target parse back to the values.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from buyers.adapter import BuyerEndpoint, HttpRequest, PingOffer, PostOffer
from buyers.http_adapter import HttpAdapter
from exchange.core.http_templates import PingTemplate, PostTemplate
from exchange.core.outcomes import BidOutcome, PostOutcome
from exchange.transport.h1 import H1Transport

SECRET = "wire-test-secret-0123"
TIMESTAMP = 1_700_000_000
API_KEY = "k-wire-7f3e"
QUERY_KEY = "q k&y/="  # the query credential itself needs encoding
OFFLINE_BASE = "https://buyer.example"

POST_FORMATS = ("json", "form", "xml", "get")
FORMATS = (*POST_FORMATS, "ping_get")

# What a seller could put in a lead, chosen to break each format's structure.
HOSTILE = [
    "\r\nX-Injected: 1",
    "x\r\nX-Injected: 1\r\n\r\nGET /evil HTTP/1.1\r\n",
    "\nX-Injected: 1",
    "\rX-Injected: 1",
    "</Lead><Evil/>",
    "</FirstName><Evil>1</Evil><FirstName>",
    "&",
    "=",
    "%",
    "+",
    '"',
    "'",
    "a&b=c&Lead_ID=forged",
    "100%25 %0D%0A",
    "a+b c",
    "?#/;",
    "..",
    "/../../admin",
    "&amp;&lt;&#13;",
    "]]>",
    "<![CDATA[x]]>",
    '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>&e;',
    '", "Lead_ID": "forged',
    "{bid_id}{ping_id}",
    "\U0001f600\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\u202eevil\u202c \u05e9\u05dc\u05d5\u05dd",
    "a\u2028b\u2029c\x85d",
    "\x01\x07\x08\x0b\x0c\x1b\x7f\x9f",
    "\t\n\r\n\r",
    "\ufffe\uffff\ufeff",
    "\U0010ffff\U000e0001",
    " ",
    "",
]

# XML 1.0's Char production; anything else cannot be carried by an XML document at all.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_READER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def xml_carried(text: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", text)


@dataclass(frozen=True)
class Values:
    """The hostile values of one request: three lead fields and the exchange's ids."""

    first: str
    last: str
    street: str
    bid_id: str
    ping_id: str

    @classmethod
    def all(cls, value: str) -> Values:
        return cls(value, value, value, value, value)


# ---- the buyers -----------------------------------------------------------------------


def post_template(fmt: str, base: str) -> dict[str, Any]:
    return {
        "url": f"{base}/leads/{{bid_id}}/post/{{ping_id}}?campaign=7",
        "method": "GET" if fmt == "get" else "POST",
        "format": "json" if fmt == "get" else fmt,
        "constants": {"SourceID": "LX-17"},
        "fields": {
            "Lead_ID": "bid_id",
            "PingRef": "ping_id",
            "Contact.FirstName": "first_name",
            "Contact.LastName": "last_name",
            "Address.Street": "street_address",
            "Address.Zip": "zip",
        },
        "headers": {"X-Api-Key": API_KEY},
        "auth": {"type": "hmac"},
        "accepted": "/Response/Status" if fmt == "xml" else "$.status",
        "accepted_values": ["Accepted"],
    }


def ping_template(base: str) -> dict[str, Any]:
    return {
        "url": f"{base}/ping/{{ping_id}}",
        "method": "GET",
        "fields": {"Ping": "ping_id", "Zip": "zip", "State": "state", "City": "city"},
        "auth": {"type": "query", "name": "key", "value": QUERY_KEY},
        "headers": {"X-Api-Key": API_KEY},
        "bid": "$.bid",
    }


def adapter(fmt: str, base: str) -> HttpAdapter:
    post_fmt = "json" if fmt == "ping_get" else fmt
    ping = PingTemplate.model_validate(ping_template(base))
    post = PostTemplate.model_validate(post_template(post_fmt, base))
    return HttpAdapter(
        BuyerEndpoint(
            buyer_id="wire-buyer",
            ping_url=ping.url,
            post_url=post.url,
            secret=SECRET.encode(),
            ping_template=ping,
            post_template=post,
        )
    )


def request_for(fmt: str, base: str, v: Values) -> HttpRequest:
    buyer = adapter(fmt, base)
    if fmt == "ping_get":
        lead = {"zip": v.first, "state": v.last, "city": v.street}
        return buyer.ping_request(PingOffer(v.ping_id, "auto_insurance", 800, 250, lead), TIMESTAMP)
    lead = {
        "first_name": v.first,
        "last_name": v.last,
        "street_address": v.street,
        "zip": "90210",
        "state": "CA",
    }
    offer = PostOffer(v.ping_id, v.bid_id, 1250, "auto_insurance", lead)
    return buyer.post_request(offer, TIMESTAMP)


# ---- what each format must read back as -------------------------------------------------


def expected_pairs(fmt: str, v: Values) -> list[tuple[str, str]]:
    if fmt == "ping_get":
        return [("Ping", v.ping_id), ("Zip", v.first), ("State", v.last), ("City", v.street)]
    return [
        ("SourceID", "LX-17"),
        ("Lead_ID", v.bid_id),
        ("PingRef", v.ping_id),
        ("Contact.FirstName", v.first),
        ("Contact.LastName", v.last),
        ("Address.Street", v.street),
        ("Address.Zip", "90210"),
    ]


def check_body(fmt: str, body: bytes, v: Values) -> None:
    if fmt in ("get", "ping_get"):
        assert body == b""
    elif fmt == "json":
        assert orjson.loads(body) == {
            "SourceID": "LX-17",
            "Lead_ID": v.bid_id,
            "PingRef": v.ping_id,
            "Contact": {"FirstName": v.first, "LastName": v.last},
            "Address": {"Street": v.street, "Zip": "90210"},
        }
    elif fmt == "form":
        assert parse_qsl(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=True, errors="strict"
        ) == expected_pairs(fmt, v)
    else:
        check_xml(body, v)


def check_xml(body: bytes, v: Values) -> None:
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?><Lead>')
    root = etree.fromstring(body, _XML_READER)
    shape = [(element.tag, len(element)) for element in root.iter()]
    assert shape == [
        ("Lead", 5),
        ("SourceID", 0),
        ("Lead_ID", 0),
        ("PingRef", 0),
        ("Contact", 2),
        ("FirstName", 0),
        ("LastName", 0),
        ("Address", 2),
        ("Street", 0),
        ("Zip", 0),
    ]
    assert root.find(".//Evil") is None
    texts = {element.tag: element.text or "" for element in root.iter() if len(element) == 0}
    assert texts == {
        "SourceID": "LX-17",
        "Lead_ID": xml_carried(v.bid_id),
        "PingRef": xml_carried(v.ping_id),
        "FirstName": xml_carried(v.first),
        "LastName": xml_carried(v.last),
        "Street": xml_carried(v.street),
        "Zip": "90210",
    }


def check_target(fmt: str, target: str, v: Values) -> None:
    """The request target: every path segment and query pair reads back as sent."""
    parts = urlsplit(target)
    segments = [unquote(segment, errors="strict") for segment in parts.path.split("/")]
    pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True, errors="strict")
    if fmt == "ping_get":
        assert segments == ["", "ping", v.ping_id]
        assert pairs == [("key", QUERY_KEY), *expected_pairs(fmt, v)]
        return
    assert segments == ["", "leads", v.bid_id, "post", v.ping_id]
    if fmt == "get":
        assert pairs == [("campaign", "7"), *expected_pairs(fmt, v)]
    else:
        assert pairs == [("campaign", "7")]


def signature(body: bytes) -> str:
    mac = hmac.new(SECRET.encode(), b"%d." % TIMESTAMP + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def expected_headers(fmt: str, body: bytes) -> list[tuple[str, str]]:
    """The request's headers, as configured: no lead value is ever one of them."""
    content_types = {"json": "application/json", "form": "application/x-www-form-urlencoded",
                     "xml": "application/xml; charset=utf-8"}  # fmt: skip
    headers = [("Content-Type", content_types[fmt])] if fmt in content_types else []
    headers.append(("X-Api-Key", API_KEY))
    if fmt != "ping_get":
        headers += [
            ("X-Exchange-Timestamp", str(TIMESTAMP)),
            ("X-Exchange-Signature", signature(body)),
        ]
    return headers


# ---- the adapter's bytes, by Hypothesis ---------------------------------------------------

# Every code point a lead value can hold: all but NUL and lone surrogates.
lead_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
hostile_text = st.one_of(
    lead_text,
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(HOSTILE) | lead_text, max_size=4).map("".join),
)
values = st.builds(Values, hostile_text, hostile_text, hostile_text, hostile_text, hostile_text)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(v=values)
def test_any_lead_value_reads_back_exactly_from_the_adapters_bytes(fmt: str, v: Values) -> None:
    request = request_for(fmt, OFFLINE_BASE, v)
    check_body(fmt, request.body, v)
    parts = urlsplit(request.url)
    assert (parts.scheme, parts.netloc) == ("https", "buyer.example")
    assert parts.query.isascii() and parts.path.isascii()
    assert not set(parts.path + parts.query) & set(" \t\r\n#")
    check_target(fmt, f"{parts.path}?{parts.query}", v)
    assert list(request.all_headers) == expected_headers(fmt, request.body)


# ---- through the real transport ----------------------------------------------------------


@dataclass(frozen=True)
class WireRequest:
    """One request exactly as it arrived."""

    method: str
    target: str
    header_lines: list[str]
    body: bytes


class CapturingBuyer:
    """A raw HTTP/1.1 server on 127.0.0.1 keeping every request's exact bytes; it answers
    each with ``answer`` (keep-alive, so the transport's connection reuse is exercised)."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.answer = b""
        self.port = 0

    def answer_with(self, body: bytes, content_type: str) -> None:
        self.answer = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            content_type.encode(),
            len(body),
            body,
        )

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lengths = [
                    int(line.partition(b":")[2])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                body = await reader.readexactly(lengths[0] if len(lengths) == 1 else 0)
                self.requests.append(head + body)
                writer.write(self.answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the transport closed its connection
        finally:
            writer.close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
async def buyer() -> AsyncIterator[CapturingBuyer]:
    capturing = CapturingBuyer()
    server = await asyncio.start_server(capturing.serve, "127.0.0.1", 0)
    capturing.port = server.sockets[0].getsockname()[1]
    try:
        yield capturing
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="module")
async def transport() -> AsyncIterator[H1Transport]:
    h1 = H1Transport()
    yield h1
    await h1.close()


def parse_wire(raw: bytes) -> WireRequest:
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator
    assert head.isascii(), "the request head is ASCII: every value in it is percent-encoded"
    lines = head.decode("ascii").split("\r\n")
    assert not any("\r" in line or "\n" in line for line in lines)
    method, target, version = lines[0].split(" ")
    assert version == "HTTP/1.1"
    return WireRequest(method, target, lines[1:], body)


async def send(
    fmt: str, v: Values, buyer: CapturingBuyer, transport: H1Transport
) -> tuple[HttpRequest, WireRequest, Any]:
    request = request_for(fmt, buyer.base, v)
    if fmt == "xml":
        buyer.answer_with(b"<Response><Status>Accepted</Status></Response>", "application/xml")
    elif fmt == "ping_get":
        buyer.answer_with(b'{"bid": "3.50"}', "application/json")
    else:
        buyer.answer_with(b'{"status": "Accepted"}', "application/json")
    seen = len(buyer.requests)
    response = await transport.send(request, 5.0, buyer="wire-buyer")
    assert len(buyer.requests) == seen + 1, "exactly one request arrived"
    reading = adapter(fmt, buyer.base)
    reply = reading.read_bid(response) if fmt == "ping_get" else reading.read_post(response)
    return request, parse_wire(buyer.requests[-1]), reply


def check_wire(fmt: str, request: HttpRequest, wire: WireRequest, port: int, v: Values) -> None:
    assert wire.method == ("POST" if fmt in ("json", "form", "xml") else "GET")
    parts = urlsplit(request.url)
    assert wire.target == f"{parts.path}?{parts.query}", "the transport sends the target as built"
    check_target(fmt, wire.target, v)
    lines = [
        f"Host: 127.0.0.1:{port}",
        f"Content-Length: {len(wire.body)}",
        *(f"{name}: {value}" for name, value in expected_headers(fmt, wire.body)),
    ]
    assert sorted(wire.header_lines) == sorted(lines)
    assert not any(line.lower().startswith("x-injected") for line in wire.header_lines)
    check_body(fmt, wire.body, v)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", HOSTILE, ids=[ascii(h)[1:-1][:40] for h in HOSTILE])
async def test_hostile_value_on_the_wire_keeps_the_request_structure(
    fmt: str, value: str, buyer: CapturingBuyer, transport: H1Transport
) -> None:
    v = Values.all(value)
    request, wire, reply = await send(fmt, v, buyer, transport)
    check_wire(fmt, request, wire, buyer.port, v)
    if fmt == "ping_get":
        assert (reply.outcome, reply.price_cents) == (BidOutcome.BID, 350)
    else:
        assert reply.outcome == PostOutcome.ACCEPTED


@pytest.mark.parametrize("fmt", FORMATS)
async def test_different_hostile_values_in_each_slot_stay_in_their_slot(
    fmt: str, buyer: CapturingBuyer, transport: H1Transport
) -> None:
    v = Values(
        first="\r\nX-Injected: 1",
        last="</LastName><Evil/><LastName>",
        street="a&Lead_ID=forged&b=%0D%0A+",
        bid_id="../\U0001f600?x=1#frag",
        ping_id="p-1\u2028\u202e%2F",
    )
    request, wire, _ = await send(fmt, v, buyer, transport)
    check_wire(fmt, request, wire, buyer.port, v)


async def test_signature_covers_the_exact_bytes_that_arrive(
    buyer: CapturingBuyer, transport: H1Transport
) -> None:
    v = Values.all("\u00e9\r\n&<>\"'\U0001f600")
    for fmt in POST_FORMATS:
        _, wire, _ = await send(fmt, v, buyer, transport)
        headers: Mapping[str, str] = dict(line.split(": ", 1) for line in wire.header_lines)
        assert headers["X-Exchange-Signature"] == signature(wire.body)
