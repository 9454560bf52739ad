"""The seller API (SPEC section 4): /v1/ping, /v1/post, /v1/leads.

Handlers parse and check the request, authenticate the seller, call the auction, and
shape the answer. Every rejection names what is wrong.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from exchange.api.common import (
    CTX,
    authenticate_seller,
    check_ready,
    json_response,
    read_object,
    request_fields,
)
from exchange.auction.admission import Admitted
from exchange.auction.answers import PostAnswer
from exchange.auction.claims import digest_of, result_of, settle_post
from exchange.auction.context import ExchangeContext
from exchange.auction.lookup import LOOKUP_RETRY_S, find_ping, run_auction
from exchange.auction.pingcache import PingRecord
from exchange.auction.pinging import PingRequest
from exchange.auction.screens import check_duplicates, check_suppression
from exchange.core.config import SellerConfig
from exchange.core.dedupe import ContactHashes, contact_hashes
from exchange.core.errors import Conflict, FieldError, Forbidden, Gone, Invalid, NotFound
from exchange.core.fields import LeadInvalid, LeadSchema
from exchange.core.money import MoneyError, dollars_json, parse_dollars
from exchange.core.storable import MAX_ID_CHARS, text_problem
from exchange.core.subids import sub_id_problem

MAX_EXTERNAL_ID = MAX_ID_CHARS
PING_KEYS = frozenset({"vertical", "lead", "tmax_ms", "external_id", "sub_id"})
POST_KEYS = frozenset({"ping_id", "lead", "min_price", "sub_id"})
LEADS_KEYS = frozenset({"vertical", "lead", "tmax_ms", "external_id", "min_price", "sub_id"})
# How long a post waits for a ping it cannot find yet: another process may still hold it
# in its batch queue (flushed every 50 ms).
POST_LOOKUP_WAIT_S = 0.5


def _problems_from(exc: LeadInvalid) -> list[FieldError]:
    return [{"loc": list(p.loc), "msg": p.msg} for p in exc.problems]


def _vertical(
    ctx: ExchangeContext, seller: SellerConfig, body: dict[str, Any], problems: list[FieldError]
) -> LeadSchema | None:
    vertical = body.get("vertical")
    if not isinstance(vertical, str):
        problems.append({"loc": ["vertical"], "msg": "is required and must be a string"})
        return None
    schema = ctx.loaded.schemas.get(vertical)
    if schema is None:
        problems.append({"loc": ["vertical"], "msg": "is not a vertical of this exchange"})
        return None
    if seller.verticals is not None and vertical not in seller.verticals:
        raise Forbidden(f"seller {seller.id} may not sell in vertical {vertical}")
    return schema


def _tmax(ctx: ExchangeContext, body: dict[str, Any], problems: list[FieldError]) -> int:
    limit = ctx.loaded.settings.tmax_ms
    value = body.get("tmax_ms", limit)
    if isinstance(value, bool) or not isinstance(value, int) or not 10 <= value <= 60_000:
        problems.append({"loc": ["tmax_ms"], "msg": "must be an integer from 10 to 60000"})
        return limit
    return min(value, limit)


def _external_id(body: dict[str, Any], problems: list[FieldError]) -> str | None:
    value = body.get("external_id")
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_EXTERNAL_ID:
        problems.append(
            {"loc": ["external_id"], "msg": f"must be a string of 1 to {MAX_EXTERNAL_ID} chars"}
        )
        return None
    problem = text_problem(value)
    if problem is not None:
        problems.append({"loc": ["external_id"], "msg": problem})
        return None
    return value


def _sub_id(body: dict[str, Any], problems: list[FieldError]) -> str | None:
    value = body.get("sub_id")
    if value is None:
        return None
    problem = sub_id_problem(value)
    if problem is not None:
        problems.append({"loc": ["sub_id"], "msg": problem})
        return None
    return str(value)


def _selling(request: web.Request, ctx: ExchangeContext) -> SellerConfig:
    """The seller whose key is presented, while it is enabled (a paused seller: 403)."""
    seller = authenticate_seller(request, ctx)
    if not seller.enabled:
        raise Forbidden(f"seller {seller.id} is paused (enabled: false): no pings or posts")
    return seller


def _min_price(body: dict[str, Any], problems: list[FieldError]) -> int:
    if body.get("min_price") is None:
        return 0
    try:
        return parse_dollars(body["min_price"])
    except MoneyError as exc:
        problems.append({"loc": ["min_price"], "msg": str(exc)})
        return 0


def _ping_answer(record: PingRecord) -> dict[str, Any]:
    return {
        "ping_id": record.ping_id,
        "status": "bid" if record.tree else "no_bid",
        "price": dollars_json(record.payout_cents),
        "expires_at": record.expires_at.isoformat().replace("+00:00", "Z"),
    }


def _post_answer(answer: PostAnswer) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ping_id": answer.ping_id,
        "status": answer.status.value,
        "price": dollars_json(answer.payout_cents),
    }
    if answer.reason is not None:
        out["reason"] = answer.reason
    if answer.redirect_url is not None:
        out["redirect_url"] = answer.redirect_url
    return out


# -- handlers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Offer:
    """A checked ping or direct post: who offers what, under which terms."""

    seller: SellerConfig
    schema: LeadSchema
    lead: dict[str, Any]  # normalised; redacted for a ping, full for a direct post
    tmax_ms: int
    external_id: str | None
    min_payout: int
    sub_id: str | None = None


async def _read_offer(
    request: web.Request, ctx: ExchangeContext, keys: frozenset[str], full: bool
) -> _Offer:
    """Authenticate and check a ping (``full`` False) or direct post; every problem at once."""
    seller = _selling(request, ctx)
    check_ready(ctx)
    body = await read_object(request, ctx)
    problems = request_fields(body, keys)
    schema = _vertical(ctx, seller, body, problems)
    tmax_ms = _tmax(ctx, body, problems)
    external_id = _external_id(body, problems)
    min_payout = _min_price(body, problems)
    sub_id = _sub_id(body, problems)
    lead: dict[str, Any] = {}
    if schema is not None:
        try:
            validate = schema.validate_full if full else schema.validate_ping
            lead = validate(body.get("lead"))
        except LeadInvalid as exc:
            problems.extend(_problems_from(exc))
    if problems or schema is None:
        raise Invalid("the lead is not valid" if full else "the ping is not valid", problems)
    return _Offer(seller, schema, lead, tmax_ms, external_id, min_payout, sub_id)


async def _bind_id(
    ctx: ExchangeContext, offer: _Offer
) -> tuple[str, PingRecord | None, datetime | None]:
    """The ping id for this offer, the earlier ping when its external_id is a repeat, and
    (with an external_id) the time its auction is recorded under.

    A repeat whose first attempt never recorded its auction (it failed) gets the bound id
    and no record: the auction runs now, under that id and its first claim's time."""
    ping_id = ctx.new_id()
    repeat = False
    recorded_at = None
    if offer.external_id is not None:
        first, recorded_at = await ctx.store.claim_external_id(
            offer.seller.id, offer.external_id, ping_id, ctx.clock.now()
        )
        repeat, ping_id = first != ping_id, first
    _bind_log_context(ping_id, offer.seller.id, offer.schema.vertical)
    earlier = await find_ping(ctx, ping_id, wait_s=_lookup_wait(ctx)) if repeat else None
    return ping_id, earlier, recorded_at


async def ping(request: web.Request) -> web.Response:
    # The loop's clock for the deadline, the measuring one for the auction's duration.
    received_at, received_ns = asyncio.get_running_loop().time(), time.perf_counter_ns()
    ctx = request.app[CTX].pinned()  # the settings this request started with
    offer = await _read_offer(request, ctx, PING_KEYS, full=False)
    with Admitted(ctx):
        ping_id, earlier, recorded_at = await _bind_id(ctx, offer)
        if earlier is not None:
            return json_response(_ping_answer(earlier))
        record = await run_auction(
            ctx, PingRequest(ping_id, offer.seller, offer.schema.vertical, offer.lead,
                             offer.tmax_ms, offer.external_id, "ping", received_at,
                             received_ns=received_ns, recorded_at=recorded_at,
                             sub_id=offer.sub_id),
        )  # fmt: skip
        return json_response(_ping_answer(record))


def _bind_log_context(ping_id: str, seller_id: str, vertical: str) -> None:
    """Every log line of this request (its own task) carries the auction's ids."""
    structlog.contextvars.bind_contextvars(ping_id=ping_id, seller=seller_id, vertical=vertical)


def _lookup_wait(ctx: ExchangeContext) -> float:
    return ctx.loaded.settings.tmax_ms / 1000 + 1.0


async def post(request: web.Request) -> web.Response:
    ctx = request.app[CTX].pinned()  # the settings this request started with
    seller = _selling(request, ctx)
    check_ready(ctx)
    body = await read_object(request, ctx)
    problems = request_fields(body, POST_KEYS)
    min_payout = _min_price(body, problems)
    sub_id = _sub_id(body, problems)
    ping_id = body.get("ping_id")
    try:
        ping_id = str(uuid.UUID(ping_id)) if isinstance(ping_id, str) else None
    except ValueError:
        ping_id = None
    if ping_id is None:
        problems.append({"loc": ["ping_id"], "msg": "is required and must be a ping id (UUID)"})
        raise Invalid("the post is not valid", problems)
    record = await find_ping(ctx, ping_id, wait_s=POST_LOOKUP_WAIT_S)
    if record is None or record.seller_id != seller.id:
        raise NotFound(f"no ping {ping_id} for this seller")
    _bind_log_context(ping_id, seller.id, record.vertical)
    if sub_id is not None and sub_id != record.sub_id:
        # The source is the ping's: a post may repeat it or leave it out, not change it.
        raise Conflict("the post's sub_id differs from the ping's",
                       [{"loc": ["sub_id"], "msg": "differs from the ping"}])  # fmt: skip
    schema = ctx.loaded.schemas[record.vertical]
    lead: dict[str, Any] = {}
    try:
        lead = schema.validate_full(body.get("lead"))
    except LeadInvalid as exc:
        problems.extend(_problems_from(exc))
    if problems:
        raise Invalid("the post is not valid", problems)
    if record.expires_at <= ctx.clock.now():
        earlier = await result_of(ctx, ping_id, digest_of(ctx, ping_id, lead))
        if earlier is not None:
            return json_response(_post_answer(earlier))
        raise Gone(f"ping {ping_id} expired at {record.expires_at.isoformat()}")
    answer = await _post_matching(
        ctx, record, seller, schema, lead, min_payout,
        conflict="the posted lead does not match the pinged lead", differs="differs from the ping",
    )  # fmt: skip
    return json_response(_post_answer(answer))


async def _post_matching(
    ctx: ExchangeContext,
    record: PingRecord,
    seller: SellerConfig,
    schema: LeadSchema,
    lead: dict[str, Any],
    min_payout: int,
    conflict: str,
    differs: str,
) -> PostAnswer:
    """Post ``lead`` under ``record``'s auction, once it is the lead that was auctioned
    (its redacted fields equal the record's; else a 409 naming each field that differs)
    and its duplicate check is done."""
    mismatched = _mismatch(schema.redact(lead), record.lead)
    if mismatched:
        raise Conflict(conflict, [{"loc": ["lead", name], "msg": differs} for name in mismatched])
    suppressed_by = await check_suppression(ctx, record.vertical, lead)
    duplicates = await check_duplicates(
        ctx, record.vertical, _contacts(ctx, schema, lead), ctx.clock.now(), suppressed_by
    )
    return await settle_post(ctx, record, seller, lead, min_payout, duplicates)


def _contacts(
    ctx: ExchangeContext, schema: LeadSchema, lead: dict[str, Any]
) -> ContactHashes | None:
    key = ctx.loaded.settings.dedupe_hash_key
    return contact_hashes(lead, schema, key.encode()) if key else None


def _mismatch(posted: dict[str, Any], pinged: dict[str, Any]) -> list[str]:
    names = sorted(set(posted) | set(pinged))
    return [n for n in names if posted.get(n) != pinged.get(n)]


async def leads(request: web.Request) -> web.Response:
    received_at, received_ns = asyncio.get_running_loop().time(), time.perf_counter_ns()
    ctx = request.app[CTX].pinned()  # the settings this request started with
    offer = await _read_offer(request, ctx, LEADS_KEYS, full=True)
    seller, schema, lead = offer.seller, offer.schema, offer.lead
    with Admitted(ctx):
        ping_id, earlier, recorded_at = await _bind_id(ctx, offer)
        if earlier is not None:
            answer = await _repeat_lead(ctx, earlier, seller, lead, offer.min_payout)
            return json_response(_post_answer(answer))
        # A suppressed lead is recorded, but no buyer is pinged with it.
        suppressed_by = await check_suppression(ctx, schema.vertical, lead)
        duplicates = await check_duplicates(
            ctx, schema.vertical, _contacts(ctx, schema, lead), ctx.clock.now(), suppressed_by
        )
        ping_request = PingRequest(
            ping_id, seller, schema.vertical, schema.redact(lead), offer.tmax_ms,
            offer.external_id, "direct", received_at, duplicates=duplicates.buyers,
            offer_to_buyers=not (duplicates.sold_in_vertical or suppressed_by),
            received_ns=received_ns,
            recorded_at=recorded_at, sub_id=offer.sub_id,
        )  # fmt: skip
        record = await run_auction(ctx, ping_request)
    # The slot was for the auction; the post walk waits on buyers, not on this process.
    answer = await settle_post(ctx, record, seller, lead, offer.min_payout, duplicates)
    return json_response(_post_answer(answer))


async def _repeat_lead(
    ctx: ExchangeContext,
    record: PingRecord,
    seller: SellerConfig,
    lead: dict[str, Any],
    min_payout: int,
) -> PostAnswer:
    """A repeated external_id on a direct post: the first result, or, when the first
    attempt failed after its auction (a database error), the post done now."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 1.0
    digest = digest_of(ctx, record.ping_id, lead)
    while (answer := await result_of(ctx, record.ping_id, digest)) is None:
        if loop.time() >= give_up:
            break
        await asyncio.sleep(LOOKUP_RETRY_S)
    if answer is not None:
        return answer
    return await _post_matching(
        ctx, record, seller, ctx.loaded.schemas[record.vertical], lead, min_payout,
        conflict="external_id belongs to a different lead", differs="differs from the first lead",
    )  # fmt: skip


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/ping", ping),
        web.post("/v1/post", post),
        web.post("/v1/leads", leads),
    ]
