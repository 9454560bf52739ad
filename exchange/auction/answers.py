"""What a post comes to: the answer a seller is given (why a lead went unsold is
exchange.core.outcomes.UnsoldReason), from a walk or rebuilt from the ledger.

A sold answer carries the buyer's ``redirect_url`` when it gave one (SPEC section 8).
A shared lead sold to several buyers has one answer, so one redirect: that of the first
sale, in sale order (the best-ranked buyer that accepted), whose buyer gave one. The walk
and the ledger (exchange.ledger.claims.Claims.fetch_post) pick it by the same rule, so a
retry hears the redirect the first answer carried.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.core.outcomes import ClaimStatus, PostStatus
from exchange.ledger.claims import PostResult


@dataclass(frozen=True, slots=True)
class PostAnswer:
    ping_id: str
    status: PostStatus
    price_cents: int | None  # what the buyers pay, summed
    payout_cents: int | None  # what the seller is paid, summed
    reason: str | None = None
    redirect_url: str | None = None  # sold only: where the buyer wants the consumer sent


def ledger_answer(result: PostResult) -> PostAnswer:
    """The answer a post's ledger row gives; a claim still in progress reads as unsold
    (with the row's reason, None while in progress)."""
    if result.status is ClaimStatus.IN_PROGRESS:
        status = PostStatus.UNSOLD
    else:
        status = PostStatus(result.status)
    redirect_url = result.redirect_url if status is PostStatus.SOLD else None
    return PostAnswer(
        result.ping_id, status, result.price_cents, result.payout_cents, result.reason,
        redirect_url,
    )  # fmt: skip
