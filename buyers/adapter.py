"""The buyer adapter contract: our ping or post in, an HTTP request description out; an
HTTP response in, our bid or post result out. Adapters do no I/O: the exchange sends
the requests through its transport, so an adapter is tested with fixtures alone.

An adapter instance is built once per buyer at config load (it may precompute headers,
field maps and fixed values) and is then shared by every auction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from exchange.core.fields import FieldSpec
from exchange.core.http_templates import PingTemplate, PostTemplate
from exchange.core.outcomes import BidOutcome, PostOutcome

# Objects made once per buyer per auction are plain slots dataclasses, not frozen ones
# (a frozen one costs three times as much to build); nothing mutates them once made.


@dataclass(slots=True)
class HttpRequest:
    """One outbound request, fully described. ``url`` is absolute (http or https).

    ``fixed_headers`` are the same on every request an adapter makes (content type, a
    buyer's API key): they go on the wire before ``headers`` (this request's own, such
    as its signature), and a transport may encode them once per URL.
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    fixed_headers: tuple[tuple[str, str], ...] = ()

    @property
    def all_headers(self) -> tuple[tuple[str, str], ...]:
        return self.fixed_headers + self.headers


@dataclass(slots=True)
class HttpResponse:
    """One response as the transport read it. Header names are lower case.

    ``elapsed_us`` is the buyer's own time, as the transport measured it on a monotonic
    high-resolution clock: from the request written to the socket to the response's
    last byte parsed (None: not measured, as in fixtures)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_us: int | None = None


@dataclass(frozen=True, slots=True)
class BuyerEndpoint:
    """What an adapter needs to know about one buyer."""

    buyer_id: str
    ping_url: str | None
    post_url: str | None
    secret: bytes = field(repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    # The http adapter's templates (SPEC section 8), and the lead fields of the buyer's
    # verticals its templates may name (None: not checked, as in fixtures).
    ping_template: PingTemplate | None = None
    post_template: PostTemplate | None = None
    lead_fields: Mapping[str, FieldSpec] | None = None


@dataclass(slots=True)
class PingOffer:
    """A redacted lead offered to buyers for bids.

    One offer goes to every buyer of an auction, so ``memo`` lets an adapter keep what it
    derives from the offer alone (its encoded body, say), keyed by the adapter's own name:
    every buyer on that adapter then shares one encoding per auction.
    """

    ping_id: str
    vertical: str
    tmax_ms: int
    floor_cents: int
    lead: Mapping[str, Any]
    # The lead score, 0-100 (exchange/core/scoring.py); None: the vertical does not score.
    score: int | None = None
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class PostOffer:
    """A full lead posted to the buyer whose bid is being honoured."""

    ping_id: str
    bid_id: str | None
    price_cents: int
    vertical: str
    lead: Mapping[str, Any]


@dataclass(slots=True)
class BidReply:
    """A buyer's answer to a ping: BID (with a price), NO_BID or ERROR (with a reason)."""

    outcome: BidOutcome
    price_cents: int | None = None
    bid_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PostReply:
    """A buyer's answer to a post: ACCEPTED, REJECTED or ERROR (with a reason).

    ``redirect_url`` is where the buyer wants the consumer sent after a sale (SPEC
    section 8); it reaches the seller in the answer to its post."""

    outcome: PostOutcome
    buyer_lead_id: str | None = None
    reason: str | None = None
    redirect_url: str | None = None


class Adapter(Protocol):
    """Turns offers into requests and responses into replies for one buyer.

    An adapter may also have ``masked``: the lower-case header names and query parameter
    names whose values are credentials, masked wherever a request is shown
    (``lead-exchange buyer-test``)."""

    def ping_request(self, offer: PingOffer, timestamp: int) -> HttpRequest: ...

    def read_bid(self, response: HttpResponse) -> BidReply: ...

    def post_request(self, offer: PostOffer, timestamp: int) -> HttpRequest: ...

    def read_post(self, response: HttpResponse) -> PostReply: ...
