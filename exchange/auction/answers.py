"""What a post comes to: the answer a seller is given, and why a lead went unsold."""

from __future__ import annotations

from dataclasses import dataclass

from exchange.core.outcomes import PostStatus


@dataclass(frozen=True, slots=True)
class PostAnswer:
    ping_id: str
    status: PostStatus
    price_cents: int | None  # what the buyers pay, summed
    payout_cents: int | None  # what the seller is paid, summed
    reason: str | None = None


class UnsoldReason:
    NO_BIDS = "no_bids"
    BELOW_MIN_PRICE = "below_min_price"
    ALL_DECLINED = "all_buyers_declined"
    DEADLINE = "post_deadline"
    INTERRUPTED = "post_interrupted"
    DUPLICATE = "duplicate"
