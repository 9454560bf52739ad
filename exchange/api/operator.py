"""The operator API (SPEC section 6): one auction's whole story, and reports.

Everything is read from the ledger, so it shows what was recorded, not what one
process remembers. Pending batched rows of this process are flushed first.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from exchange.api.common import CTX, authenticate_admin, json_response
from exchange.api.search import reader_scope
from exchange.auction.context import ExchangeContext
from exchange.core.errors import Invalid, NotFound
from exchange.core.money import dollars_json
from exchange.core.outcomes import PostOutcome
from exchange.ledger.rollups import hour_of, percentile_us

# Report bounds outside these years are refused (and stay clear of datetime's limits).
REPORT_YEARS = (2000, 2200)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _ms(us: int | None) -> float | None:
    return None if us is None else round(us / 1000, 3)


# Long on purpose: the auction record is one JSON document, written field by field.
async def auction(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    authenticate_admin(request, ctx)
    raw_id = request.match_info["ping_id"]
    try:
        ping_id = str(uuid.UUID(raw_id))
    except ValueError:
        raise NotFound("not a ping id") from None
    await ctx.writer.flush()
    story = await ctx.store.auction_story(ping_id)
    if story is None:
        raise NotFound(f"no auction {ping_id}")
    ping, post = story.ping, story.post
    sale = story.sales[0] if story.sales else None
    # An accepted attempt's redirect is its sale's (a buyer buys a lead at most once); an
    # acceptance that made no sale (the post's claim was closed under the walk) has none.
    redirects = {s.buyer_id: s.redirect_url for s in story.sales}
    body: dict[str, Any] = {
        "ping_id": ping_id,
        "seller": ping.seller_id,
        "vertical": ping.vertical,
        "mode": ping.mode,
        "external_id": ping.external_id,
        "created_at": _iso(ping.created_at),
        "expires_at": _iso(ping.expires_at),
        "tmax_ms": ping.tmax_ms,
        "duration_ms": _ms(ping.duration_us),
        "overhead_ms": _ms(ping.overhead_us),
        "status": ping.status,
        "price": dollars_json(ping.price_cents),
        "payout": dollars_json(ping.payout_cents),
        "lead": ping.lead,
        # What ordered the ping tree (docs/auction.md, "Rankings"); auctions recorded
        # before the ranking was kept were ranked by price.
        "ranking": ping.ranking or "price",
        "buyers": [
            {
                "buyer": r.buyer_id,
                "outcome": r.outcome,
                "bid": dollars_json(r.price_cents),
                "latency_ms": _ms(r.latency_us),
                "rank": r.rank,
                "reason": r.reason,
                "p_accept": None if r.p_accept is None else round(r.p_accept, 6),
                "expected_value": dollars_json(r.expected_value_cents),
            }
            for r in story.bids
        ],
        "post_attempts": [
            {
                "attempt": r.attempt,
                "buyer": r.buyer_id,
                "outcome": r.outcome,
                "price": dollars_json(r.price_cents),
                "latency_ms": _ms(r.latency_us),
                "reason": r.reason,
                "breach": r.breach,
                "buyer_lead_id": r.buyer_lead_id,
                "redirect_url": redirects.get(r.buyer_id)
                if r.outcome is PostOutcome.ACCEPTED else None,
                "at": _iso(r.created_at),
            }
            for r in story.attempts
        ],
        "post": None
        if post is None
        else {"status": post.status, "reason": post.reason,
              "redirect_url": post.redirect_url,
              "claimed_at": _iso(post.claimed_at), "finished_at": _iso(post.finished_at)},
        "sale": None
        if sale is None
        else {
            "buyer": sale.buyer_id,
            "price": dollars_json(sale.price_cents),
            "payout": dollars_json(sale.payout_cents),
            "bid_id": sale.bid_id,
            "buyer_lead_id": sale.buyer_lead_id,
            "redirect_url": sale.redirect_url,
            "at": _iso(sale.created_at),
        },
    }  # fmt: skip
    return json_response(body)


def _range(request: web.Request) -> tuple[datetime, datetime]:
    ctx = request.app[CTX]
    problems = []
    bounds: dict[str, datetime] = {}
    for key in ("from", "to"):
        raw = request.query.get(key)
        if raw is None:
            continue
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            problems.append({"loc": ["query", key], "msg": "must be an ISO 8601 timestamp"})
            continue
        if value.tzinfo is None:
            problems.append({"loc": ["query", key], "msg": "must carry a time zone (e.g. Z)"})
            continue
        if not REPORT_YEARS[0] <= value.year <= REPORT_YEARS[1]:
            problems.append(
                {"loc": ["query", key],
                 "msg": f"must fall in the years {REPORT_YEARS[0]} to {REPORT_YEARS[1]}"}
            )  # fmt: skip
            continue
        bounds[key] = value
    if problems:
        raise Invalid("bad report range", problems)
    until = bounds.get("to", ctx.clock.now())
    since = bounds.get("from", until - timedelta(days=1))
    if since >= until:
        raise Invalid("bad report range", [{"loc": ["query", "from"], "msg": "must be before to"}])
    # Reports are served from hourly rollups: the range widens to whole hours.
    return hour_of(since.astimezone(UTC)), _hour_ceil(until.astimezone(UTC))


def _hour_ceil(at: datetime) -> datetime:
    floor = hour_of(at)
    return floor if floor == at else floor + timedelta(hours=1)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def _report_range(request: web.Request) -> tuple[ExchangeContext, datetime, datetime]:
    """What every report does first: admin check, the (hour-aligned) range, and this
    process's queued rows written so the report includes them."""
    ctx = request.app[CTX]
    authenticate_admin(request, ctx)
    since, until = _range(request)
    await ctx.writer.flush()
    return ctx, since, until


async def buyer_report(request: web.Request) -> web.Response:
    ctx, since, until = await _report_range(request)
    rows = await ctx.store.buyer_report(since, until)
    latency = await ctx.store.buyer_latency_buckets(since, until)
    return json_response(
        {
            "from": _iso(since),
            "to": _iso(until),
            "buyers": [
                {
                    "buyer": r.buyer_id,
                    "pings": r.pings,
                    "bids": r.bids,
                    "bid_rate": _rate(r.bids, r.pings),
                    "wins": r.wins,
                    "posts": r.posts,
                    "sales": r.sales,
                    "acceptance_rate": _rate(r.accepted, r.posts),
                    "revenue": dollars_json(r.revenue_cents),
                    "returns": r.returns,
                    "return_rate": _rate(r.returns, r.sales),
                    "credits": dollars_json(r.credit_cents),
                    "net_revenue": dollars_json(r.revenue_cents - r.credit_cents),
                    "timeouts": r.timeouts,
                    "timeout_rate": _rate(r.timeouts, r.pings),
                    "errors": r.errors,
                    "excluded": r.excluded,
                    "breaches": r.breaches,
                    "p95_latency_ms": _ms(percentile_us(latency.get(r.buyer_id, {}), 0.95)),
                }
                for r in rows
            ],
        }
    )


async def seller_report(request: web.Request) -> web.Response:
    # The operator reads every seller's row; a seller's own key reads its own (SPEC 11).
    ctx = request.app[CTX]
    scope = reader_scope(request, ctx)
    since, until = _range(request)
    await ctx.writer.flush()
    rows = [r for r in await ctx.store.seller_report(since, until) if scope in (None, r.seller_id)]
    return json_response(
        {
            "from": _iso(since),
            "to": _iso(until),
            "sellers": [
                {
                    "seller": r.seller_id,
                    "pings": r.pings,
                    "bids": r.bids,
                    "bid_rate": _rate(r.bids, r.pings),
                    "posts": r.posts,
                    "sales": r.sales,
                    "acceptance_rate": _rate(r.sales, r.posts),
                    "revenue": dollars_json(r.revenue_cents),
                    "payout": dollars_json(r.payout_cents),
                    "returns": r.returns,
                    "return_rate": _rate(r.returns, r.sales),
                    "payout_reversed": dollars_json(r.reversed_cents),
                    "net_payout": dollars_json(r.payout_cents - r.reversed_cents),
                }
                for r in rows
            ],
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/auctions/{ping_id}", auction),
        web.get("/v1/reports/buyers", buyer_report),
        web.get("/v1/reports/sellers", seller_report),
    ]
