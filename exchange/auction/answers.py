"""What a post comes to: the answer a seller is given (why a lead went unsold is
exchange.core.outcomes.UnsoldReason)."""

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
