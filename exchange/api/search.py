"""``GET /v1/auctions``: find auctions (SPEC section 11).

Filters ``seller``, ``buyer``, ``vertical``, ``status`` (an auction's final status: its
post's ``sold``/``unsold``/``in_progress`` when posted, else its ping's
``bid``/``no_bid``), ``external_id``, ``sub_id``, ``from``/``to`` (ISO 8601 with a zone),
``limit`` (1-500, default 50) and ``cursor`` (the ``next_cursor`` of the previous page).
Newest first. Every unknown or malformed parameter is named in one 422.

The admin token reads every seller's auctions; a seller's own api key reads only its
own (``seller`` is then implied; naming another seller is 403; a cursor is only a
position, so one taken from another reader's page still lists the reader's own
auctions only). How each filter is served: exchange/ledger/search.py.

Who reads what is decided here for the other self-service reads too (``reader_scope``
for the seller report, ``buyer_reader_scope`` for the buyer report).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from exchange.api.common import CTX, authenticate_admin, bearer, json_response
from exchange.auction.context import ExchangeContext
from exchange.core.config import hash_key
from exchange.core.errors import Forbidden, Invalid
from exchange.core.money import dollars_json
from exchange.ledger.search import STATUSES, AuctionFilter, AuctionSummary

MAX_LIMIT = 500
_TEXT_FILTERS = ("seller", "buyer", "vertical", "external_id", "sub_id")
_KNOWN = frozenset({*_TEXT_FILTERS, "status", "from", "to", "limit", "cursor"})
_YEARS = (2000, 2200)


def reader_scope(request: web.Request, ctx: ExchangeContext) -> str | None:
    """Who reads: None for the operator (admin token), else the seller whose key it is."""
    seller = ctx.loaded.sellers_by_key_hash.get(hash_key(bearer(request)))
    if seller is not None:
        return seller.id
    authenticate_admin(request, ctx)
    return None


def buyer_reader_scope(request: web.Request, ctx: ExchangeContext) -> str | None:
    """Who reads the buyer report: None for the operator, else the buyer whose own
    ``api_key`` it is. A seller's key is refused: the buyers' figures are not its own."""
    presented = hash_key(bearer(request))
    buyer = ctx.loaded.buyers_by_key_hash.get(presented)
    if buyer is not None:
        return buyer.id
    if presented in ctx.loaded.sellers_by_key_hash:
        raise Forbidden("a seller's key reads its own report (GET /v1/reports/sellers)")
    authenticate_admin(request, ctx)
    return None


def _cursor_text(ping_id: str) -> str:
    return base64.urlsafe_b64encode(uuid.UUID(ping_id).bytes).decode().rstrip("=")


def _cursor_ping_id(text: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return str(uuid.UUID(bytes=raw))
    except (ValueError, binascii.Error):
        return None


def _timestamp(raw: str) -> datetime | str:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return "must be an ISO 8601 timestamp"
    if value.tzinfo is None:
        return "must carry a time zone (e.g. Z)"
    if not _YEARS[0] <= value.year <= _YEARS[1]:
        return f"must fall in the years {_YEARS[0]} to {_YEARS[1]}"
    return value


def parse_filter(query: Any, scope: str | None) -> AuctionFilter:
    """The query string as a filter; Invalid lists every problem, Forbidden a seller
    naming another seller."""
    problems: list[dict[str, Any]] = []

    def problem(key: str, msg: str) -> None:
        problems.append({"loc": ["query", key], "msg": msg})

    for key in query:
        if key not in _KNOWN:
            problem(key, f"unknown parameter (known: {', '.join(sorted(_KNOWN))})")
    text: dict[str, str | None] = {}
    for key in _TEXT_FILTERS:
        raw = query.get(key)
        if raw is not None and not 1 <= len(raw) <= 200:
            problem(key, "must be 1 to 200 characters")
            raw = None
        text[key] = raw
    status = query.get("status")
    if status is not None and status not in STATUSES:
        problem("status", f"must be one of {', '.join(STATUSES)}")
    times: dict[str, datetime] = {}
    for key in ("from", "to"):
        raw = query.get(key)
        if raw is not None:
            parsed = _timestamp(raw)
            if isinstance(parsed, str):
                problem(key, parsed)
            else:
                times[key] = parsed
    if "from" in times and "to" in times and times["from"] >= times["to"]:
        problem("from", "must be before to")
    limit = 50
    raw_limit = query.get("limit")
    if raw_limit is not None:
        # ASCII digits only: str.isdigit() also takes digits int() cannot read ("²").
        digits = raw_limit.isascii() and raw_limit.isdigit()
        if not digits or not 1 <= int(raw_limit) <= MAX_LIMIT:
            problem("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        else:
            limit = int(raw_limit)
    before = None
    raw_cursor = query.get("cursor")
    if raw_cursor is not None:
        before = _cursor_ping_id(raw_cursor)
        if before is None:
            problem("cursor", "not a cursor from a previous page")
    if problems:
        raise Invalid("bad auction search", problems)
    seller = text["seller"]
    if scope is not None:
        if seller is not None and seller != scope:
            raise Forbidden("a seller's key reads its own auctions only")
        seller = scope
    return AuctionFilter(
        seller=seller,
        buyer=text["buyer"],
        vertical=text["vertical"],
        status=status,
        external_id=text["external_id"],
        sub_id=text["sub_id"],
        since=times.get("from"),
        until=times.get("to"),
        before=before,
        limit=limit,
    )


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _summary(row: AuctionSummary) -> dict[str, Any]:
    return {
        "ping_id": row.ping_id,
        "seller": row.seller_id,
        "vertical": row.vertical,
        "mode": row.mode,
        "external_id": row.external_id,
        "sub_id": row.sub_id,
        "status": row.status,
        "created_at": _iso(row.created_at),
        "price": dollars_json(row.price_cents),
        "payout": dollars_json(row.payout_cents),
        "sold_price": dollars_json(row.sold_cents),
        "duration_ms": round(row.duration_us / 1000, 3),
    }


async def auctions(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    scope = reader_scope(request, ctx)
    where = parse_filter(request.query, scope)
    await ctx.writer.flush()  # this process's queued rows are part of the answer
    found, more = await ctx.store.search_auctions(where)
    next_cursor = _cursor_text(found[-1].ping_id) if more and found else None
    return json_response({"auctions": [_summary(r) for r in found], "next_cursor": next_cursor})


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/auctions", auctions)]
