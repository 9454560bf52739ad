"""One buyer's post attempt and a walk's record of its attempts: what the walk down the
ping tree (posting.py) and a held lead's delivery (holds.py) share. A buyer's verdict is
cleaned before anything of it is kept (``Walk.clean``); every attempt is recorded
(batched: attempts are not money)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from buyers.adapter import HttpResponse, PostOffer, PostReply
from exchange.auction.context import ExchangeContext
from exchange.auction.pingcache import PingRecord
from exchange.core.config import SellerConfig
from exchange.core.dedupe import ContactHashes
from exchange.core.outcomes import PostOutcome
from exchange.core.ranking import Bid
from exchange.core.redirects import clean_redirect
from exchange.core.scrub import scrub
from exchange.core.storable import MAX_ID_CHARS, MAX_REASON_CHARS, clean_text
from exchange.core.verdicts import is_breach
from exchange.ledger.rows import PostAttemptRow
from exchange.ledger.sales import PostTotals
from exchange.transport.base import deliver

log = structlog.get_logger("exchange.post")


async def post_attempt(
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
class Walk:
    """The state of one walk down the tree (or of one held lead's delivery): who bought
    it, how many attempts, and the lead's PII to scrub from what buyers answer."""

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
    selling: asyncio.Lock = field(default_factory=asyncio.Lock)  # shotgun posts run at once

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
