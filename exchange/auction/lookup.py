"""Finding a ping wherever it is: running in this process, in its memory, or in the
ledger (another process's, perhaps still in that process's batch queue); running one
as this process's in-flight auction, so a concurrent retry waits on it; and reading one
auction's whole record back from the ledger (GET /v1/auctions/{ping_id}).

The record is one JSON document built part by part (``auction_record``): the ping, each
buyer considered, each post attempt, the post, every sale (a shared lead has one per
buyer) and every return. A new field goes in the part it belongs to.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from exchange.auction.context import ExchangeContext
from exchange.auction.holds import hold_stage
from exchange.auction.offers import pool_stage
from exchange.auction.pingcache import PingRecord, tree_from_ledger
from exchange.auction.pinging import PingRequest, run_ping
from exchange.core.money import dollars_json
from exchange.core.outcomes import PostOutcome
from exchange.ledger.reports import AuctionStory
from exchange.ledger.returns import ReturnRow

# How often a request re-reads the ledger for another process's in-flight ping or post.
LOOKUP_RETRY_S = 0.05


async def find_ping(ctx: ExchangeContext, ping_id: str, wait_s: float = 0.0) -> PingRecord | None:
    """The ping's record from this process's memory, else from the ledger.

    Another process may still hold the ping in its batch queue; with ``wait_s`` the read is
    retried until that much time has passed.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait_s
    while True:
        inflight = ctx.inflight.ping(ping_id)
        if inflight is not None:
            return await asyncio.shield(inflight)
        record = ctx.pings.get(ping_id, ctx.clock.now())
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
    return PingRecord(
        ping_id=row.ping_id,
        seller_id=row.seller_id,
        vertical=row.vertical,
        external_id=row.external_id,
        lead=row.lead,
        tree=tree_from_ledger(row.ping_tree),
        price_cents=row.price_cents,
        payout_cents=row.payout_cents,
        created_at=row.created_at,
        expires_at=row.expires_at,
        tmax_ms=row.tmax_ms,
        sub_id=row.sub_id,
    )


async def run_auction(ctx: ExchangeContext, request: PingRequest) -> PingRecord:
    """Run the auction as this process's in-flight one for its ping id: a concurrent
    request for the same ping (a post, a repeated external_id) waits on it."""
    future: asyncio.Future[PingRecord] = asyncio.get_running_loop().create_future()
    ctx.inflight.start_ping(request.ping_id, future)
    try:
        record = await run_ping(ctx, request)
        future.set_result(record)
        return record
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: waiters get it, no "never retrieved" warning
        raise
    finally:
        ctx.inflight.end_ping(request.ping_id)


# -- the auction record --------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _ms(us: int | None) -> float | None:
    return None if us is None else round(us / 1000, 3)


async def auction_record(ctx: ExchangeContext, ping_id: str) -> dict[str, Any] | None:
    """The auction's whole story as the ledger holds it (this process's queued rows
    written first), or None when there is no such auction."""
    await ctx.writer.flush()
    story = await ctx.store.auction_story(ping_id)
    if story is None:
        return None
    returns = await ctx.store.returns_of(ping_id)
    sales = _sales(story, returns)
    return {
        **_ping(story),
        "buyers": _buyers(story),
        "post_attempts": _attempts(story),
        "post": _post(story),
        # The first sale (the only one of an exclusive lead); every sale is in "sales".
        "sale": sales[0] if sales else None,
        "sales": sales,
        "returns": [_return(r) for r in returns],
        # The lead pool stage of an unsold lead (exchange/auction/offers.py), or None.
        "pool": pool_stage(await ctx.store.pool_offer(ping_id)),
        # The delayed delivery stage of a held lead (exchange/auction/holds.py), or None.
        "hold": hold_stage(await ctx.store.fetch_hold(ping_id)),
    }


def _ping(story: AuctionStory) -> dict[str, Any]:
    ping = story.ping
    return {
        "ping_id": ping.ping_id,
        "seller": ping.seller_id,
        "vertical": ping.vertical,
        "mode": ping.mode,
        "external_id": ping.external_id,
        "sub_id": ping.sub_id,
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
        # The lead score, 0-100 (exchange/core/scoring.py); null: the vertical does not
        # score its leads.
        "score": ping.score,
    }


def _buyers(story: AuctionStory) -> list[dict[str, Any]]:
    return [
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
    ]


def _attempts(story: AuctionStory) -> list[dict[str, Any]]:
    # An accepted attempt's redirect is its sale's (a buyer buys a lead at most once); an
    # acceptance that made no sale (the post's claim was closed under the walk) has none.
    redirects = {s.buyer_id: s.redirect_url for s in story.sales}
    return [
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
    ]  # fmt: skip


def _post(story: AuctionStory) -> dict[str, Any] | None:
    post = story.post
    if post is None:
        return None
    return {
        "status": post.status,
        "reason": post.reason,
        "redirect_url": post.redirect_url,
        "claimed_at": _iso(post.claimed_at),
        "finished_at": _iso(post.finished_at),
        # Unsold, reason suppressed: which of the vertical's lists matched (no value).
        "suppressed_by": post.suppressed_by,
    }


def _sales(story: AuctionStory, returns: list[ReturnRow]) -> list[dict[str, Any]]:
    """Every sale in its order; a returned one says when (its return is in "returns")."""
    returned = {r.buyer_id: r.created_at for r in returns}
    return [
        {
            "sale_seq": s.sale_seq,
            "buyer": s.buyer_id,
            "price": dollars_json(s.price_cents),
            "payout": dollars_json(s.payout_cents),
            "bid_id": s.bid_id,
            "buyer_lead_id": s.buyer_lead_id,
            "redirect_url": s.redirect_url,
            "at": _iso(s.created_at),
            "returned_at": _iso(returned.get(s.buyer_id)),
        }
        for s in story.sales
    ]


def _return(r: ReturnRow) -> dict[str, Any]:
    return {
        "buyer": r.buyer_id,
        "at": _iso(r.created_at),
        "reason": r.reason,
        "credit": dollars_json(r.credit_cents),
        "payout_reversed": dollars_json(r.payout_reversal_cents),
    }
