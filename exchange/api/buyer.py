"""The buyer API: returns. A buyer sends back a lead it bought, within its return
window, with a reason; the ledger records the buyer's credit and reverses the seller's
payout. Authenticated by the buyer's own return key (kept as a hash)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta

from aiohttp import web

from exchange.api.common import CTX, bearer, json_response, read_object, request_fields
from exchange.core.config import BuyerConfig, hash_key
from exchange.core.errors import Conflict, FieldError, Forbidden, Invalid, NotFound, Unauthorized
from exchange.core.money import dollars_json
from exchange.core.scrub import scrub
from exchange.core.storable import MAX_RETURN_REASON_CHARS, text_problem

RETURN_KEYS = frozenset({"ping_id", "reason"})
MAX_REASON = MAX_RETURN_REASON_CHARS


def _buyer(request: web.Request) -> BuyerConfig:
    ctx = request.app[CTX]
    presented = hash_key(bearer(request))
    buyer = ctx.loaded.buyers_by_return_key_hash.get(presented)
    if buyer is None:  # the buyer's own api_key serves for returns too
        buyer = ctx.loaded.buyers_by_key_hash.get(presented)
    if buyer is None:
        raise Unauthorized("unknown buyer return key")
    return buyer


async def create_return(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    buyer = _buyer(request)
    body = await read_object(request, ctx)
    problems: list[FieldError] = request_fields(body, RETURN_KEYS)
    raw_id, reason = body.get("ping_id"), body.get("reason")
    ping_id = None
    with contextlib.suppress(ValueError):
        ping_id = str(uuid.UUID(raw_id)) if isinstance(raw_id, str) else None
    if ping_id is None:
        problems.append({"loc": ["ping_id"], "msg": "is required and must be a ping id (UUID)"})
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        problems.append({"loc": ["reason"], "msg": f"is required: 1 to {MAX_REASON} characters"})
    elif (problem := text_problem(reason)) is not None:
        problems.append({"loc": ["reason"], "msg": problem})
    if problems or ping_id is None or not isinstance(reason, str):
        raise Invalid("the return is not valid", problems)
    if buyer.return_window_days <= 0:
        raise Forbidden(f"buyer {buyer.id} has no return window")
    found = await ctx.store.sale_for_return(ping_id, buyer.id)
    if found is None:
        raise NotFound(f"buyer {buyer.id} bought no lead {ping_id}")
    if found.return_id is not None:
        raise Conflict(f"lead {ping_id} was already returned")
    now = ctx.clock.now()
    closes = found.sale.created_at + timedelta(days=buyer.return_window_days)
    if now > closes:
        raise Forbidden(f"the return window closed at {closes.isoformat()}")
    # The ledger keeps no PII, so the reason cannot quote the lead's phone or email either.
    if not await ctx.store.record_return(found, scrub(reason.strip()) or "", now):
        raise Conflict(f"lead {ping_id} was already returned")
    ctx.metrics.record_return(buyer.id)
    return json_response(
        {
            "ping_id": ping_id,
            "status": "returned",
            "credit": dollars_json(found.sale.price_cents),
            "seller_payout_reversed": dollars_json(found.sale.payout_cents),
        },
        status=201,
    )


def routes() -> list[web.RouteDef]:
    return [web.post("/v1/returns", create_return)]
