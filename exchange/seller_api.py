"""The seller API (SPEC section 4): /v1/ping, /v1/post, /v1/leads.

Handlers parse and check the request, authenticate the seller, call the auction, and
shape the answer. Every rejection names what is wrong.
"""

from __future__ import annotations

import asyncio
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import structlog
from aiohttp import web

from exchange.api_common import (
    CTX,
    authenticate_seller,
    check_ready,
    json_response,
    read_object,
    request_fields,
)
from exchange.config import SellerConfig
from exchange.context import ExchangeContext, PostInFlight
from exchange.dedupe import ContactHashes, contact_hashes, lead_digest
from exchange.errors import Conflict, FieldError, Forbidden, Gone, Invalid, NotFound, NotReady
from exchange.fields import LeadInvalid, LeadSchema
from exchange.money import MoneyError, dollars_json, parse_dollars
from exchange.outcomes import Overload, PostStatus
from exchange.pingcache import PingRecord, tree_from_ledger
from exchange.pinging import PingRequest, run_ping
from exchange.posting import (
    DuplicateCheck,
    PostAnswer,
    UnsoldReason,
    check_duplicates,
    post_lead,
)
from exchange.storable import MAX_ID_CHARS, text_problem

log = structlog.get_logger("exchange.seller_api")

MAX_EXTERNAL_ID = MAX_ID_CHARS
PING_KEYS = frozenset({"vertical", "lead", "tmax_ms", "external_id"})
POST_KEYS = frozenset({"ping_id", "lead", "min_price"})
LEADS_KEYS = frozenset({"vertical", "lead", "tmax_ms", "external_id", "min_price"})
# How often a request re-reads the ledger for another process's in-flight ping or post.
LOOKUP_RETRY_S = 0.05
# How long a post waits for a ping it cannot find yet: another process may still hold it
# in its batch queue (flushed every 50 ms).
POST_LOOKUP_WAIT_S = 0.5
# A post claim older than post_deadline_ms plus this belongs to a walk that is gone.
CLAIM_AGE_SLACK_S = 5.0
# How often a failed walk's process tries again to close its claim.
CLOSE_RETRY_S = 0.5


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
    return out


# -- finding pings and results that may be in flight elsewhere -----------------------------


async def find_ping(ctx: ExchangeContext, ping_id: str, wait_s: float = 0.0) -> PingRecord | None:
    """The ping's record from this process's memory, else from the ledger.

    Another process may still hold the ping in its batch queue; with ``wait_s`` the read is
    retried until that much time has passed.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait_s
    while True:
        inflight = ctx.pings_inflight.get(ping_id)
        if inflight is not None:
            return await asyncio.shield(inflight)
        record = ctx.pings.get(ping_id, ctx.now())
        if record is not None:
            return record
        record = await _ping_from_ledger(ctx, ping_id)
        if record is not None or loop.time() >= give_up:
            return record
        await asyncio.sleep(LOOKUP_RETRY_S)


async def _ping_from_ledger(ctx: ExchangeContext, ping_id: str) -> PingRecord | None:
    row = await ctx.store.fetch_ping(ping_id)
    if row is None:
        return None
    tree = tree_from_ledger(row["ping_tree"])
    return PingRecord(
        ping_id=str(row["ping_id"]),
        seller_id=row["seller_id"],
        vertical=row["vertical"],
        external_id=row["external_id"],
        lead=row["lead"],
        tree=tree,
        price_cents=row["price_cents"],
        payout_cents=row["payout_cents"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        tmax_ms=row["tmax_ms"],
    )


class _Admitted:
    """Take one of the process's auction slots for the rest of the request, or refuse at
    once (503) when none is free or the process is overloaded (its event loop keeps
    running late: an auction started now would answer past tmax). Taken before any
    await, so a burst cannot overshoot. (A class, not a generator context manager: it
    runs once per ping, and costs a quarter as much.)"""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: ExchangeContext) -> None:
        self._ctx = ctx

    def __enter__(self) -> None:
        ctx = self._ctx
        limit = ctx.loaded.settings.max_inflight_auctions
        if ctx.admitted >= limit:
            _refuse(ctx, Overload.INFLIGHT, f"exchange overloaded: {limit} auctions in flight")
        lag_limit = ctx.loaded.overload_lag_s
        if lag_limit:
            behind = ctx.lag.sustained_s
            if behind > lag_limit:
                _refuse(
                    ctx,
                    Overload.LOOP_LAG,
                    f"exchange overloaded: running {behind * 1000:.0f} ms behind "
                    f"(limit {lag_limit * 1000:.0f} ms)",
                )
        ctx.admitted += 1

    def __exit__(self, *exc_info: object) -> None:
        self._ctx.admitted -= 1


def _refuse(ctx: ExchangeContext, reason: Overload, message: str) -> NoReturn:
    m = ctx.metrics
    m.inc_later(m.child(m.overload_refusals, reason.value))
    raise NotReady(message, headers={"Retry-After": "1"})


async def _auction(ctx: ExchangeContext, request: PingRequest) -> PingRecord:
    future: asyncio.Future[PingRecord] = asyncio.get_running_loop().create_future()
    ctx.pings_inflight[request.ping_id] = future
    try:
        record = await run_ping(ctx, request)
        future.set_result(record)
        return record
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: waiters get it, no "never retrieved" warning
        raise
    finally:
        del ctx.pings_inflight[request.ping_id]


async def settle_post(
    ctx: ExchangeContext,
    record: PingRecord,
    seller: SellerConfig,
    lead: dict[str, Any],
    min_payout_cents: int,
    duplicates: DuplicateCheck | None = None,
) -> PostAnswer:
    """Post once per ping: the first caller walks the tree, every other caller posting
    the same lead (a retry, a race, another process) gets that walk's answer, and one
    posting another lead under the ping (other contact details) a 409."""
    digest = _digest(ctx, record.ping_id, lead)
    inflight = ctx.posts_inflight.get(record.ping_id)
    if inflight is not None:
        _same_lead(record.ping_id, inflight.lead_digest, digest)
        return await asyncio.shield(inflight.answer)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[PostAnswer] = loop.create_future()
    ctx.posts_inflight[record.ping_id] = PostInFlight(future, digest)
    claimed_at = ctx.now()
    walked = False
    try:
        existing = await ctx.store.claim_post(record.ping_id, seller.id, claimed_at, digest)
        if existing is None:
            walked = True
            answer = await post_lead(ctx, record, seller, lead, min_payout_cents, duplicates)
        else:
            _same_lead(record.ping_id, existing.lead_digest, digest)
            answer = await _await_result(ctx, record.ping_id, future)
        future.set_result(answer)
        return answer
    except BaseException as exc:
        if walked:
            _close_later(ctx, record.ping_id, claimed_at, exc)
        future.set_exception(exc)
        future.exception()
        raise
    finally:
        del ctx.posts_inflight[record.ping_id]


def _digest(ctx: ExchangeContext, ping_id: str, lead: dict[str, Any]) -> bytes:
    key = ctx.loaded.settings.dedupe_hash_key
    return lead_digest(ping_id, lead, key.encode() if key else b"")


def _same_lead(ping_id: str, first: bytes | None, posted: bytes) -> None:
    """A 409 unless ``posted`` is the lead first posted under the ping (SPEC section 4:
    a post that disagrees is a conflict, never a silent resale or another lead's "sold").
    A claim from before digests were kept (None) is taken as the same lead."""
    if first is not None and not hmac.compare_digest(first, posted):
        raise Conflict(
            f"ping {ping_id} was already posted with a different lead",
            [{"loc": ["lead"], "msg": "differs from the lead first posted for this ping"}],
        )


def _close_later(
    ctx: ExchangeContext, ping_id: str, claimed_at: datetime, error: BaseException
) -> None:
    log.warning("post_walk_failed", ping_id=ping_id, error=type(error).__name__)
    task = asyncio.get_running_loop().create_task(_close_abandoned(ctx, ping_id, claimed_at))
    ctx.claim_closers.add(task)
    task.add_done_callback(ctx.claim_closers.discard)


async def _close_abandoned(ctx: ExchangeContext, ping_id: str, claimed_at: datetime) -> None:
    """A walk of this process failed midway (typically: the ledger went away) and left its
    claim in progress. Close it the way an aged-out claim is closed (sold with its committed
    sales, else unsold ``post_interrupted``) as soon as the ledger takes the write, so that
    a retry on any process, not only this one, gets the answer at once instead of waiting
    for the claim to age out. Only that very claim is closed (this process's, made at
    ``claimed_at``). Past the age-out time any process closes it, so the tries stop."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + ctx.loaded.settings.post_deadline_ms / 1000 + CLAIM_AGE_SLACK_S
    while True:
        try:
            closed = await ctx.store.close_interrupted(
                ping_id, UnsoldReason.INTERRUPTED, ctx.now(), claimed_at=claimed_at
            )
        except Exception as exc:  # the ledger is still away: try again shortly
            if loop.time() + CLOSE_RETRY_S >= give_up_at:
                log.warning("post_claim_left_to_age_out", ping_id=ping_id, error=type(exc).__name__)
                return
            await asyncio.sleep(CLOSE_RETRY_S)
            continue
        if closed:
            log.info("post_claim_closed", ping_id=ping_id)
        return


async def _await_result(
    ctx: ExchangeContext, ping_id: str, mine: asyncio.Future[PostAnswer] | None = None
) -> PostAnswer:
    """Wait for a post claimed elsewhere to finish. A claim whose walk is gone is closed
    as interrupted, and a sale that walk may have started cannot commit any more
    (exchange.store.record_sale). A walk is gone when its claim is older than the post
    deadline (plus slack); at once when the claim is another process's and that process
    has stopped writing its heartbeat (PostResult.owner_silent: it died); and at once
    when the claim is this process's and no walk of it runs here any more (it failed,
    e.g. when the ledger went away midway): no walk here is registered for the ping but
    the caller's own (``mine``), and only one runs per ping in a process."""
    settings = ctx.loaded.settings
    while True:
        result = await ctx.store.fetch_post(ping_id)
        assert result is not None
        if result.status != "in_progress":
            return PostAnswer(
                ping_id, PostStatus(result.status), result.price_cents, result.payout_cents,
                result.reason,
            )  # fmt: skip
        walking = ctx.posts_inflight.get(ping_id)
        if result.claimed_by == ctx.store.owner:
            abandoned = walking is None or walking.answer is mine
        else:  # another process's: abandoned if that process has stopped beating
            abandoned = result.owner_silent
        age_s = (ctx.now() - result.claimed_at).total_seconds()
        if abandoned or age_s > settings.post_deadline_ms / 1000 + CLAIM_AGE_SLACK_S:
            await ctx.store.close_interrupted(ping_id, UnsoldReason.INTERRUPTED, ctx.now())
            continue
        await asyncio.sleep(LOOKUP_RETRY_S)


async def _result_of(ctx: ExchangeContext, ping_id: str, digest: bytes) -> PostAnswer | None:
    """The answer of the post already made under ``ping_id`` (a 409 if it was made with
    another lead than ``digest``'s), or None when there is none."""
    inflight = ctx.posts_inflight.get(ping_id)
    if inflight is not None:
        _same_lead(ping_id, inflight.lead_digest, digest)
        return await asyncio.shield(inflight.answer)
    existing = await ctx.store.fetch_post(ping_id)
    if existing is None:
        return None
    _same_lead(ping_id, existing.lead_digest, digest)
    return await _await_result(ctx, ping_id)


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


async def _read_offer(
    request: web.Request, ctx: ExchangeContext, keys: frozenset[str], full: bool
) -> _Offer:
    """Authenticate and check a ping (``full`` False) or direct post; every problem at once."""
    seller = authenticate_seller(request, ctx)
    check_ready(ctx)
    body = await read_object(request, ctx)
    problems = request_fields(body, keys)
    schema = _vertical(ctx, seller, body, problems)
    tmax_ms = _tmax(ctx, body, problems)
    external_id = _external_id(body, problems)
    min_payout = _min_price(body, problems)
    lead: dict[str, Any] = {}
    if schema is not None:
        try:
            validate = schema.validate_full if full else schema.validate_ping
            lead = validate(body.get("lead"))
        except LeadInvalid as exc:
            problems.extend(_problems_from(exc))
    if problems or schema is None:
        raise Invalid("the lead is not valid" if full else "the ping is not valid", problems)
    return _Offer(seller, schema, lead, tmax_ms, external_id, min_payout)


async def _bind_id(ctx: ExchangeContext, offer: _Offer) -> tuple[str, PingRecord | None]:
    """The ping id for this offer, and the earlier ping when its external_id is a repeat.

    A repeat whose first attempt never recorded its auction (it failed) gets the bound id
    and no record: the auction runs now, under that id."""
    ping_id = ctx.new_id()
    repeat = False
    if offer.external_id is not None:
        first = await ctx.store.claim_external_id(offer.seller.id, offer.external_id, ping_id)
        repeat, ping_id = first != ping_id, first
    _bind_log_context(ping_id, offer.seller.id, offer.schema.vertical)
    earlier = await find_ping(ctx, ping_id, wait_s=_lookup_wait(ctx)) if repeat else None
    return ping_id, earlier


async def ping(request: web.Request) -> web.Response:
    received_at = asyncio.get_running_loop().time()
    ctx = request.app[CTX]
    offer = await _read_offer(request, ctx, PING_KEYS, full=False)
    with _Admitted(ctx):
        ping_id, earlier = await _bind_id(ctx, offer)
        if earlier is not None:
            return json_response(_ping_answer(earlier))
        record = await _auction(
            ctx, PingRequest(ping_id, offer.seller, offer.schema.vertical, offer.lead,
                             offer.tmax_ms, offer.external_id, "ping", received_at),
        )  # fmt: skip
        return json_response(_ping_answer(record))


def _bind_log_context(ping_id: str, seller_id: str, vertical: str) -> None:
    """Every log line of this request (its own task) carries the auction's ids."""
    structlog.contextvars.bind_contextvars(ping_id=ping_id, seller=seller_id, vertical=vertical)


def _lookup_wait(ctx: ExchangeContext) -> float:
    return ctx.loaded.settings.tmax_ms / 1000 + 1.0


async def post(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    seller = authenticate_seller(request, ctx)
    check_ready(ctx)
    body = await read_object(request, ctx)
    problems = request_fields(body, POST_KEYS)
    min_payout = _min_price(body, problems)
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
    schema = ctx.loaded.schemas[record.vertical]
    lead: dict[str, Any] = {}
    try:
        lead = schema.validate_full(body.get("lead"))
    except LeadInvalid as exc:
        problems.extend(_problems_from(exc))
    if problems:
        raise Invalid("the post is not valid", problems)
    if record.expires_at <= ctx.now():
        earlier = await _result_of(ctx, ping_id, _digest(ctx, ping_id, lead))
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
    duplicates = await check_duplicates(
        ctx, record.vertical, _contacts(ctx, schema, lead), ctx.now()
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
    received_at = asyncio.get_running_loop().time()
    ctx = request.app[CTX]
    offer = await _read_offer(request, ctx, LEADS_KEYS, full=True)
    seller, schema, lead = offer.seller, offer.schema, offer.lead
    with _Admitted(ctx):
        ping_id, earlier = await _bind_id(ctx, offer)
        if earlier is not None:
            answer = await _repeat_lead(ctx, earlier, seller, lead, offer.min_payout)
            return json_response(_post_answer(answer))
        duplicates = await check_duplicates(
            ctx, schema.vertical, _contacts(ctx, schema, lead), ctx.now()
        )
        ping_request = PingRequest(
            ping_id, seller, schema.vertical, schema.redact(lead), offer.tmax_ms,
            offer.external_id, "direct", received_at, duplicates=duplicates.buyers,
            offer_to_buyers=not duplicates.sold_in_vertical,
        )  # fmt: skip
        record = await _auction(ctx, ping_request)
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
    digest = _digest(ctx, record.ping_id, lead)
    while (answer := await _result_of(ctx, record.ping_id, digest)) is None:
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
