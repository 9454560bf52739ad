"""The ``http`` adapter: any buyer's API described in config, not code (SPEC section 8).

A buyer's ``ping`` and ``post`` templates are compiled once at load (buyers/templates.py
for requests, buyers/answers.py for answers); a template that names an unknown field,
has a malformed path or an unknown transform fails the load with its key path. Per
request the adapter walks its slots and encodes once; buyers whose ping templates encode
alike share one body per auction (``PingOffer.memo``).

``read_bid`` and ``read_post`` never raise. A ping answer: 204, nothing at the ``bid``
path, null, blank or zero is no bid; a non-2xx status, a body that is not the path's
kind of document, or a malformed price is an error whose reason names the path. A post
answer: only the verdict at ``accepted`` counts (a 2xx is not a sale by itself); its whole
value, trimmed, matched case-insensitively against ``accepted_values`` (``Unmatched`` is
not ``Matched``) is a sale, any other value a rejection, and no value at the path an error.
Once a buyer has accepted, a malformed lead id or redirect is dropped, never turned into
an error (the lead would otherwise be sold again down the tree).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from buyers.adapter import (
    BidReply,
    BuyerEndpoint,
    HttpRequest,
    HttpResponse,
    PingOffer,
    PostOffer,
    PostReply,
)
from buyers.answers import (
    Answer,
    AnswerError,
    AnswerPath,
    PathError,
    best_price,
    compile_path,
    value_text,
)
from buyers.signing import SIGNATURE_HEADER, Signer
from buyers.templates import (
    PING_SPECIALS,
    POST_SPECIALS,
    Encoder,
    Slot,
    TemplateError,
    check_nesting,
    check_xml_names,
    compile_slots,
    dollars,
    encode_form,
    encode_json,
    encode_pairs,
    fill_url,
    url_placeholders,
    xml_encoder,
)
from exchange.core.http_templates import HttpAuth, HttpTemplate, PingTemplate, PostTemplate
from exchange.core.outcomes import BidOutcome, PostOutcome
from exchange.core.redirects import MAX_REDIRECT_CHARS
from exchange.core.storable import MAX_ID_CHARS, MAX_REASON_CHARS

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CONTENT_TYPES = {
    "json": "application/json",
    "form": "application/x-www-form-urlencoded",
    "xml": "application/xml; charset=utf-8",
}
_NO_BID = BidReply(BidOutcome.NO_BID)


# What RFC 9110 allows in a field value: tab, visible ASCII, space, and Latin-1 bytes.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")


def _one_line(value: str, where: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise TemplateError(where, "must be one line of text")
    if _FIELD_VALUE.match(value) is None:
        raise TemplateError(
            where, "has characters a header cannot carry (controls, or beyond Latin-1)"
        )
    return value


def _auth_headers(auth: HttpAuth, where: str) -> tuple[tuple[str, str], ...]:
    if auth.type == "header":
        assert auth.name is not None and auth.value is not None
        if not _HEADER_NAME.match(auth.name):
            raise TemplateError(f"{where}.auth.name", f"{auth.name!r} is not a header name")
        return ((auth.name, _one_line(auth.value, f"{where}.auth.value")),)
    if auth.type == "basic":
        pair = f"{auth.username}:{auth.password}"
        _one_line(pair, f"{where}.auth")
        token = base64.b64encode(pair.encode()).decode("ascii")
        return (("Authorization", f"Basic {token}"),)
    if auth.type == "bearer":
        assert auth.token is not None
        return (("Authorization", f"Bearer {_one_line(auth.token, f'{where}.auth.token')}"),)
    return ()


def _masked(auth: HttpAuth) -> frozenset[str]:
    if auth.type == "header" and auth.name:
        return frozenset({auth.name.lower()})
    if auth.type in ("basic", "bearer"):
        return frozenset({"authorization"})
    if auth.type == "query" and auth.name:
        return frozenset({auth.name.lower()})
    if auth.type == "hmac":
        return frozenset({SIGNATURE_HEADER.lower()})
    return frozenset()


@dataclass(frozen=True, slots=True)
class _CompiledRequest:
    """The request side of one template."""

    method: str
    url: str  # with the query-auth parameter already appended
    url_names: tuple[str, ...]
    slots: tuple[Slot, ...]
    encoder: Encoder | None  # None: GET, the fields go in the query string
    fixed_headers: tuple[tuple[str, str], ...]
    signer: Signer | None
    shape: str  # equal for templates that encode any offer to the same bytes

    def build(
        self, lead: Mapping[str, Any], specials: Mapping[str, Any], timestamp: int,
        memo: dict[str, Any] | None,
    ) -> HttpRequest:  # fmt: skip
        url = fill_url(self.url, self.url_names, specials) if self.url_names else self.url
        if self.encoder is None:
            body = b""
            query = _memoised(memo, self.shape, lambda: encode_pairs(self.slots, lead, specials))
            if query:
                url = f"{url}{'&' if '?' in url else '?'}{query}"
        else:
            encoder = self.encoder
            body = _memoised(memo, self.shape, lambda: encoder(self.slots, lead, specials))
        headers: tuple[tuple[str, str], ...] = ()
        if self.signer is not None:
            headers = self.signer.headers(timestamp, body)
        return HttpRequest(self.method, url, headers, body, self.fixed_headers)


def _memoised(memo: dict[str, Any] | None, key: str, make: Any) -> Any:
    if memo is None:
        return make()
    found = memo.get(key)
    if found is None:
        found = memo[key] = make()
    return found


def _compile_request(
    template: HttpTemplate, role: str, endpoint: BuyerEndpoint, specials: tuple[str, ...]
) -> _CompiledRequest:
    slots = compile_slots(
        role=role,
        fields=template.fields,
        constants=template.constants,
        values=template.values,
        transforms=template.transforms,
        lead_fields=endpoint.lead_fields,
        specials=specials,
    )
    encoder: Encoder | None
    if template.method == "GET":
        encoder = None
    elif template.format == "json":
        check_nesting(slots, f"{role}.fields")
        encoder = encode_json
    elif template.format == "form":
        encoder = encode_form
    else:
        root = template.root or "Lead"
        check_nesting(slots, f"{role}.fields")
        check_xml_names(slots, root, role)
        encoder = xml_encoder(root)
    url_names = url_placeholders(template.url, specials, role)
    url = template.url
    auth = template.auth
    if auth.type == "query":
        assert auth.name is not None and auth.value is not None
        param = f"{quote_plus(auth.name)}={quote_plus(auth.value)}"
        url = f"{url}{'&' if '?' in url else '?'}{param}"
    headers: list[tuple[str, str]] = []
    if encoder is not None:
        headers.append(("Content-Type", _CONTENT_TYPES[template.format]))
    for name, value in template.headers.items():
        where = f"{role}.headers.{name}"
        if not _HEADER_NAME.match(name):
            raise TemplateError(where, f"{name!r} is not a header name")
        if name.lower() in ("host", "content-length", "transfer-encoding"):
            raise TemplateError(where, "set by the exchange itself")
        if name.lower() == "content-type":
            headers = [h for h in headers if h[0].lower() != "content-type"]
        headers.append((name, _one_line(value, where)))
    headers.extend(_auth_headers(auth, role))
    signer = None
    if auth.type == "hmac":
        if not endpoint.secret:
            raise TemplateError(f"{role}.auth", "hmac signs with the buyer's secret: set secret")
        signer = Signer(endpoint.secret)
    shape_parts = template.model_dump(
        mode="json",
        include={"method", "format", "root", "fields", "constants", "values", "transforms"},
    )
    shape = "http:" + repr(sorted(shape_parts.items()))
    return _CompiledRequest(
        template.method, url, url_names, slots, encoder, tuple(headers), signer, shape
    )


def _path(source: str | None, where: str, template: HttpTemplate) -> AnswerPath | None:
    if source is None:
        return None
    try:
        return compile_path(source, template.namespaces)
    except PathError as exc:
        raise TemplateError(where, str(exc)) from None


def _reason_text(answer: Answer, path: AnswerPath | None) -> str | None:
    """A reason at the path, best-effort: an answer unreadable there has no reason."""
    if path is None:
        return None
    try:
        found = answer.find(path)
    except AnswerError:
        return None
    texts = [t.strip() for t in (value_text(v) for v in found) if t and t.strip()]
    return "; ".join(texts)[:MAX_REASON_CHARS] or None


def _paired(
    ids: list[tuple[Any, tuple[Any, ...]]],
    index: int,
    prices: list[tuple[Any, tuple[Any, ...]]],
    *,
    by_position: bool,
) -> Any:
    """The id that goes with the best price. One price: the first id. Several (legs,
    bids): the id in the same object or element as the best price, else a single id
    found above them all (``$.TransactionId`` beside ``$.Legs[*].Payout``), else none:
    another leg's id is never sent back as this one's."""
    if by_position:
        return ids[index][0] if len(ids) == len(prices) else None
    place = prices[index][1]
    for value, where in ids:
        if where == place:
            return value
    if len(ids) == 1 and place[: len(ids[0][1])] == ids[0][1]:
        return ids[0][0]
    return None


def _status_error(status: int) -> str:
    return f"http {status}"


class HttpAdapter:
    """One configured buyer: its compiled ping and post templates."""

    __slots__ = (
        "_accepted",
        "_accepted_values",
        "_bid",
        "_bid_id",
        "_endpoint",
        "_lead_id",
        "_ping",
        "_ping_reason",
        "_post",
        "_post_reason",
        "_redirect",
        "masked",
    )

    def __init__(self, endpoint: BuyerEndpoint) -> None:
        self._endpoint = endpoint
        ping, post = endpoint.ping_template, endpoint.post_template
        if post is None:
            raise TemplateError("post", "adapter http needs a post template")
        if ping is None and endpoint.ping_url is not None:
            raise TemplateError("ping", "adapter http pings by a ping template")
        self.masked = _masked(post.auth) | (_masked(ping.auth) if ping else frozenset())
        self._ping: _CompiledRequest | None = None
        self._bid: AnswerPath | None = None
        self._bid_id: AnswerPath | None = None
        self._ping_reason: AnswerPath | None = None
        if ping is not None:
            self._ping = _compile_request(ping, "ping", endpoint, PING_SPECIALS)
            self._bid = _path(ping.bid, "ping.bid", ping)
            self._bid_id = _path(ping.bid_id, "ping.bid_id", ping)
            self._ping_reason = _path(ping.reason, "ping.reason", ping)
        self._post = _compile_request(post, "post", endpoint, POST_SPECIALS)
        accepted = _path(post.accepted, "post.accepted", post)
        assert accepted is not None
        self._accepted = accepted
        self._accepted_values = frozenset(v.strip().casefold() for v in post.accepted_values)
        self._post_reason = _path(post.reason, "post.reason", post)
        self._lead_id = _path(post.buyer_lead_id, "post.buyer_lead_id", post)
        self._redirect = _path(post.redirect_url, "post.redirect_url", post)

    @property
    def endpoint(self) -> BuyerEndpoint:
        return self._endpoint

    def ping_request(self, offer: PingOffer, timestamp: int) -> HttpRequest:
        if self._ping is None:
            raise ValueError(f"buyer {self._endpoint.buyer_id!r} has no ping template")
        specials = {
            "ping_id": offer.ping_id,
            "vertical": offer.vertical,
            "floor": dollars(offer.floor_cents),
            "tmax_ms": offer.tmax_ms,
            "score": offer.score,
        }
        return self._ping.build(offer.lead, specials, timestamp, offer.memo)

    def post_request(self, offer: PostOffer, timestamp: int) -> HttpRequest:
        specials = {
            "ping_id": offer.ping_id,
            "bid_id": offer.bid_id,
            "price": dollars(offer.price_cents),
            "vertical": offer.vertical,
        }
        return self._post.build(offer.lead, specials, timestamp, None)

    def read_bid(self, response: HttpResponse) -> BidReply:
        if response.status == 204:
            return _NO_BID
        if not 200 <= response.status < 300:
            return BidReply(BidOutcome.ERROR, reason=_status_error(response.status))
        bid_path = self._bid
        if bid_path is None:
            return BidReply(BidOutcome.ERROR, reason="no ping template")
        answer = Answer(response.body, response.headers.get("content-type", ""))
        try:
            prices = answer.find(bid_path, exact=True)
            best = best_price(prices, bid_path.source)
            if best is None or best[0] == 0:
                reason = _reason_text(answer, self._ping_reason)
                if reason is None and not prices:
                    # Said, so that a path that never matches is seen as such, not
                    # mistaken for a buyer that never bids.
                    reason = f"{bid_path.source}: nothing there"
                return _NO_BID if reason is None else BidReply(BidOutcome.NO_BID, reason=reason)
            cents, index = best
            bid_id = self._read_bid_id(answer, bid_path, index, len(prices))
        except AnswerError as bad:
            return BidReply(BidOutcome.ERROR, reason=str(bad)[:MAX_REASON_CHARS])
        except Exception as unexpected:  # never raise from read_*: unknown is an error
            return BidReply(BidOutcome.ERROR, reason=f"unreadable bid: {type(unexpected).__name__}")
        return BidReply(BidOutcome.BID, price_cents=cents, bid_id=bid_id)

    def _read_bid_id(
        self, answer: Answer, bid_path: AnswerPath, index: int, count: int
    ) -> str | None:
        path = self._bid_id
        if path is None:
            return None
        if count == 1:  # the usual answer: one price, its id wherever the path says
            found = answer.find(path, exact=True)
            value = found[0] if found else None
        else:
            ids = answer.locate(path, exact=True)
            prices = answer.locate(bid_path, exact=True)
            value = _paired(ids, index, prices, by_position=path.kind == "text") if ids else None
        if value is None:
            return None
        if isinstance(value, float | dict | list):
            raise AnswerError(f"{path.source}: bid id is not a string")
        text = value_text(value)
        text = text.strip() if text is not None else None
        if not text:
            return None
        if len(text) > MAX_ID_CHARS:
            raise AnswerError(f"{path.source}: bid id too long")
        return text

    def read_post(self, response: HttpResponse) -> PostReply:
        if not 200 <= response.status < 300:
            return PostReply(PostOutcome.ERROR, reason=_status_error(response.status))
        answer = Answer(response.body, response.headers.get("content-type", ""))
        path = self._accepted
        try:
            found = answer.find(path)
            if not found:
                return PostReply(PostOutcome.ERROR, reason=f"{path.source}: no verdict there")
            verdict = value_text(found[0])
            if verdict is None:
                return PostReply(PostOutcome.ERROR, reason=f"{path.source}: verdict is not a word")
            if verdict.strip().casefold() in self._accepted_values:
                redirect = self._best_effort(answer, self._redirect)
                return PostReply(
                    PostOutcome.ACCEPTED,
                    buyer_lead_id=_cut(self._best_effort(answer, self._lead_id), MAX_ID_CHARS),
                    # A URL cut short is a broken link: too long is dropped, not cut.
                    redirect_url=redirect
                    if redirect and len(redirect) <= MAX_REDIRECT_CHARS
                    else None,
                )
            reason = _reason_text(answer, self._post_reason)
            if reason is None:
                reason = f"{path.source}: {verdict.strip()[:60]!r}"
            return PostReply(PostOutcome.REJECTED, reason=reason)
        except AnswerError as bad:
            return PostReply(PostOutcome.ERROR, reason=str(bad)[:MAX_REASON_CHARS])
        except Exception as unexpected:  # never raise from read_*: unknown is an error
            return PostReply(
                PostOutcome.ERROR, reason=f"unreadable post reply: {type(unexpected).__name__}"
            )

    @staticmethod
    def _best_effort(answer: Answer, path: AnswerPath | None) -> str | None:
        if path is None:
            return None
        try:
            found = answer.find(path, exact=True)  # a 20-digit lead id stays exact
        except AnswerError:
            return None
        text = value_text(found[0]) if found else None
        if text is None or not text.strip():
            return None
        return text.strip()


def _cut(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


__all__ = ["HttpAdapter", "PingTemplate", "PostTemplate", "TemplateError"]
