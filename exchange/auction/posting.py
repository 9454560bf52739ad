"""Posting a lead down the ping tree until enough buyers accept it.

The caller has already won the post claim for this ping (exchange.ledger.claims.claim_post), so
only one walk runs per ping, across processes. Each buyer is tried in tree order at its
own bid (fixed-price tiers arranged by their distribution); a reject, error or timeout
moves on to the next; under a vertical's ``delivery: shotgun`` a shared lead goes to its
top buyers at once instead (exchange/auction/shotgun.py). A buyer with caps has one
sale reserved in the database before it is called, released if it declines. Each sale
commits *before* the seller is answered; an exclusive lead's sale and the post's "sold"
result commit in one transaction.
Every attempt is recorded (batched: attempts are not money).

A buyer's verdict is cleaned before anything of it is kept (``Walk.clean``); its
``redirect_url`` is kept with the sale when it passes exchange/core/redirects.py, and the
seller's answer carries the first sale's that has one (exchange/auction/answers.py).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog

from buyers.adapter import PostReply
from exchange.auction.answers import PostAnswer, ledger_answer
from exchange.auction.attempts import Walk, post_attempt
from exchange.auction.context import BuyerRuntime, ExchangeContext
from exchange.auction.holds import hold_unsold
from exchange.auction.offers import close_unsold
from exchange.auction.pingcache import PingRecord
from exchange.auction.screens import (
    DuplicateCheck,
    buyer_scope,
    release_person,
    reserve_person,
    vertical_scope,
)
from exchange.auction.shotgun import post_at_once
from exchange.core.caps import CapWindow
from exchange.core.config import SellerConfig
from exchange.core.dedupe import ContactHashes
from exchange.core.money import payout_cents
from exchange.core.outcomes import PostOutcome, PostStatus, UnsoldReason
from exchange.core.ranking import Bid, arrange_tiers, max_sales, ping_tree
from exchange.core.scrub import pii_values
from exchange.core.verdicts import after_walk, before_walk, walk_complete
from exchange.ledger.faults import ROW_REFUSED
from exchange.ledger.sales import PostTotals, SaleConflict, SaleRow

log = structlog.get_logger("exchange.post")


async def post_lead(
    ctx: ExchangeContext,
    record: PingRecord,
    seller: SellerConfig,
    lead: dict[str, Any],
    min_payout_cents: int,
    duplicates: DuplicateCheck | None = None,
) -> PostAnswer:
    """Walk the ping tree; returns the committed answer. The claim must be held."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.loaded.settings.post_deadline_ms / 1000
    vertical = ctx.loaded.config.verticals[record.vertical]
    duplicates = duplicates or DuplicateCheck()
    tree = ping_tree(record.tree, seller.payout_share, min_payout_cents)
    suppressed_by = duplicates.suppressed_by
    verdict = before_walk(duplicates.sold_in_vertical, bool(record.tree), bool(tree),
                          suppressed=suppressed_by is not None)  # fmt: skip
    if verdict is not None and verdict.reason is UnsoldReason.SUPPRESSED and suppressed_by:
        return await _suppressed(ctx, record, suppressed_by)
    if verdict is not None and verdict.reason is not None:
        return await _unsold(ctx, record, verdict.reason, seller, lead, duplicates.contacts,
                             min_payout_cents)  # fmt: skip
    tree = await _arrange(ctx, record.vertical, tree)
    schema = ctx.loaded.schemas[record.vertical]
    walk = Walk(ctx, record, seller, max_sales(seller, vertical), duplicates.contacts,
                 pii_values(lead, schema.pii_fields))  # fmt: skip
    # The vertical's duplicate window holds against another lead of this person posted
    # meanwhile: the person is reserved in the vertical for the walk, given back unless sold.
    scopes = vertical_scope(ctx, record.vertical, ctx.clock.now())
    why = await reserve_person(ctx, record.ping_id, walk.contacts, scopes, deadline - loop.time())
    if why is not None:
        log.info("post_duplicate", ping_id=record.ping_id, vertical=record.vertical, why=why)
        return await _unsold(ctx, record, UnsoldReason.DUPLICATE, seller, lead,
                             duplicates.contacts, min_payout_cents)  # fmt: skip
    try:
        return await _walk(walk, tree, lead, duplicates, deadline, min_payout_cents)
    finally:
        if not walk.sold:
            await release_person(ctx, record.ping_id, scopes)


async def _walk(
    walk: Walk,
    tree: list[Bid],
    lead: dict[str, Any],
    duplicates: DuplicateCheck,
    deadline: float,
    min_payout_cents: int,
) -> PostAnswer:
    ctx, record, seller = walk.ctx, walk.record, walk.seller
    loop = asyncio.get_running_loop()
    offer = functools.partial(_offer, walk, lead, duplicates)
    if ctx.loaded.config.verticals[record.vertical].delivery == "shotgun" and walk.wanted > 1:
        done = await post_at_once(tree, walk.wanted, offer, lambda: len(walk.sold), deadline)
    else:
        done = await _in_turn(tree, offer, deadline)
    if done is not None:
        return done
    verdict = after_walk(len(walk.sold), deadline_passed=loop.time() >= deadline)
    if verdict.reason is None:
        await ctx.store.finish_sold(record.ping_id, walk.totals, ctx.clock.now())
        return _sold_answer(walk)
    return await _unsold(ctx, record, verdict.reason, seller, lead, duplicates.contacts,
                         min_payout_cents)  # fmt: skip


async def _arrange(ctx: ExchangeContext, vertical: str, tree: list[Bid]) -> list[Bid]:
    tiers = ctx.loaded.config.verticals[vertical].tiers
    if not any(b.tier is not None for b in tree):
        return tree
    distributions = {t: cfg.distribution for t, cfg in tiers.items()}
    needs_state = any(d == "round_robin" for d in distributions.values())
    last = await ctx.store.last_winners(vertical) if needs_state else {}
    return arrange_tiers(tree, distributions, last, ctx.rng)


async def _in_turn(
    tree: list[Bid], offer: Callable[[Bid, float], Awaitable[PostAnswer | None]], deadline: float
) -> PostAnswer | None:
    """Offer the lead down the tree one buyer after another (``delivery: sequential``)."""
    loop = asyncio.get_running_loop()
    for bid in tree:
        if loop.time() >= deadline:
            break
        done = await offer(bid, deadline - loop.time())
        if done is not None:
            return done
    return None


async def _offer(
    walk: Walk, lead: dict[str, Any], duplicates: DuplicateCheck, bid: Bid, remaining_s: float
) -> PostAnswer | None:
    """One buyer's turn: skipped if it already has the person, else offered the lead."""
    if bid.buyer_id in duplicates.buyers:
        reason = "duplicate: " + duplicates.buyers[bid.buyer_id]
        await walk.note(bid, PostReply(PostOutcome.SKIPPED, reason=reason), 0)
        return None
    return await _try_buyer(walk, bid, lead, remaining_s)


async def _try_buyer(
    walk: Walk, bid: Bid, lead: dict[str, Any], remaining_s: float
) -> PostAnswer | None:
    """Offer the lead to one buyer; returns the final answer once the walk is complete."""
    ctx, record = walk.ctx, walk.record
    runtime = ctx.buyers.get(bid.buyer_id)
    now = ctx.clock.now()
    # The buyer's duplicate window holds against another lead of this person offered to
    # it meanwhile: the person is reserved for this offer, and given back unless sold.
    scopes = buyer_scope(runtime.rules if runtime is not None else None, now)
    why = await reserve_person(ctx, record.ping_id, walk.contacts, scopes, remaining_s)
    if why is not None:
        await walk.note(bid, PostReply(PostOutcome.SKIPPED, reason=f"duplicate: {why}"), 0)
        return None
    try:
        return await _reserved_try(walk, runtime, bid, lead, remaining_s, now)
    finally:
        if not any(sold is bid for sold, _ in walk.sold):
            await release_person(ctx, record.ping_id, scopes)


async def _reserved_try(
    walk: Walk,
    runtime: BuyerRuntime | None,
    bid: Bid,
    lead: dict[str, Any],
    remaining_s: float,
    now: datetime,
) -> PostAnswer | None:
    ctx, record = walk.ctx, walk.record
    caps = runtime.rules.caps if runtime is not None else None
    windows = caps.windows(now) if caps is not None else []
    if windows:
        reached = await ctx.store.reserve_caps(bid.buyer_id, windows, bid.price_cents)
        if reached is not None:
            await walk.note(bid, PostReply(PostOutcome.SKIPPED, reason=f"capped: {reached}"), 0)
            return None
    reply, latency_us = await post_attempt(ctx, record, bid, lead, remaining_s)
    reply = walk.clean(reply)
    if reply.outcome is not PostOutcome.ACCEPTED:
        await walk.note(bid, reply, latency_us)
        if windows:
            await ctx.store.release_caps(bid.buyer_id, windows, bid.price_cents)
        return None
    async with walk.selling:  # one sale at a time: its slot is the order sales commit in
        return await _sell(walk, bid, reply, latency_us, windows)


async def _sell(
    walk: Walk, bid: Bid, reply: PostReply, latency_us: int, windows: list[CapWindow]
) -> PostAnswer | None:
    """Record the sale the buyer accepted, before anyone hears of it; returns the final
    answer once the walk is complete (or the ledger's, when the claim was lost)."""
    ctx, record = walk.ctx, walk.record
    sale, totals = _sale_row(walk, bid, reply)
    write_started_ns = time.perf_counter_ns()
    try:
        await ctx.store.record_sale(sale, ctx.clock.now(), totals)
    except ROW_REFUSED as exc:
        # The buyer took the lead but the ledger will not hold its sale. A lead is never
        # left accepted and unbilled: the attempt counts as this buyer's error, and the
        # lead goes on down the tree.
        sqlstate = getattr(exc, "sqlstate", None) or "client"
        refused = f"accepted, but the ledger refused the sale ({sqlstate})"
        await walk.note(bid, PostReply(PostOutcome.ERROR, reason=refused), latency_us)
        ctx.metrics.record_sale_unrecorded(bid.buyer_id)
        log.error("sale_not_recorded", ping_id=record.ping_id, buyer=bid.buyer_id,
                  error=type(exc).__name__, sqlstate=sqlstate)  # fmt: skip
        if windows:
            await ctx.store.release_caps(bid.buyer_id, windows, bid.price_cents)
        return None
    except SaleConflict:
        # The claim was declared interrupted while this walk ran: the ledger's answer
        # stands, and this buyer is not billed.
        await walk.note(bid, reply, latency_us)
        log.error("sale_conflict", ping_id=record.ping_id, buyer=bid.buyer_id)
        if windows:
            await ctx.store.release_caps(bid.buyer_id, windows, bid.price_cents)
        return await _ledger_answer(ctx, record.ping_id)
    await walk.note(bid, reply, latency_us)
    ctx.metrics.record_sale(
        walk.seller.id, bid.buyer_id, record.vertical, bid.price_cents, sale.payout_cents,
        walk.attempts, (time.perf_counter_ns() - write_started_ns) / 1e9,
    )  # fmt: skip
    walk.sold.append((bid, sale.payout_cents))
    if walk.redirect_url is None:
        walk.redirect_url = sale.redirect_url
    await _rotate_tier(ctx, record.vertical, bid)
    log.info("sale", ping_id=record.ping_id, seller=walk.seller.id, vertical=record.vertical,
             buyer=bid.buyer_id, price_cents=bid.price_cents, attempts=walk.attempts,
             sale_seq=sale.sale_seq)  # fmt: skip
    return _sold_answer(walk) if totals is not None else None


def _sale_row(walk: Walk, bid: Bid, reply: PostReply) -> tuple[SaleRow, PostTotals | None]:
    """The sale of ``bid``, and with it the post's totals when it is the walk's last."""
    payout = payout_cents(bid.price_cents, walk.seller.payout_share)
    seq = len(walk.sold) + 1
    contacts = walk.contacts
    sale = SaleRow(
        ping_id=walk.record.ping_id,
        seller_id=walk.seller.id,
        buyer_id=bid.buyer_id,
        vertical=walk.record.vertical,
        price_cents=bid.price_cents,
        payout_cents=payout,
        bid_id=bid.bid_id,
        buyer_lead_id=reply.buyer_lead_id,
        created_at=walk.ctx.clock.now(),
        sale_seq=seq,
        phone_hash=contacts.phone if contacts else None,
        email_hash=contacts.email if contacts else None,
        redirect_url=reply.redirect_url,
    )
    if not walk_complete(seq, walk.wanted):
        return sale, None
    so_far = walk.totals
    return sale, PostTotals(so_far.price_cents + bid.price_cents, so_far.payout_cents + payout)


async def _ledger_answer(ctx: ExchangeContext, ping_id: str) -> PostAnswer:
    """The post's answer as the ledger holds it (a claim closed under this walk)."""
    existing = await ctx.store.fetch_post(ping_id)
    if existing is None:
        return PostAnswer(ping_id, PostStatus.UNSOLD, None, None, UnsoldReason.INTERRUPTED)
    return ledger_answer(existing)


async def _rotate_tier(ctx: ExchangeContext, vertical: str, bid: Bid) -> None:
    """A round-robin tier's last winner, shared by every process."""
    if bid.tier is None:
        return
    distribution = ctx.loaded.config.verticals[vertical].tiers.get(bid.tier)
    if distribution is not None and distribution.distribution == "round_robin":
        await ctx.store.set_last_winner(vertical, bid.tier, bid.buyer_id, ctx.clock.now())


def _sold_answer(walk: Walk) -> PostAnswer:
    totals = walk.totals
    return PostAnswer(walk.record.ping_id, PostStatus.SOLD, totals.price_cents,
                      totals.payout_cents, redirect_url=walk.redirect_url)  # fmt: skip


async def _suppressed(ctx: ExchangeContext, record: PingRecord, list_name: str) -> PostAnswer:
    """Closed unsold, reason suppressed, naming the list that matched (never pooled)."""
    await ctx.store.finish_suppressed(record.ping_id, list_name, ctx.clock.now())
    ctx.metrics.record_unsold(record.vertical)
    ctx.metrics.record_suppressed(record.vertical, list_name)
    log.info("suppressed", ping_id=record.ping_id, seller=record.seller_id,
             vertical=record.vertical, list=list_name)  # fmt: skip
    return PostAnswer(record.ping_id, PostStatus.UNSOLD, None, None, UnsoldReason.SUPPRESSED)


async def _unsold(
    ctx: ExchangeContext,
    record: PingRecord,
    reason: UnsoldReason,
    seller: SellerConfig,
    lead: dict[str, Any],
    contacts: ContactHashes | None,
    min_payout_cents: int,
) -> PostAnswer:
    # Held for buyers that were off schedule (delayed delivery), when any may still buy it.
    held = await hold_unsold(ctx, record, reason, seller, lead, contacts, min_payout_cents)
    if held is not None:
        return held
    # Closed unsold, and the lead offered to its vertical's pool when allowed (hybrid).
    await close_unsold(ctx, record.ping_id, record.vertical, seller, reason, lead, contacts,
                       min_payout_cents, record.sub_id)  # fmt: skip
    ctx.metrics.record_unsold(record.vertical)
    log.info(
        "unsold",
        ping_id=record.ping_id,
        seller=record.seller_id,
        vertical=record.vertical,
        reason=reason,
    )
    return PostAnswer(record.ping_id, PostStatus.UNSOLD, None, None, reason)
