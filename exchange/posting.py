"""Posting a lead down the ping tree until a buyer accepts it.

The caller has already won the post claim for this ping (exchange.store.claim_post), so
only one walk runs per ping, across processes. Each buyer in the tree is tried in rank
order at its own bid; a reject, error or timeout moves on to the next. The sale row and
the post's result commit in one transaction *before* the seller is answered "sold".
Every attempt is recorded (batched: attempts are not money).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from buyers.adapter import PostOffer, PostReply
from exchange.auction import Bid, ping_tree
from exchange.config import SellerConfig
from exchange.context import ExchangeContext
from exchange.money import cents_to_dollars, payout_cents
from exchange.outcomes import PostOutcome, PostStatus
from exchange.pingcache import PingRecord
from exchange.store import SaleConflict, SaleRow
from exchange.transport import TransportError, TransportTimeout

log = structlog.get_logger("exchange.post")


@dataclass(frozen=True, slots=True)
class PostAnswer:
    ping_id: str
    status: PostStatus
    price_cents: int | None  # what the buyer pays
    payout_cents: int | None  # what the seller is paid
    reason: str | None = None


class UnsoldReason:
    NO_BIDS = "no_bids"
    BELOW_MIN_PRICE = "below_min_price"
    ALL_DECLINED = "all_buyers_declined"
    DEADLINE = "post_deadline"
    INTERRUPTED = "post_interrupted"


async def _attempt(
    ctx: ExchangeContext, record: PingRecord, bid: Bid, lead: dict[str, Any], timeout_s: float
) -> tuple[PostReply, int]:
    loop = asyncio.get_running_loop()
    buyer = ctx.buyers.get(bid.buyer_id)
    if buyer is None:  # removed from the config since the ping
        return PostReply(PostOutcome.ERROR, reason="buyer no longer configured"), 0
    offer = PostOffer(record.ping_id, bid.bid_id, bid.price_cents, record.vertical, lead)
    request = buyer.adapter.post_request(offer, int(ctx.unix_time()))
    timeout_s = min(timeout_s, buyer.post_timeout_ms / 1000)
    started = loop.time()
    try:
        response = await ctx.transport.send(request, timeout_s)
    except TransportTimeout:
        reply = PostReply(PostOutcome.TIMEOUT, reason=f"no answer within {timeout_s:.1f} s")
    except TransportError as exc:
        reply = PostReply(PostOutcome.ERROR, reason=str(exc) or "transport error")
    else:
        reply = buyer.adapter.read_post(response)
    return reply, int((loop.time() - started) * 1e6)


async def post_lead(
    ctx: ExchangeContext,
    record: PingRecord,
    seller: SellerConfig,
    lead: dict[str, Any],
    min_payout_cents: int,
) -> PostAnswer:
    """Walk the ping tree; returns the committed answer. The claim must be held."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.loaded.settings.post_deadline_ms / 1000
    metrics = ctx.metrics
    tree = ping_tree(record.tree, seller.payout_share, min_payout_cents)
    if not tree:
        reason = UnsoldReason.BELOW_MIN_PRICE if record.tree else UnsoldReason.NO_BIDS
        return await _unsold(ctx, record, reason)
    pid = uuid.UUID(record.ping_id)
    for attempt, bid in enumerate(tree, start=1):
        remaining = deadline - loop.time()
        if remaining <= 0:
            return await _unsold(ctx, record, UnsoldReason.DEADLINE)
        reply, latency_us = await _attempt(ctx, record, bid, lead, remaining)
        metrics.buyer_requests.labels(bid.buyer_id, "post", reply.outcome.value).inc()
        metrics.buyer_latency.labels(bid.buyer_id, "post").observe(latency_us / 1e6)
        await ctx.writer.add(
            "post_attempts",
            (pid, attempt, bid.buyer_id, reply.outcome.value, bid.price_cents, latency_us,
             reply.reason, reply.buyer_lead_id, ctx.now()),
        )  # fmt: skip
        if reply.outcome is not PostOutcome.ACCEPTED:
            continue
        payout = payout_cents(bid.price_cents, seller.payout_share)
        sale = SaleRow(
            ping_id=record.ping_id,
            seller_id=seller.id,
            buyer_id=bid.buyer_id,
            vertical=record.vertical,
            price_cents=bid.price_cents,
            payout_cents=payout,
            bid_id=bid.bid_id,
            buyer_lead_id=reply.buyer_lead_id,
            created_at=ctx.now(),
        )
        write_started = loop.time()
        try:
            await ctx.store.record_sale(sale, ctx.now())
        except SaleConflict:
            # Cannot happen while the claim holds; if it does, the ledger is the truth.
            log.error("sale_conflict", ping_id=record.ping_id, buyer=bid.buyer_id)
            existing = await ctx.store.fetch_post(record.ping_id)
            if existing is not None and existing.status == PostStatus.SOLD:
                return PostAnswer(
                    record.ping_id, PostStatus.SOLD, existing.price_cents, existing.payout_cents
                )
            return await _unsold(ctx, record, UnsoldReason.INTERRUPTED)
        metrics.db_write_latency.labels("sales").observe(loop.time() - write_started)
        metrics.sales.labels(record.vertical).inc()
        metrics.revenue.labels(bid.buyer_id).inc(float(cents_to_dollars(bid.price_cents)))
        metrics.payout.labels(seller.id).inc(float(cents_to_dollars(payout)))
        metrics.post_attempts_per_sale.observe(attempt)
        log.info(
            "sale",
            ping_id=record.ping_id,
            seller=seller.id,
            vertical=record.vertical,
            buyer=bid.buyer_id,
            price_cents=bid.price_cents,
            attempts=attempt,
        )
        return PostAnswer(record.ping_id, PostStatus.SOLD, bid.price_cents, payout)
    return await _unsold(ctx, record, UnsoldReason.ALL_DECLINED)


async def _unsold(ctx: ExchangeContext, record: PingRecord, reason: str) -> PostAnswer:
    await ctx.store.finish_unsold(record.ping_id, reason, ctx.now())
    ctx.metrics.unsold.labels(record.vertical).inc()
    log.info(
        "unsold",
        ping_id=record.ping_id,
        seller=record.seller_id,
        vertical=record.vertical,
        reason=reason,
    )
    return PostAnswer(record.ping_id, PostStatus.UNSOLD, None, None, reason)
