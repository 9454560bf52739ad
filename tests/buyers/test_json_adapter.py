"""The JSON adapter beyond its fixtures: money invariants, robustness, registry."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from types import MappingProxyType

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from buyers.adapter import BuyerEndpoint, HttpResponse, PingOffer, PostOffer
from buyers.json_adapter import JsonAdapter
from buyers.registry import ADAPTERS, build_adapter
from buyers.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from exchange.core.money import dollars_json
from exchange.core.outcomes import BidOutcome, PostOutcome

ENDPOINT = BuyerEndpoint(
    buyer_id="b1",
    ping_url="http://127.0.0.1:9001/ping",
    post_url="http://127.0.0.1:9001/post",
    secret=b"k",
)
ADAPTER = JsonAdapter(ENDPOINT)
PING = PingOffer("p1", "auto_insurance", 500, 200, {"state": "CA"})


def _ok(body: bytes) -> HttpResponse:
    return HttpResponse(200, {"content-type": "application/json"}, body)


def test_registry_builds_json_adapter_by_name() -> None:
    assert isinstance(build_adapter("json", ENDPOINT), JsonAdapter)
    assert ADAPTERS["json"] is JsonAdapter


def test_unknown_adapter_name_is_a_clear_key_error() -> None:
    with pytest.raises(KeyError, match="unknown buyer adapter 'xml' for buyer 'b1'"):
        build_adapter("xml", ENDPOINT)


def test_ping_without_ping_url_is_refused() -> None:
    fixed_price = BuyerEndpoint("fixed", None, "http://127.0.0.1:1/post", b"")
    with pytest.raises(ValueError, match="no ping_url"):
        JsonAdapter(fixed_price).ping_request(PING, 1)


def test_signature_verifies_over_the_exact_body() -> None:
    request = ADAPTER.ping_request(PING, 1_700_000_000)
    headers = dict(request.all_headers)
    assert headers["Content-Type"] == "application/json"
    problem = verify(
        b"k",
        headers[TIMESTAMP_HEADER],
        headers[SIGNATURE_HEADER],
        request.body,
        now=1_700_000_000,
    )
    assert problem is None


def test_ping_body_has_exactly_the_protocol_fields_in_order() -> None:
    body = orjson.loads(ADAPTER.ping_request(PING, 1).body)
    assert list(body) == ["ping_id", "vertical", "tmax_ms", "floor", "lead"]
    assert body["floor"] == 2.0


def test_frozen_lead_mappings_and_decimals_serialise() -> None:
    lead = MappingProxyType({"state": "CA", "income": Decimal("52000.10"), "tags": ("a", "b")})
    offer = PostOffer("p1", "b-1", 1999, "auto_insurance", lead)
    body = ADAPTER.post_request(offer, 1).body
    assert b'"income":52000.10' in body
    assert orjson.loads(body)["lead"] == {"state": "CA", "income": 52000.1, "tags": ["a", "b"]}
    assert orjson.loads(body)["price"] == 19.99


@given(st.integers(min_value=1, max_value=10**9))
def test_a_bid_of_exact_dollars_reads_back_to_the_same_cents(cents: int) -> None:
    body = orjson.dumps({"bid": dollars_json(cents)})
    reply = ADAPTER.read_bid(_ok(body))
    assert reply.outcome is BidOutcome.BID
    assert reply.price_cents == cents


@given(
    st.integers(min_value=0, max_value=10**7),
    st.text(alphabet="0123456789", min_size=1, max_size=20),
)
def test_a_bid_finer_than_a_cent_is_rounded_down_never_up(whole: int, fraction: str) -> None:
    text = f"{whole}.{fraction}"
    reply = ADAPTER.read_bid(_ok(b'{"bid": ' + text.encode() + b"}"))
    expected = int((Decimal(text) * 100).to_integral_value(rounding=ROUND_FLOOR))
    if expected == 0:
        assert reply.outcome is BidOutcome.NO_BID
    else:
        assert reply.outcome is BidOutcome.BID
        assert reply.price_cents == expected
        assert Decimal(reply.price_cents) / 100 <= Decimal(text)


@given(st.integers(min_value=100, max_value=599), st.binary(max_size=200))
def test_reading_never_raises_whatever_the_buyer_sends(status: int, body: bytes) -> None:
    response = HttpResponse(status, {}, body)
    assert ADAPTER.read_bid(response).outcome in {
        BidOutcome.BID,
        BidOutcome.NO_BID,
        BidOutcome.ERROR,
    }
    assert ADAPTER.read_post(response).outcome in {
        PostOutcome.ACCEPTED,
        PostOutcome.REJECTED,
        PostOutcome.ERROR,
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b'"12.5"', "not a json object"),
        (b'{"bid": [1]}', "bid is not a number"),
        (b'{"bid": 5, "bid_id": [1]}', "bid_id is not a string"),
        (b'{"bid": 1e300}', "bid too large"),
    ],
)
def test_unreadable_bids_are_errors_naming_the_problem(body: bytes, reason: str) -> None:
    reply = ADAPTER.read_bid(_ok(body))
    assert reply.outcome is BidOutcome.ERROR
    assert reply.reason == reason


def test_a_204_is_no_bid_whatever_its_body() -> None:
    assert ADAPTER.read_bid(HttpResponse(204, {}, b"junk")).outcome is BidOutcome.NO_BID


def test_another_2xx_is_an_error() -> None:
    reply = ADAPTER.read_bid(HttpResponse(201, {}, b'{"bid": 3}'))
    assert (reply.outcome, reply.reason) == (BidOutcome.ERROR, "http 201")


def test_an_accepted_post_with_a_malformed_lead_id_stays_accepted() -> None:
    # Turning it into an error would move the lead on and sell it twice.
    reply = ADAPTER.read_post(_ok(b'{"accepted": true, "buyer_lead_id": {"x": 1}}'))
    assert reply.outcome is PostOutcome.ACCEPTED
    assert reply.buyer_lead_id is None
    numeric = ADAPTER.read_post(_ok(b'{"accepted": true, "buyer_lead_id": 42}'))
    assert numeric.buyer_lead_id == "42"


def test_a_structured_reject_reason_is_kept_as_json_text() -> None:
    reply = ADAPTER.read_post(_ok(b'{"accepted": false, "reason": {"code": 7}}'))
    assert reply.outcome is PostOutcome.REJECTED
    assert reply.reason == '{"code":7}'


def test_a_post_reply_without_accepted_is_an_error() -> None:
    reply = ADAPTER.read_post(_ok(b'{"ok": true}'))
    assert (reply.outcome, reply.reason) == (PostOutcome.ERROR, "missing accepted")
