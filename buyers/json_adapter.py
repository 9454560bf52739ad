"""The default buyer adapter: SPEC section 5's JSON protocol, signed with HMAC.

Ping ``{"ping_id", "vertical", "tmax_ms", "floor", "score"?, "lead"}`` (``score`` only
when the vertical scores its leads), post ``{"ping_id", "bid_id", "price", "vertical",
"lead"}``; money goes out as dollars with at most two
decimals. A bid comes back as dollars and is read exactly from its decimal text; a bid
finer than a cent is rounded down, so a buyer never pays more than it bid.

``read_bid`` and ``read_post`` never raise: whatever a buyer sends maps to a reply,
anything not understood to ERROR with a short reason naming the problem.

Endpoint options: ``headers`` (a mapping of extra static headers, e.g. a buyer's API
key) is sent with every request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

import orjson

from buyers.adapter import (
    BidReply,
    BuyerEndpoint,
    HttpRequest,
    HttpResponse,
    PingOffer,
    PostOffer,
    PostReply,
)
from buyers.signing import Signer
from exchange.core.money import dollars_json
from exchange.core.outcomes import BidOutcome, PostOutcome
from exchange.core.storable import MAX_ID_CHARS, MAX_REASON_CHARS

_CENT = Decimal("0.01")
# A float's shortest repr equals the JSON text it came from whenever that text has at
# most 15 significant digits. Longer digit runs (a bid of 12.349999999999999999, or one
# beyond float range) are re-read as Decimal so rounding down stays exact.
_LONG_NUMBER = re.compile(rb"[0-9.]{16,}")

_NO_BID = BidReply(BidOutcome.NO_BID)
_MEMO_KEY = "json"


class _BadReply(Exception):
    """Internal: the buyer's answer is not understood; the message is the reason."""


def _json_default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return orjson.dumps(payload, default=_json_default)


def _load_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise _BadReply("empty body")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _BadReply("invalid json") from None
    if not isinstance(parsed, dict):
        raise _BadReply("not a json object")
    return parsed


def _exact_decimal(value: object, body: bytes) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadReply("bid is not a number")
    if isinstance(value, int):
        return Decimal(value)
    if _LONG_NUMBER.search(body) is None:
        return Decimal(repr(value))
    exact = json.loads(body, parse_float=Decimal).get("bid")
    return exact if isinstance(exact, Decimal) else Decimal(exact)


def _bid_cents(value: object, body: bytes) -> int:
    """Dollars (a JSON number) to whole cents, rounded down; 0 means no bid."""
    if type(value) is float and 0.0 <= value < 1e9:
        # Fast path for the usual bid: when cents/100 rounds to this very float, the float's
        # shortest decimal form is cents/100, so the bid has at most two decimals exactly.
        cents = round(value * 100)
        if cents / 100 == value and _LONG_NUMBER.search(body) is None:
            return cents
    amount = _exact_decimal(value, body)
    if amount < 0:
        raise _BadReply("negative bid")
    try:
        return int(amount.quantize(_CENT, rounding=ROUND_FLOOR).scaleb(2))
    except InvalidOperation:
        raise _BadReply("bid too large") from None


def _optional_id(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _BadReply(f"{name} is not a string")
    text = str(value)
    if len(text) > MAX_ID_CHARS:
        raise _BadReply(f"{name} too long")
    return text


def _status_reason(status: int) -> str:
    return f"http {status}"


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _extra_headers(headers: object) -> list[tuple[str, str]]:
    """Fixed headers a buyer asked for (an API key, say); refused at config load if they
    are not a mapping of token names to single-line text."""
    if headers is None:
        return []
    if not isinstance(headers, Mapping):
        raise ValueError("headers must be a mapping of header name to value")
    found = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if not isinstance(value, str | int) or any(c in str(value) for c in "\r\n\0"):
            raise ValueError(f"header {name}: the value must be one line of text")
        found.append((name, str(value)))
    return found


class JsonAdapter:
    """SPEC section 5's JSON protocol for one buyer."""

    __slots__ = ("_endpoint", "_ping_url", "_post_url", "_signer", "_static_headers", "masked")

    def __init__(self, endpoint: BuyerEndpoint) -> None:
        self._endpoint = endpoint
        self._ping_url = endpoint.ping_url
        self._post_url = endpoint.post_url
        self._signer = Signer(endpoint.secret)
        extra = _extra_headers(endpoint.options.get("headers"))
        self._static_headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", "application/json"),
            *extra,
        )
        # Shown masked by buyer-test: the signature, and extra headers (a buyer's API key).
        self.masked = frozenset({"x-exchange-signature", *(name.lower() for name, _ in extra)})

    @property
    def endpoint(self) -> BuyerEndpoint:
        return self._endpoint

    def _request(self, url: str, body: bytes, timestamp: int) -> HttpRequest:
        signature = self._signer.headers(timestamp, body)
        return HttpRequest("POST", url, signature, body, self._static_headers)

    def ping_request(self, offer: PingOffer, timestamp: int) -> HttpRequest:
        if self._ping_url is None:
            raise ValueError(f"buyer {self._endpoint.buyer_id!r} has no ping_url")
        # Every JSON buyer of an auction gets the same body: encoded once, signed per buyer.
        body = offer.memo.get(_MEMO_KEY)
        if body is None:
            payload: dict[str, Any] = {
                "ping_id": offer.ping_id,
                "vertical": offer.vertical,
                "tmax_ms": offer.tmax_ms,
                "floor": dollars_json(offer.floor_cents),
            }
            if offer.score is not None:
                payload["score"] = offer.score
            payload["lead"] = offer.lead
            body = offer.memo[_MEMO_KEY] = _dumps(payload)
        return self._request(self._ping_url, body, timestamp)

    def post_request(self, offer: PostOffer, timestamp: int) -> HttpRequest:
        if self._post_url is None:
            raise ValueError(f"buyer {self._endpoint.buyer_id!r} has no post_url")
        payload = {
            "ping_id": offer.ping_id,
            "bid_id": offer.bid_id,
            "price": dollars_json(offer.price_cents),
            "vertical": offer.vertical,
            "lead": offer.lead,
        }
        return self._request(self._post_url, _dumps(payload), timestamp)

    def read_bid(self, response: HttpResponse) -> BidReply:
        if response.status == 204:
            return _NO_BID
        if response.status != 200:
            return BidReply(BidOutcome.ERROR, reason=_status_reason(response.status))
        try:
            answer = _load_object(response.body)
            if "bid" not in answer:
                raise _BadReply("missing bid")
            bid = answer["bid"]
            if bid is None:
                return _NO_BID
            cents = _bid_cents(bid, response.body)
            if cents == 0:
                return _NO_BID
            bid_id = _optional_id(answer.get("bid_id"), "bid_id")
        except _BadReply as bad:
            return BidReply(BidOutcome.ERROR, reason=str(bad))
        except Exception as unexpected:  # never raise from read_*: unknown is an error
            return BidReply(BidOutcome.ERROR, reason=f"unreadable bid: {type(unexpected).__name__}")
        return BidReply(BidOutcome.BID, price_cents=cents, bid_id=bid_id)

    def read_post(self, response: HttpResponse) -> PostReply:
        if response.status != 200:
            return PostReply(PostOutcome.ERROR, reason=_status_reason(response.status))
        try:
            answer = _load_object(response.body)
            accepted = answer.get("accepted")
            if accepted is True:
                # An optional "redirect_url" (SPEC section 8), read as given: any string is
                # passed on, and the exchange keeps it only if it is a plain http(s) URL
                # (exchange/core/redirects.py); anything else is no redirect, never an error.
                redirect = answer.get("redirect_url")
                return PostReply(
                    PostOutcome.ACCEPTED,
                    buyer_lead_id=_lead_id(answer),
                    redirect_url=redirect if isinstance(redirect, str) and redirect else None,
                )
            if accepted is False:
                return PostReply(PostOutcome.REJECTED, reason=_reject_reason(answer))
            if accepted is None:
                raise _BadReply("missing accepted")
            raise _BadReply("accepted is not a boolean")
        except _BadReply as bad:
            return PostReply(PostOutcome.ERROR, reason=str(bad))
        except Exception as unexpected:  # never raise from read_*: unknown is an error
            return PostReply(
                PostOutcome.ERROR, reason=f"unreadable post reply: {type(unexpected).__name__}"
            )


def _lead_id(answer: Mapping[str, Any]) -> str | None:
    # The buyer has taken the lead: a malformed id must not turn that into an error (the
    # lead would then be sold again down the ping tree), so it is kept best-effort.
    value = answer.get("buyer_lead_id")
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)[:MAX_ID_CHARS] or None


def _reject_reason(answer: Mapping[str, Any]) -> str | None:
    value = answer.get("reason")
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text[:MAX_REASON_CHARS]
