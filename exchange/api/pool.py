"""The buyers' lead pool API (SPEC section 10): ``GET /v1/pool`` lists the offers the
buyer may claim now, ``POST /v1/pool/{lead_id}/claim`` buys one. Authenticated by the
buyer's own ``api_key``."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from exchange.api.common import CTX, authenticate_buyer, check_ready, json_response
from exchange.auction.offers import Listed, claim, list_offers, pool_verticals
from exchange.core.errors import FieldError, Invalid, NotFound
from exchange.core.money import dollars_json
from exchange.core.offers import age_minutes, listed_fields
from exchange.ledger.offers import OfferPosition

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _cursor_text(position: OfferPosition) -> str:
    """An offer's place in the listing as an opaque cursor: its entry time (microseconds
    since the epoch, 8 bytes) and its id (16 bytes), base64url without padding."""
    at, ping_id = position
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    raw = micros.to_bytes(8, "big", signed=True) + uuid.UUID(ping_id).bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_position(text: str) -> OfferPosition | None:
    if len(text) != 32:  # 24 bytes, unpadded
        return None
    try:
        raw = base64.urlsafe_b64decode(text)
        at = _EPOCH + timedelta(microseconds=int.from_bytes(raw[:8], "big", signed=True))
        return at, str(uuid.UUID(bytes=raw[8:]))
    except (ValueError, OverflowError, binascii.Error):
        return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


async def list_pool(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    buyer = authenticate_buyer(request, ctx)
    check_ready(ctx)
    problems: list[FieldError] = []
    vertical = request.query.get("vertical")
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    # ASCII digits only: str.isdigit() also takes digits int() cannot read ("²").
    ascii_digits = raw_limit.isascii() and raw_limit.isdigit()
    limit = int(raw_limit) if ascii_digits and len(raw_limit) <= 4 else 0
    if not 1 <= limit <= MAX_LIMIT:
        problems.append({"loc": ["query", "limit"], "msg": f"must be 1 to {MAX_LIMIT}"})
    pooled = pool_verticals(ctx, buyer)
    if vertical is not None and vertical not in pooled:
        problems.append(
            {"loc": ["query", "vertical"],
             "msg": f"is not one of buyer {buyer.id}'s verticals with a lead pool "
                    f"({', '.join(pooled) or 'none'})"}
        )  # fmt: skip
    after = None
    raw_cursor = request.query.get("cursor")
    if raw_cursor is not None:
        after = _cursor_position(raw_cursor)
        if after is None:
            problems.append(
                {"loc": ["query", "cursor"], "msg": "is not a next_cursor of a previous page"}
            )
    if problems:
        raise Invalid("the pool listing is not valid", problems)
    if vertical is not None:
        pooled = [vertical]
    now = ctx.clock.now()
    if not pooled:
        return json_response({"offers": [], "next_cursor": None})
    page = await list_offers(ctx, buyer, pooled, limit, after)
    next_after = page.next_after
    return json_response(
        {
            "offers": [_listed(item, now) for item in page.offers],
            "next_cursor": _cursor_text(next_after) if next_after is not None else None,
        }
    )


def _listed(item: Listed, now: datetime) -> dict[str, Any]:
    offer = item.offer
    return {
        "lead_id": offer.ping_id,
        "vertical": offer.vertical,
        "age_minutes": age_minutes(offer.terms.entered_at, now),
        "price": dollars_json(item.price_cents),
        "expires_at": _iso(offer.terms.expires_at),
        "visibility": item.visibility,
        "lead": listed_fields(offer.lead, item.visibility),
    }


async def claim_lead(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    buyer = authenticate_buyer(request, ctx)
    check_ready(ctx)
    raw_id = request.match_info["lead_id"]
    try:
        lead_id = str(uuid.UUID(raw_id))
    except ValueError:
        raise NotFound("not a lead id") from None
    won = await claim(ctx, buyer, lead_id)
    return json_response(
        {
            "lead_id": lead_id,
            "vertical": won.offer.vertical,
            "status": "claimed",
            "price": dollars_json(won.price_cents),
            "claimed_at": _iso(won.claimed_at),
            "lead": won.lead,
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/pool", list_pool),
        web.post("/v1/pool/{lead_id}/claim", claim_lead),
    ]
