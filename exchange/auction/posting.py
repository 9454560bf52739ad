"""Posting a lead down the ping tree until enough buyers accept it.

The caller has already won the post claim for this ping (exchange.ledger.claims.claim_post), so
only one walk runs per ping, across processes. Each buyer is tried in tree order at its
own bid (fixed-price tiers arranged by their distribution); a reject, error or timeout
moves on to the next. A buyer with caps has one sale reserved in the database before it
is called, released if it declines. Each sale commits *before* the seller is answered;
an exclusive lead's sale and the post's "sold" result commit in one transaction.
Every attempt is recorded (batched: attempts are not money).

A buyer's verdict is cleaned before anything of it is kept (``_Walk.clean``); its
``redirect_url`` is kept with the sale when it passes exchange/core/redirects.py, and the
seller's answer carries the first sale's that has one (exchange/auction/answers.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from buyers.adapter import HttpResponse, PostOffer, PostReply
from exchange.auction.answers import PostAnswer, ledger_answer
from exchange.auction.context import ExchangeContext
from exchange.auction.pingcache import PingRecord
from exchange.core.caps import CapWindow
from exchange.core.config import SellerConfig
from exchange.core.dedupe import ContactHashes, buyers_with_lead, sold_in_vertical
from exchange.core.money import payout_cents
from exchange.core.outcomes import PostOutcome, PostStatus, UnsoldReason
from exchange.core.ranking import Bid, arrange_tiers, max_sales, ping_tree
from exchange.core.redirects import clean_redirect
from exchange.core.scrub import pii_values, scrub
from exchange.core.storable import MAX_ID_CHARS, MAX_REASON_CHARS, clean_text
from exchange.core.verdicts import after_walk, before_walk, is_breach, walk_complete
from exchange.ledger.faults import ROW_REFUSED
from exchange.ledger.rows import PostAttemptRow
from exchange.ledger.sales import PostTotals, SaleConflict, SaleRow
from exchange.transport.base import deliver

log = structlog.get_logger("exchange.post")


@dataclass(frozen=True, slots=True)
class DuplicateCheck:
    """What the ledger knows of this person: sold in the vertical lately, and to whom."""

    contacts: ContactHashes | None = None
    sold_in_vertical: bool = False
    buyers: dict[str, str] = field(default_factory=dict)


async def check_duplicates(
    ctx: ExchangeContext, vertical: str, contacts: ContactHashes | None, now: datetime
) -> DuplicateCheck:
    """One ledger read covering the vertical's window and every buyer's window."""
    if contacts is None or not contacts.values():
        return DuplicateCheck(contacts)
    vertical_days = ctx.loaded.config.verticals[vertical].dedupe_days
    buyer_days = {
        b.buyer_id: b.dedupe_days for b in ctx.by_vertical.get(vertical, ()) if b.dedupe_days
    }
    longest = max([vertical_days, *buyer_days.values()])
    if not longest:
        return DuplicateCheck(contacts)
    past = await ctx.store.recent_buyers_of(contacts.values(), now - timedelta(days=longest))
    return DuplicateCheck(
        contacts,
        sold_in_vertical(past, vertical, vertical_days, now),
        buyers_with_lead(past, buyer_days, now),
    )


async def _attempt(
    ctx: ExchangeContext, record: PingRecord, bid: Bid, lead: dict[str, Any], timeout_s: float
) -> tuple[PostReply, int]:
    buyer = ctx.buyers.get(bid.buyer_id)
    if buyer is None:  # removed from the config since the ping
        return PostReply(PostOutcome.ERROR, reason="buyer no longer configured"), 0
    offer = PostOffer(record.ping_id, bid.bid_id, bid.price_cents, record.vertical, lead)
    try:
        request = buyer.adapter.post_request(offer, int(ctx.clock.unix_time()))
    except Exception as exc:  # an adapter that cannot build the request: that buyer's error
        log.warning("post_request_failed", buyer=bid.buyer_id, error=type(exc).__name__)
        return PostReply(PostOutcome.ERROR, reason=f"adapter failed: {type(exc).__name__}"), 0
    timeout_s = min(timeout_s, buyer.post_timeout_ms / 1000)

    def late(response: HttpResponse) -> None:
        # Recorded as a timeout and perhaps sold down the tree meanwhile: an acceptance
        # arriving now is what a buyer's dispute would cite, so it is logged.
        answer = buyer.adapter.read_post(response)
        log.warning(
            "post_answer_after_timeout",
            ping_id=record.ping_id,
            buyer=bid.buyer_id,
            outcome=answer.outcome.value,
            timeout_ms=round(timeout_s * 1000),
        )

    sent = await deliver(ctx.transport, request, timeout_s, late, buyer=bid.buyer_id)
    if sent.response is not None:
        reply = buyer.adapter.read_post(sent.response)
    elif sent.timed_out:
        reply = PostReply(PostOutcome.TIMEOUT, reason=f"no answer within {timeout_s:.1f} s")
    else:
        reply = PostReply(PostOutcome.ERROR, reason=sent.error)
    return reply, sent.latency_us


@dataclass
class _Walk:
    """The state of one walk down the tree."""

    ctx: ExchangeContext
    record: PingRecord
    seller: SellerConfig
    wanted: int
    contacts: ContactHashes | None
    pii: list[str] = field(default_factory=list)  # the lead's PII values, to scrub
    sold: list[tuple[Bid, int]] = field(default_factory=list)  # (bid, payout cents)
    attempts: int = 0
    # The seller's redirect: the first sale's (in walk order) whose buyer gave one.
    redirect_url: str | None = None

    def clean(self, reply: PostReply) -> PostReply:
        """The reply with any PII the buyer quoted back removed, and its text made
        storable (exchange.core.storable): the verdict stands whatever bytes came with it.
        A redirect is kept for an acceptance only, and only as exchange.core.redirects
        passes it (else dropped whole, never altered)."""
        if reply.reason is None and reply.buyer_lead_id is None and reply.redirect_url is None:
            return reply
        accepted = reply.outcome is PostOutcome.ACCEPTED
        return PostReply(
            reply.outcome,
            clean_text(scrub(reply.buyer_lead_id, self.pii, free_text=False), MAX_ID_CHARS),
            clean_text(scrub(reply.reason, self.pii), MAX_REASON_CHARS),
            clean_redirect(reply.redirect_url, self.pii) if accepted else None,
        )

    @property
    def totals(self) -> PostTotals:
        return PostTotals(sum(b.price_cents for b, _ in self.sold), sum(p for _, p in self.sold))

    async def note(self, bid: Bid, reply: PostReply, latency_us: int) -> None:
        self.attempts += 1
        ctx, vertical = self.ctx, self.record.vertical
        allowed = ctx.loaded.config.verticals[vertical].reject_reasons_allowed
        breach = is_breach(reply.outcome, reply.reason, allowed)
        ctx.metrics.record_post_attempt(bid.buyer_id, reply.outcome, latency_us)
        if breach:
            ctx.metrics.record_bid_breach(bid.buyer_id)
        await ctx.writer.add(
            "post_attempts",
            PostAttemptRow(self.record.ping_id, self.attempts, bid.buyer_id, reply.outcome,
                           bid.price_cents, latency_us, reply.reason, reply.buyer_lead_id,
                           ctx.clock.now(), vertical, breach),
        )  # fmt: skip


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
    verdict = before_walk(duplicates.sold_in_vertical, bool(record.tree), bool(tree))
    if verdict is not None and verdict.reason is not None:
        return await _unsold(ctx, record, verdict.reason)
    tree = await _arrange(ctx, record.vertical, tree)
    schema = ctx.loaded.schemas[record.vertical]
    walk = _Walk(ctx, record, seller, max_sales(seller, vertical), duplicates.contacts,
                 pii_values(lead, schema.pii_fields))  # fmt: skip
    for bid in tree:
        if loop.time() >= deadline:
            break
        if bid.buyer_id in duplicates.buyers:
            reason = "duplicate: " + duplicates.buyers[bid.buyer_id]
            await walk.note(bid, PostReply(PostOutcome.SKIPPED, reason=reason), 0)
            continue
        done = await _try_buyer(walk, bid, lead, deadline - loop.time())
        if done is not None:
            return done
    verdict = after_walk(len(walk.sold), deadline_passed=loop.time() >= deadline)
    if verdict.reason is None:
        await ctx.store.finish_sold(record.ping_id, walk.totals, ctx.clock.now())
        return _sold_answer(walk)
    return await _unsold(ctx, record, verdict.reason)


async def _arrange(ctx: ExchangeContext, vertical: str, tree: list[Bid]) -> list[Bid]:
    tiers = ctx.loaded.config.verticals[vertical].tiers
    if not any(b.tier is not None for b in tree):
        return tree
    distributions = {t: cfg.distribution for t, cfg in tiers.items()}
    needs_state = any(d == "round_robin" for d in distributions.values())
    last = await ctx.store.last_winners(vertical) if needs_state else {}
    return arrange_tiers(tree, distributions, last, ctx.rng)


async def _try_buyer(
    walk: _Walk, bid: Bid, lead: dict[str, Any], remaining_s: float
) -> PostAnswer | None:
    """Offer the lead to one buyer; returns the final answer once the walk is complete."""
    ctx, record = walk.ctx, walk.record
    runtime = ctx.buyers.get(bid.buyer_id)
    caps = runtime.rules.caps if runtime is not None else None
    windows = caps.windows(ctx.clock.now()) if caps is not None else []
    if windows:
        reached = await ctx.store.reserve_caps(bid.buyer_id, windows, bid.price_cents)
        if reached is not None:
            await walk.note(bid, PostReply(PostOutcome.SKIPPED, reason=f"capped: {reached}"), 0)
            return None
    reply, latency_us = await _attempt(ctx, record, bid, lead, remaining_s)
    reply = walk.clean(reply)
    if reply.outcome is not PostOutcome.ACCEPTED:
        await walk.note(bid, reply, latency_us)
        if windows:
            await ctx.store.release_caps(bid.buyer_id, windows, bid.price_cents)
        return None
    return await _sell(walk, bid, reply, latency_us, windows)


async def _sell(
    walk: _Walk, bid: Bid, reply: PostReply, latency_us: int, windows: list[CapWindow]
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


def _sale_row(walk: _Walk, bid: Bid, reply: PostReply) -> tuple[SaleRow, PostTotals | None]:
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


def _sold_answer(walk: _Walk) -> PostAnswer:
    totals = walk.totals
    return PostAnswer(walk.record.ping_id, PostStatus.SOLD, totals.price_cents,
                      totals.payout_cents, redirect_url=walk.redirect_url)  # fmt: skip


async def _unsold(ctx: ExchangeContext, record: PingRecord, reason: UnsoldReason) -> PostAnswer:
    await ctx.store.finish_unsold(record.ping_id, reason, ctx.clock.now())
    ctx.metrics.record_unsold(record.vertical)
    log.info(
        "unsold",
        ping_id=record.ping_id,
        seller=record.seller_id,
        vertical=record.vertical,
        reason=reason,
    )
    return PostAnswer(record.ping_id, PostStatus.UNSOLD, None, None, reason)
