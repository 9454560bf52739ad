"""Post claims: one walk down the ping tree per ping, across processes.

The first post of a ping claims it in the ledger and walks the tree; every other post of
the same lead (a retry, a race, another process) gets that walk's answer; a post of
another lead under the same ping is a 409. A claim whose walk is gone (its process died,
or its walk failed midway) is closed as interrupted, so that waiters get an answer.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import datetime
from typing import Any

import structlog

from exchange.auction.answers import PostAnswer, ledger_answer
from exchange.auction.context import ExchangeContext
from exchange.auction.lookup import LOOKUP_RETRY_S
from exchange.auction.pingcache import PingRecord
from exchange.auction.posting import post_lead
from exchange.auction.screens import DuplicateCheck
from exchange.auction.state import PostInFlight
from exchange.core.config import SellerConfig
from exchange.core.dedupe import lead_digest
from exchange.core.errors import Conflict
from exchange.core.outcomes import ClaimStatus, UnsoldReason

log = structlog.get_logger("exchange.claims")


# A post claim older than post_deadline_ms plus this belongs to a walk that is gone.
CLAIM_AGE_SLACK_S = 5.0


# How often a failed walk's process tries again to close its claim.
CLOSE_RETRY_S = 0.5


async def settle_post(
    ctx: ExchangeContext,
    record: PingRecord,
    seller: SellerConfig,
    lead: dict[str, Any],
    min_payout_cents: int,
    duplicates: DuplicateCheck | None = None,
) -> PostAnswer:
    """Post once per ping: the first caller walks the tree, every other caller posting
    the same lead (a retry, a race, another process) gets that walk's answer, and one
    posting another lead under the ping (other contact details) a 409."""
    digest = digest_of(ctx, record.ping_id, lead)
    inflight = ctx.inflight.post(record.ping_id)
    if inflight is not None:
        _same_lead(record.ping_id, inflight.lead_digest, digest)
        return await asyncio.shield(inflight.answer)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[PostAnswer] = loop.create_future()
    ctx.inflight.start_post(record.ping_id, PostInFlight(future, digest))
    claimed_at = ctx.clock.now()
    walked = False
    try:
        existing = await ctx.store.claim_post(record.ping_id, seller.id, claimed_at, digest)
        if existing is None:
            walked = True
            answer = await post_lead(ctx, record, seller, lead, min_payout_cents, duplicates)
        else:
            _same_lead(record.ping_id, existing.lead_digest, digest)
            answer = await _await_result(ctx, record.ping_id, future)
        future.set_result(answer)
        return answer
    except BaseException as exc:
        if walked:
            _close_later(ctx, record.ping_id, claimed_at, exc)
        future.set_exception(exc)
        future.exception()
        raise
    finally:
        ctx.inflight.end_post(record.ping_id)


def digest_of(ctx: ExchangeContext, ping_id: str, lead: dict[str, Any]) -> bytes:
    key = ctx.loaded.settings.dedupe_hash_key
    return lead_digest(ping_id, lead, key.encode() if key else b"")


def _same_lead(ping_id: str, first: bytes | None, posted: bytes) -> None:
    """A 409 unless ``posted`` is the lead first posted under the ping (SPEC section 4:
    a post that disagrees is a conflict, never a silent resale or another lead's "sold").
    A claim from before digests were kept (None) is taken as the same lead."""
    if first is not None and not hmac.compare_digest(first, posted):
        raise Conflict(
            f"ping {ping_id} was already posted with a different lead",
            [{"loc": ["lead"], "msg": "differs from the lead first posted for this ping"}],
        )


def _close_later(
    ctx: ExchangeContext, ping_id: str, claimed_at: datetime, error: BaseException
) -> None:
    log.warning("post_walk_failed", ping_id=ping_id, error=type(error).__name__)
    ctx.claim_closers.start(_close_abandoned(ctx, ping_id, claimed_at))


async def _close_abandoned(ctx: ExchangeContext, ping_id: str, claimed_at: datetime) -> None:
    """A walk of this process failed midway (typically: the ledger went away) and left its
    claim in progress. Close it the way an aged-out claim is closed (sold with its committed
    sales, else unsold ``post_interrupted``) as soon as the ledger takes the write, so that
    a retry on any process, not only this one, gets the answer at once instead of waiting
    for the claim to age out. Only that very claim is closed (this process's, made at
    ``claimed_at``). Past the age-out time any process closes it, so the tries stop."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + ctx.loaded.settings.post_deadline_ms / 1000 + CLAIM_AGE_SLACK_S
    while True:
        try:
            closed = await ctx.store.close_interrupted(
                ping_id, UnsoldReason.INTERRUPTED, ctx.clock.now(), claimed_at=claimed_at
            )
        except Exception as exc:  # the ledger is still away: try again shortly
            if loop.time() + CLOSE_RETRY_S >= give_up_at:
                log.warning("post_claim_left_to_age_out", ping_id=ping_id, error=type(exc).__name__)
                return
            await asyncio.sleep(CLOSE_RETRY_S)
            continue
        if closed:
            log.info("post_claim_closed", ping_id=ping_id)
        return


async def _await_result(
    ctx: ExchangeContext, ping_id: str, mine: asyncio.Future[PostAnswer] | None = None
) -> PostAnswer:
    """Wait for a post claimed elsewhere to finish. A claim whose walk is gone is closed
    as interrupted, and a sale that walk may have started cannot commit any more
    (exchange.ledger.sales.Sales.record_sale). A walk is gone when its claim is older than the post
    deadline (plus slack); at once when the claim is another process's and that process
    has stopped writing its heartbeat (PostResult.owner_silent: it died); and at once
    when the claim is this process's and no walk of it runs here any more (it failed,
    e.g. when the ledger went away midway): no walk here is registered for the ping but
    the caller's own (``mine``), and only one runs per ping in a process."""
    settings = ctx.loaded.settings
    while True:
        result = await ctx.store.fetch_post(ping_id)
        assert result is not None
        if result.status is not ClaimStatus.IN_PROGRESS:
            return ledger_answer(result)
        walking = ctx.inflight.post(ping_id)
        if result.claimed_by == ctx.store.owner:
            abandoned = walking is None or walking.answer is mine
        else:  # another process's: abandoned if that process has stopped beating
            abandoned = result.owner_silent
        age_s = (ctx.clock.now() - result.claimed_at).total_seconds()
        if abandoned or age_s > settings.post_deadline_ms / 1000 + CLAIM_AGE_SLACK_S:
            await ctx.store.close_interrupted(ping_id, UnsoldReason.INTERRUPTED, ctx.clock.now())
            continue
        await asyncio.sleep(LOOKUP_RETRY_S)


async def result_of(ctx: ExchangeContext, ping_id: str, digest: bytes) -> PostAnswer | None:
    """The answer of the post already made under ``ping_id`` (a 409 if it was made with
    another lead than ``digest``'s), or None when there is none."""
    inflight = ctx.inflight.post(ping_id)
    if inflight is not None:
        _same_lead(ping_id, inflight.lead_digest, digest)
        return await asyncio.shield(inflight.answer)
    existing = await ctx.store.fetch_post(ping_id)
    if existing is None:
        return None
    _same_lead(ping_id, existing.lead_digest, digest)
    return await _await_result(ctx, ping_id)
