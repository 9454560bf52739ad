"""The operator API (SPEC section 6): one auction's whole story, and reports.

Everything is read from the ledger, so it shows what was recorded, not what one
process remembers. Pending batched rows of this process are flushed first.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aiohttp import web

from exchange.api.common import CTX, json_response
from exchange.api.search import buyer_reader_scope, reader_scope
from exchange.auction.context import ExchangeContext
from exchange.auction.lookup import auction_record
from exchange.core.errors import Forbidden, Invalid, NotFound
from exchange.core.money import dollars_json
from exchange.core.scoring import average_score
from exchange.ledger.rollups import hour_of, percentile_us

# Report bounds outside these years are refused (and stay clear of datetime's limits).
REPORT_YEARS = (2000, 2200)
# GET /v1/reports/sellers?by=: a row per seller, or per seller and sub-ID (SPEC 11).
SELLER_REPORT_BY = ("seller", "sub_id")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _ms(us: int | None) -> float | None:
    return None if us is None else round(us / 1000, 3)


async def auction(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    if reader_scope(request, ctx) is not None:
        raise Forbidden("an auction's record is the operator's; a seller reads GET /v1/auctions")
    raw_id = request.match_info["ping_id"]
    try:
        ping_id = str(uuid.UUID(raw_id))
    except ValueError:
        raise NotFound("not a ping id") from None
    record = await auction_record(ctx, ping_id)
    if record is None:
        raise NotFound(f"no auction {ping_id}")
    return json_response(record)


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


async def buyer_report(request: web.Request) -> web.Response:
    # The operator reads every buyer's row; a buyer's own api_key reads its own (SPEC 11).
    ctx = request.app[CTX]
    scope = buyer_reader_scope(request, ctx)
    since, until = _range(request)
    await ctx.writer.flush()  # this process's queued rows are part of the report
    rows = [r for r in await ctx.store.buyer_report(since, until) if scope in (None, r.buyer_id)]
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
    by = _report_by(request)
    since, until = _range(request)
    await ctx.writer.flush()
    if by == "sub_id":
        return await _sub_id_report(ctx, scope, since, until)
    rows = [r for r in await ctx.store.seller_report(since, until) if scope in (None, r.seller_id)]
    return json_response(
        {
            "from": _iso(since),
            "to": _iso(until),
            "sellers": [
                {
                    "seller": r.seller_id,
                    **_seller_figures(r),
                    "avg_score": _avg_score(r.scored, r.score_sum),
                }
                for r in rows
            ],
        }
    )


class _SellerCounts(Protocol):
    """A seller report row's figures, per seller or per seller and sub-ID."""

    @property
    def pings(self) -> int: ...
    @property
    def bids(self) -> int: ...
    @property
    def posts(self) -> int: ...
    @property
    def sales(self) -> int: ...
    @property
    def revenue_cents(self) -> int: ...
    @property
    def payout_cents(self) -> int: ...
    @property
    def returns(self) -> int: ...
    @property
    def reversed_cents(self) -> int: ...


def _seller_figures(r: _SellerCounts) -> dict[str, Any]:
    """The seller report's figures of one row, with their rates and net payout."""
    return {
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


def _avg_score(scored: int, score_sum: int) -> float | None:
    """The average lead score, one decimal, as a JSON number; null: nothing was scored."""
    average = average_score(score_sum, scored)
    return None if average is None else float(average)


def _report_by(request: web.Request) -> str:
    by = request.query.get("by", "seller")
    if by not in SELLER_REPORT_BY:
        raise Invalid(
            "bad report grouping",
            [{"loc": ["query", "by"], "msg": f"must be one of {', '.join(SELLER_REPORT_BY)}"}],
        )
    return by


async def _sub_id_report(
    ctx: ExchangeContext, scope: str | None, since: datetime, until: datetime
) -> web.Response:
    """``?by=sub_id``: a row per seller and sub-ID (null: pings that named none), the
    seller report's figures read from the ledger rows (exchange/ledger/sub_ids.py)."""
    rows = await ctx.store.seller_sub_id_report(since, until)
    scores = await ctx.store.scores_by_sub_id(since, until)
    return json_response(
        {
            "from": _iso(since),
            "to": _iso(until),
            "by": "sub_id",
            "sellers": [
                {
                    "seller": r.seller_id,
                    "sub_id": r.sub_id,
                    **_seller_figures(r),
                    "avg_score": _avg_score(*scores.get((r.seller_id, r.sub_id), (0, 0))),
                }
                for r in rows
                if scope in (None, r.seller_id)
            ],
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/auctions/{ping_id}", auction),
        web.get("/v1/reports/buyers", buyer_report),
        web.get("/v1/reports/sellers", seller_report),
    ]
