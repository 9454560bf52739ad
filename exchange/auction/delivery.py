"""Delivering held leads (SPEC section 10, docs/distribution.md; holding them is
exchange/auction/holds.py).

- **Delivering** (``keep_releasing``, a task in every process): each pass claims the holds
  due now (exchange/ledger/holds.py: one process per hold, under a lease) and offers each
  to its buyers open now, in order, one at a time: the buyer is screened again as in an
  auction (seller lists, filters, duplicates, caps; its schedule is what made it due), a
  fixed-price buyer is posted the lead at its price, a real-time buyer is pinged first
  and posted the lead at the bid it gives now (a bid it gave hours ago is stale). A sale
  goes in only under the claim (sold at most once); an accept, reject, timeout or error
  is a post attempt like the walk's, numbered after them. A buyer offered the lead is not
  offered it again; one capped now is offered it at a later look.
- **Ending**: sold, or, once no buyer is left within its window, unsold with reason
  ``hold_expired``, its PII purged, and the lead offered to the vertical's pool when the
  seller allows it (exchange/auction/offers.py).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from enum import Enum
from typing import Any

import structlog

from buyers.adapter import PingOffer, PostReply
from exchange.auction.attempts import Walk, post_attempt
from exchange.auction.context import BuyerRuntime, ExchangeContext
from exchange.auction.offers import offer_to_pool
from exchange.auction.pingcache import PingRecord
from exchange.auction.pinging import storable_bid
from exchange.auction.screens import (
    BEING_OFFERED,
    buyer_scope,
    check_duplicates,
    check_suppression,
    release_person,
    reserve_person,
    vertical_scope,
)
from exchange.core.classify import first_bid_stands
from exchange.core.config import SellerConfig
from exchange.core.dedupe import ContactHashes
from exchange.core.holds import (
    HoldState,
    is_over,
    next_check,
    open_now,
)
from exchange.core.money import payout_cents
from exchange.core.offers import sealing_context
from exchange.core.outcomes import BidOutcome, PostOutcome, UnsoldReason
from exchange.core.ranking import Bid, BuyerRules, effective_floor, screen
from exchange.core.scoring import ScoredLead, score_lead
from exchange.core.scrub import pii_values
from exchange.core.sealing import SealingError
from exchange.ledger.faults import DATABASE_DOWN, ROW_REFUSED
from exchange.ledger.holds import HeldLead
from exchange.ledger.sales import SaleRow
from exchange.transport.base import deliver

log = structlog.get_logger("exchange.holds")

# How often each process looks for holds due.
RELEASE_INTERVAL_S = 1.0
# How long a claim on a hold lasts: beyond any one delivery (a ping under tmax, then a
# post under its buyer's post_timeout_ms, at most 120 s). A process that dies
# mid-delivery leaves its holds to others once it ends.
LEASE = timedelta(minutes=5)
# Holds claimed per pass, delivered concurrently.
CLAIM_BATCH = 20


class _Turn(Enum):
    """What came of offering a held lead to one buyer."""

    SOLD = "sold"
    DECLINED = "declined"  # rejected, failed, or could not be offered: the next buyer
    LOST = "lost"  # the claim is no longer this process's: stop here
    # Capped now, or its person is being offered it by another lead: not tried, so it is
    # offered the lead again at a later check within its window (the next buyer now).
    LATER = "later"


async def keep_releasing(ctx: ExchangeContext) -> None:
    """Deliver due holds, every RELEASE_INTERVAL_S, for as long as the process runs."""
    while True:
        await asyncio.sleep(RELEASE_INTERVAL_S)
        try:
            await release_due(ctx)
        except DATABASE_DOWN as exc:  # the ledger is away: the next pass tries again
            log.warning("hold_release_failed", error=type(exc).__name__)
        except Exception:  # never let one bad pass stop delivery for the process's life
            log.exception("hold_release_failed")


async def release_due(ctx: ExchangeContext) -> int:
    """One pass: claim the holds due now and deliver them; how many were claimed."""
    ctx = ctx.pinned()  # the settings this pass started with
    now = ctx.clock.now()
    holds = await ctx.store.claim_due_holds(now, now + LEASE, CLAIM_BATCH)
    if holds:
        results = await asyncio.gather(*(_deliver(ctx, h) for h in holds), return_exceptions=True)
        for hold, result in zip(holds, results, strict=True):
            if isinstance(result, BaseException):
                # Its claim stays until the lease ends; then a pass tries again.
                log.error("hold_delivery_failed", ping_id=hold.ping_id,
                          error=type(result).__name__)  # fmt: skip
    ctx.metrics.record_held_leads(ctx.loaded.config.verticals, await ctx.store.held_counts())
    return len(holds)


async def _deliver(ctx: ExchangeContext, hold: HeldLead) -> None:
    assert hold.claim_token is not None
    now = ctx.clock.now()
    seller = next((s for s in ctx.loaded.config.sellers if s.id == hold.seller_id), None)
    # The seller was removed (nobody to pay) or the vertical (no rules to sell it by).
    if seller is None or hold.pii is None or hold.vertical not in ctx.loaded.config.verticals:
        await _end(ctx, hold, None, None, UnsoldReason.HOLD_EXPIRED)
        return
    try:
        pii = ctx.pii_keys.open(hold.pii, sealing_context(hold.ping_id)) if ctx.pii_keys else None
    except SealingError as exc:
        pii = None
        log.error("held_lead_sealed_shut", ping_id=hold.ping_id, error=str(exc))
    if pii is None:  # no key opens it (yet): an operator may restore the key
        if is_over(hold.buyers, hold.tried, now):  # ...until no window is left
            await _end(ctx, hold, None, None, UnsoldReason.HOLD_EXPIRED)
        else:
            await ctx.store.release_hold(hold.ping_id, hold.claim_token, hold.hold_until)
        return
    lead = {**hold.lead, **pii}
    # A person put on one of the vertical's suppression lists meanwhile is not delivered.
    suppressed_by = await check_suppression(ctx, hold.vertical, lead)
    if suppressed_by is not None:
        ctx.metrics.record_suppressed(hold.vertical, suppressed_by)
        log.info("held_lead_suppressed", ping_id=hold.ping_id, list=suppressed_by)
        await _end(ctx, hold, seller, None, UnsoldReason.SUPPRESSED, suppressed_by)
        return
    contacts = ContactHashes(hold.phone_hash, hold.email_hash)
    duplicates = await check_duplicates(ctx, hold.vertical, contacts, now)
    if duplicates.sold_in_vertical:  # sold in the vertical meanwhile: not again
        await _end(ctx, hold, seller, None, UnsoldReason.DUPLICATE)
        return
    rules = {r.buyer_id: r for r in ctx.by_vertical.get(hold.vertical, ())}
    # Scored now, as an auction now would: filters and the floor see today's rules.
    scored = score_lead(ctx.loaded.scorers.get(hold.vertical), hold.lead)
    tried = list(hold.tried)
    for buyer_id in open_now(hold.buyers, tried, rules, now):
        turn = await _offer(ctx, hold, seller, lead, scored, rules[buyer_id], duplicates.buyers)
        if turn is _Turn.LATER:
            continue
        if turn is not _Turn.DECLINED:
            return
        tried.append(buyer_id)
    if is_over(hold.buyers, tried, now):
        await _end(ctx, hold, seller, lead, UnsoldReason.HOLD_EXPIRED)
        return
    await ctx.store.release_hold(
        hold.ping_id, hold.claim_token, next_check(hold.buyers, tried, rules, now)
    )


async def _end(
    ctx: ExchangeContext,
    hold: HeldLead,
    seller: SellerConfig | None,
    lead: dict[str, Any] | None,
    reason: UnsoldReason,
    suppressed_by: str | None = None,
) -> None:
    """The hold ends unsold (PII purged); an expired one's lead goes on to the pool."""
    assert hold.claim_token is not None
    now = ctx.clock.now()
    if not await ctx.store.expire_hold(hold.ping_id, hold.claim_token, reason, now, suppressed_by):
        return
    ctx.metrics.record_hold(hold.vertical, HoldState.EXPIRED)
    ctx.metrics.record_unsold(hold.vertical)
    log.info("hold_ended_unsold", ping_id=hold.ping_id, vertical=hold.vertical,
             reason=reason.value)  # fmt: skip
    if reason is UnsoldReason.HOLD_EXPIRED and seller is not None and lead is not None:
        await offer_to_pool(
            ctx, hold.ping_id, hold.vertical, seller, lead,
            ContactHashes(hold.phone_hash, hold.email_hash), hold.min_payout_cents, hold.sub_id,
        )  # fmt: skip


def _record_of(ctx: ExchangeContext, hold: HeldLead) -> PingRecord:
    """The held lead's auction as the post machinery needs it (ids, vertical, lead)."""
    return PingRecord(
        ping_id=hold.ping_id, seller_id=hold.seller_id, vertical=hold.vertical,
        external_id=None, lead=hold.lead, tree=(), price_cents=None, payout_cents=None,
        created_at=hold.held_at, expires_at=hold.held_at,
        tmax_ms=ctx.loaded.settings.tmax_ms, sub_id=hold.sub_id,
    )  # fmt: skip


# Long on purpose: one buyer's turn in order (claim, screen, price, the person reserved),
# each step able to end it; then the post under its caps (``_post_held``).
async def _offer(
    ctx: ExchangeContext,
    hold: HeldLead,
    seller: SellerConfig,
    lead: dict[str, Any],
    scored: ScoredLead,
    rules: BuyerRules,
    duplicates: dict[str, str],
) -> _Turn:
    """Offer the held lead to one buyer open now."""
    assert hold.claim_token is not None
    token = hold.claim_token
    buyer_id = rules.buyer_id
    now = ctx.clock.now()
    _, excluded = screen([rules], seller.id, scored.fields, now, ctx.caps.counts, duplicates,
                         hold.sub_id)  # fmt: skip
    if excluded and excluded[0].outcome is BidOutcome.CAPPED:
        return _Turn.LATER  # not offered, nothing recorded: its cap may have room later
    attempt = await ctx.store.note_hold_attempt(hold.ping_id, hold.claim_token, buyer_id)
    if attempt is None:
        return _Turn.LOST
    schema = ctx.loaded.schemas[hold.vertical]
    record = _record_of(ctx, hold)
    contacts = ContactHashes(hold.phone_hash, hold.email_hash)
    walk = Walk(ctx, record, seller, 1, contacts, pii_values(lead, schema.pii_fields))
    walk.attempts = attempt - 1  # so the attempt is recorded under its own number
    runtime = ctx.buyers.get(buyer_id)
    bid = Bid(buyer_id, rules.fixed_price_cents or 0, rules.company_size, rules.priority, 0,
              fixed_price=rules.fixed_price_cents is not None, tier=rules.tier)  # fmt: skip

    async def skipped(why: str, turn: _Turn = _Turn.DECLINED) -> _Turn:
        await walk.note(bid, PostReply(PostOutcome.SKIPPED, reason=why), 0)
        if turn is _Turn.LATER:  # counted as tried when noted: not so
            await ctx.store.untry_hold_buyer(hold.ping_id, token, buyer_id)
        return turn

    if excluded:
        return await skipped(f"held lead: {excluded[0].outcome.value}: {excluded[0].reason}")
    if runtime is None:
        return await skipped("held lead: buyer no longer configured")
    floor = _floor(ctx, hold, seller, scored)
    if rules.fixed_price_cents is not None and rules.fixed_price_cents < floor:
        # As in an auction, where a fixed price under the floor is below_floor.
        return await skipped("held lead: below_floor: fixed price under the seller's floor")
    if rules.fixed_price_cents is None:
        price, bid_id, why = await _bid_now(ctx, hold, floor, scored, runtime)
        if price is None:
            return await skipped(f"held lead: {why}")
        bid.price_cents, bid.bid_id = price, bid_id
    payout = payout_cents(bid.price_cents, seller.payout_share)
    if payout < hold.min_payout_cents:
        return await skipped("held lead: the price is below the seller's min_price")
    timeout_s = runtime.post_timeout_ms / 1000
    # Another lead of this person offered to this buyer (or in this vertical) meanwhile:
    # the duplicate windows hold against it; the person is given back unless sold.
    scopes = buyer_scope(rules, now) + vertical_scope(ctx, hold.vertical, now)
    duplicate = await reserve_person(ctx, hold.ping_id, contacts, scopes, timeout_s)
    if duplicate is not None:
        later = _Turn.LATER if duplicate == BEING_OFFERED else _Turn.DECLINED
        return await skipped(f"held lead: duplicate: {duplicate}", later)
    turn = _Turn.DECLINED
    try:
        turn = await _post_held(ctx, hold, walk, record, bid, lead, rules, payout, timeout_s)
        if turn is _Turn.LATER:  # counted as tried when noted: not so
            await ctx.store.untry_hold_buyer(hold.ping_id, token, buyer_id)
    finally:
        if turn is not _Turn.SOLD:
            await release_person(ctx, hold.ping_id, scopes)
    return turn


async def _post_held(
    ctx: ExchangeContext,
    hold: HeldLead,
    walk: Walk,
    record: PingRecord,
    bid: Bid,
    lead: dict[str, Any],
    rules: BuyerRules,
    payout: int,
    timeout_s: float,
) -> _Turn:
    """The held lead posted to one buyer, under its caps; the sale if it accepts."""
    buyer_id = rules.buyer_id
    seller_id = walk.seller.id
    windows = rules.caps.windows(ctx.clock.now()) if rules.caps is not None else []
    if windows:
        reached = await ctx.store.reserve_caps(buyer_id, windows, bid.price_cents)
        if reached is not None:
            await walk.note(
                bid, PostReply(PostOutcome.SKIPPED, reason=f"held lead: capped: {reached}"), 0
            )
            return _Turn.LATER
    reply, latency_us = await post_attempt(ctx, record, bid, lead, timeout_s)
    reply = walk.clean(reply)
    if reply.outcome is PostOutcome.ACCEPTED:
        sale = SaleRow(
            ping_id=hold.ping_id, seller_id=seller_id, buyer_id=buyer_id,
            vertical=hold.vertical, price_cents=bid.price_cents, payout_cents=payout,
            bid_id=bid.bid_id, buyer_lead_id=reply.buyer_lead_id, created_at=ctx.clock.now(),
            phone_hash=hold.phone_hash, email_hash=hold.email_hash,
            redirect_url=reply.redirect_url,
        )  # fmt: skip
        turn = await _sell(ctx, hold, walk, bid, sale, reply, latency_us)
    else:
        await walk.note(bid, reply, latency_us)
        turn = _Turn.DECLINED
    if windows and turn is not _Turn.SOLD:
        await ctx.store.release_caps(buyer_id, windows, bid.price_cents)
    return turn


async def _sell(
    ctx: ExchangeContext,
    hold: HeldLead,
    walk: Walk,
    bid: Bid,
    sale: SaleRow,
    reply: PostReply,
    latency_us: int,
) -> _Turn:
    """Record the sale the buyer accepted. DECLINED when the ledger refuses the row (the
    buyer is not billed, the next one is offered the lead, as in the walk); LOST when the
    claim or the post moved on (another process has the hold: the buyer is not billed)."""
    assert hold.claim_token is not None
    started_ns = time.perf_counter_ns()
    try:
        sold = await ctx.store.sell_held(sale, hold.claim_token)
    except ROW_REFUSED as exc:
        sqlstate = getattr(exc, "sqlstate", None) or "client"
        refused = f"accepted, but the ledger refused the sale ({sqlstate})"
        await walk.note(bid, PostReply(PostOutcome.ERROR, reason=refused), latency_us)
        ctx.metrics.record_sale_unrecorded(bid.buyer_id)
        log.error("sale_not_recorded", ping_id=hold.ping_id, buyer=bid.buyer_id,
                  sqlstate=sqlstate)  # fmt: skip
        return _Turn.DECLINED
    await walk.note(bid, reply, latency_us)
    if not sold:
        log.error("held_sale_conflict", ping_id=hold.ping_id, buyer=bid.buyer_id)
        return _Turn.LOST
    ctx.metrics.record_sale(
        sale.seller_id, sale.buyer_id, sale.vertical, sale.price_cents, sale.payout_cents,
        walk.attempts, (time.perf_counter_ns() - started_ns) / 1e9,
    )  # fmt: skip
    ctx.metrics.record_hold(hold.vertical, HoldState.SOLD)
    log.info("held_lead_sold", ping_id=hold.ping_id, seller=sale.seller_id,
             vertical=hold.vertical, buyer=sale.buyer_id, price_cents=sale.price_cents,
             held_for_s=round((sale.created_at - hold.held_at).total_seconds()))  # fmt: skip
    return _Turn.SOLD


def _floor(ctx: ExchangeContext, hold: HeldLead, seller: SellerConfig, scored: ScoredLead) -> int:
    """The held lead's floor now, as an auction's: the highest of the vertical's, the
    seller's and the one its score sets."""
    vertical = ctx.loaded.config.verticals[hold.vertical]
    return max(effective_floor(seller, vertical, hold.vertical), scored.floor_cents)


async def _bid_now(
    ctx: ExchangeContext,
    hold: HeldLead,
    floor: int,
    scored: ScoredLead,
    runtime: BuyerRuntime,
) -> tuple[int | None, str | None, str]:
    """Ping a real-time buyer for the held lead now, as an auction pings (the score, and
    ``floor``): (its price, its bid id, "") when it bids at or above the floor, else
    (None, None, why not)."""
    vertical = ctx.loaded.config.verticals[hold.vertical]
    tmax_ms = ctx.loaded.settings.tmax_ms
    timeout_ms = min(tmax_ms, runtime.timeout_ms or tmax_ms)
    offer = PingOffer(hold.ping_id, hold.vertical, tmax_ms, floor, hold.lead, scored.score)
    try:
        request = runtime.adapter.ping_request(offer, int(ctx.clock.unix_time()))
    except Exception as exc:  # an adapter that cannot build the request: that buyer's error
        return None, None, f"ping failed: adapter failed: {type(exc).__name__}"
    buyer_id = runtime.rules.buyer_id
    sent = await deliver(ctx.transport, request, timeout_ms / 1000, None, buyer=buyer_id)
    if sent.response is None:
        return None, None, "ping timed out" if sent.timed_out else f"ping failed: {sent.error}"
    reply = storable_bid(runtime, sent.response)
    if not first_bid_stands(reply.outcome, reply.price_cents, reply.bid_id, floor,
                            vertical.max_bid):  # fmt: skip
        return None, None, f"no bid at or above the floor on delivery ({reply.outcome.value})"
    return reply.price_cents, reply.bid_id, ""
