"""Delayed delivery (SPEC section 10, docs/distribution.md): holding an unsold lead for
buyers that were off schedule; delivering it when the first of them opens is
exchange/auction/delivery.py.

- **Holding** (``hold_unsold``, from the post walk's unsold end): when the rules of
  exchange/core/holds.py say so, the lead's PII is sealed (exchange/core/sealing.py), the
  hold is written and the post turns ``queued`` in one statement, and the seller hears
  ``status: queued``. A hold survives any restart: it is only in the ledger.
- **The record**: ``hold_stage``, the hold as the auction record shows it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from exchange.auction.answers import PostAnswer
from exchange.auction.context import ExchangeContext
from exchange.auction.pingcache import PingRecord
from exchange.core.config import Config, SellerConfig
from exchange.core.dedupe import ContactHashes
from exchange.core.holds import (
    HoldState,
    held_for,
    hold_until,
    next_check,
    should_hold,
)
from exchange.core.offers import sealing_context
from exchange.core.outcomes import PostStatus, UnsoldReason
from exchange.core.ranking import effective_floor
from exchange.core.scoring import score_lead
from exchange.ledger.holds import HeldLead, NewHold

log = structlog.get_logger("exchange.holds")


def delayed_hours(config: Config) -> dict[str, int]:
    """``hold_hours`` of every enabled buyer with ``delayed``, by buyer id."""
    return {b.id: b.delayed.hold_hours for b in config.buyers if b.enabled and b.delayed}


async def hold_unsold(
    ctx: ExchangeContext,
    record: PingRecord,
    reason: UnsoldReason,
    seller: SellerConfig,
    lead: dict[str, Any],
    contacts: ContactHashes | None,
    min_payout_cents: int,
) -> PostAnswer | None:
    """Hold a lead whose post is ending unsold for ``reason``, when buyers with
    ``delayed`` were left out only by their schedule; the seller's ``queued`` answer, or
    None when the lead is not held (the post then closes unsold as usual)."""
    hours = delayed_hours(ctx.loaded.config)
    keys = ctx.pii_keys
    if not hours or keys is None:
        return None
    now = ctx.clock.now()
    # The buyers' filters see the lead as in its auction: its score and sub-ID included;
    # a fixed price under the floor could not have bought it (below_floor) open or not.
    # Duplicates are checked again at delivery, when they count.
    scored = score_lead(ctx.loaded.scorers.get(record.vertical), record.lead)
    floor = max(
        effective_floor(seller, ctx.loaded.config.verticals[record.vertical], record.vertical),
        scored.floor_cents,
    )
    rules = [
        r for r in ctx.by_vertical.get(record.vertical, ())
        if r.fixed_price_cents is None or r.fixed_price_cents >= floor
    ]  # fmt: skip
    buyers = held_for(rules, hours, seller.id, scored.fields, record.created_at, now,
                      ctx.caps.counts, sub_id=record.sub_id)  # fmt: skip
    if not should_hold(reason, buyers):
        return None
    pii_fields = ctx.loaded.schemas[record.vertical].pii_fields
    pii = {k: v for k, v in lead.items() if k in pii_fields}
    hold = NewHold(
        ping_id=record.ping_id, seller_id=seller.id, vertical=record.vertical,
        lead=dict(record.lead), pii=keys.seal(pii, sealing_context(record.ping_id)),
        buyers=tuple(buyers), min_payout_cents=min_payout_cents,
        phone_hash=contacts.phone if contacts else None,
        email_hash=contacts.email if contacts else None,
        # Each bid of the tree is offered at most once by the walk: numbers past it are free.
        first_attempt=len(record.tree) + 1, held_at=now, hold_until=hold_until(buyers),
        next_check_at=next_check(buyers, (), {r.buyer_id: r for r in rules}, now),
        sub_id=record.sub_id,
    )  # fmt: skip
    if not await ctx.store.hold_lead(hold):
        return None
    ctx.metrics.record_hold(record.vertical, HoldState.HELD)
    log.info("held", ping_id=record.ping_id, seller=seller.id, vertical=record.vertical,
             buyers=[b.buyer_id for b in buyers], until=hold.hold_until.isoformat(),
             unsold_reason=reason.value)  # fmt: skip
    return PostAnswer(record.ping_id, PostStatus.QUEUED, None, None)


# -- the auction record --------------------------------------------------------------------


def hold_stage(hold: HeldLead | None) -> dict[str, Any] | None:
    """What the auction record (GET /v1/auctions/{ping_id}) shows of a hold."""
    if hold is None:
        return None
    return {
        "state": hold.state.value,
        "held_at": _iso(hold.held_at),
        "until": _iso(hold.hold_until),
        "buyers": [{"buyer": b.buyer_id, "until": _iso(b.until)} for b in hold.buyers],
        "tried": list(hold.tried),
        "delivery_attempts": hold.attempts,
        "next_check_at": _iso(hold.next_check_at) if hold.state is HoldState.HELD else None,
        "buyer": hold.buyer_id,
        "finished_at": _iso(hold.finished_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
