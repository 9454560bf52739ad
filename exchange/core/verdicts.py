"""What a post comes to, decided from plain facts: whether the lead is walked down the
ping tree at all, whether a buyer's reject breaks its bid, and, once the walk is over,
sold or unsold and why. The walk itself (who was called, what each said, what the ledger
took) is exchange/auction/posting.py's; the verdict is decided here, and only here."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from exchange.core.outcomes import PostOutcome, PostStatus, UnsoldReason


@dataclass(frozen=True, slots=True)
class PostVerdict:
    status: PostStatus
    reason: UnsoldReason | None = None  # why unsold; None when sold


def before_walk(
    sold_in_vertical: bool, had_bids: bool, walkable: bool, suppressed: bool = False
) -> PostVerdict | None:
    """Unsold before any buyer sees the lead, or None when the walk goes ahead.

    In this order: the person is on one of the vertical's suppression lists
    (``suppressed``); the person was sold in the vertical lately (``duplicate``); the
    auction had no bid (``no_bids``); no bid pays the seller's ``min_price``
    (``below_min_price``).
    """
    if suppressed:
        return PostVerdict(PostStatus.UNSOLD, UnsoldReason.SUPPRESSED)
    if sold_in_vertical:
        return PostVerdict(PostStatus.UNSOLD, UnsoldReason.DUPLICATE)
    if not had_bids:
        return PostVerdict(PostStatus.UNSOLD, UnsoldReason.NO_BIDS)
    if not walkable:
        return PostVerdict(PostStatus.UNSOLD, UnsoldReason.BELOW_MIN_PRICE)
    return None


def walk_complete(sales: int, wanted: int) -> bool:
    """The walk stops once ``wanted`` buyers bought the lead (1: an exclusive lead)."""
    return sales >= wanted


def after_walk(sales: int, deadline_passed: bool) -> PostVerdict:
    """The tree is exhausted or the post deadline passed: sold if anyone bought (a shared
    lead may sell fewer times than it could), else unsold for the deadline or because
    every buyer declined."""
    if sales:
        return PostVerdict(PostStatus.SOLD)
    if deadline_passed:
        return PostVerdict(PostStatus.UNSOLD, UnsoldReason.DEADLINE)
    return PostVerdict(PostStatus.UNSOLD, UnsoldReason.ALL_DECLINED)


def is_breach(outcome: PostOutcome, reason: str | None, allowed: Collection[str] | None) -> bool:
    """A binding bid broken: the buyer rejected the post, and the vertical lists the
    reasons a buyer may reject for (``reject_reasons_allowed``, already in lower case) and
    the buyer gave none of them, or no reason at all. A reason matches a listed one whole,
    trimmed, whatever its case. A timeout or an error is not a breach (the buyer may not
    have seen the lead); with no list, bids are not binding and nothing is a breach."""
    if allowed is None or outcome is not PostOutcome.REJECTED:
        return False
    return reason is None or reason.strip().lower() not in allowed
