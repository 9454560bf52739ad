"""The lead pool as pure code (SPEC section 10, docs/distribution.md): whether an unsold
lead enters its vertical's pool and on what terms, what an offer costs at a given
moment, when it leaves, and what a listing shows of it.

The price decays continuously and exactly, in integer arithmetic on microseconds:

    price = max(floor, start - floor(decay_per_hour x elapsed / 1 hour))

so the amount taken off is rounded *down* to the cent and the price falls one cent at a
time, never below the floor; it is the same whichever process computes it. An offer lives
``max_age_hours`` from the moment it entered the pool; at that instant it is expired.

A seller's ``min_price`` (a payout it will not go below) holds in the pool too: the
offer's floor is raised to the lowest price whose payout reaches it, and a lead whose
raised floor is above the pool's start price is not offered at all.

No clock is read here: ``now`` is always an argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from exchange.core.config import PoolSettings
from exchange.core.outcomes import UnsoldReason

MICROSECONDS_PER_HOUR = 3_600_000_000
_MICROSECOND = timedelta(microseconds=1)

# The unsold outcomes whose leads go on to the pool: nobody bid, nobody met the seller's
# price, every buyer declined, or the post deadline ran out. A duplicate is never
# offered again, and an interrupted post's lead may have been sold meanwhile.
POOLED_REASONS = frozenset(
    {UnsoldReason.NO_BIDS, UnsoldReason.BELOW_MIN_PRICE, UnsoldReason.ALL_DECLINED,
     UnsoldReason.DEADLINE}
)  # fmt: skip

# What a blind listing shows of a lead besides its price and age.
BLIND_FIELDS = ("state",)


@dataclass(frozen=True, slots=True)
class OfferTerms:
    """An offer's prices and lifetime, fixed when it enters the pool (a later change of
    the vertical's pool settings applies to later offers)."""

    start_price_cents: int
    floor_price_cents: int
    decay_cents_per_hour: int
    entered_at: datetime
    expires_at: datetime

    def price_at(self, now: datetime) -> int:
        """The offer's price at ``now``, in cents (before entry: the start price)."""
        return decayed_price(
            self.start_price_cents, self.floor_price_cents, self.decay_cents_per_hour,
            now - self.entered_at,
        )  # fmt: skip

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def decayed_price(start_cents: int, floor_cents: int, decay_cents_per_hour: int,
                  elapsed: timedelta) -> int:  # fmt: skip
    """``start`` less ``decay_per_hour`` for every hour of ``elapsed`` (to the
    microsecond, the decay rounded down to the cent), never below ``floor``."""
    elapsed_us = max(0, elapsed // _MICROSECOND)
    decayed = decay_cents_per_hour * elapsed_us // MICROSECONDS_PER_HOUR
    return max(floor_cents, start_cents - decayed)


def min_price_for_payout(min_payout_cents: int, payout_share: Decimal) -> int:
    """The lowest price whose payout (price x share, rounded down) reaches
    ``min_payout_cents``."""
    if min_payout_cents <= 0:
        return 0
    numerator, denominator = payout_share.as_integer_ratio()
    # Smallest p with floor(p * n / d) >= m is ceil(m * d / n).
    return -(-min_payout_cents * denominator // numerator)


def offer_terms(
    pool: PoolSettings | None,
    now: datetime,
    min_payout_cents: int = 0,
    payout_share: Decimal = Decimal(1),
) -> OfferTerms | None:
    """The terms an unsold lead enters its vertical's pool on, or None when it does not
    (no pool, a pool switched off, or a seller's minimum above the pool's start price)."""
    if pool is None or not pool.enabled:
        return None
    floor = max(pool.floor_price, min_price_for_payout(min_payout_cents, payout_share))
    if floor > pool.start_price:
        return None
    return OfferTerms(
        start_price_cents=pool.start_price,
        floor_price_cents=floor,
        decay_cents_per_hour=pool.decay_per_hour,
        entered_at=now,
        expires_at=now + timedelta(hours=pool.max_age_hours),
    )


def poolable(reason: UnsoldReason | str | None) -> bool:
    """Whether a post that ended unsold for ``reason`` sends its lead on to the pool."""
    return reason in POOLED_REASONS


def listed_fields(lead: Mapping[str, Any], visibility: str) -> dict[str, Any]:
    """What a listing shows of a lead's non-PII fields: all of them for ``cherry_pick``,
    only the state for ``blind``."""
    if visibility == "cherry_pick":
        return dict(lead)
    return {name: lead[name] for name in BLIND_FIELDS if name in lead}


def age_minutes(entered_at: datetime, now: datetime) -> int:
    """Whole minutes since the offer entered the pool."""
    return max(0, (now - entered_at) // timedelta(minutes=1))


def sealing_context(ping_id: str) -> bytes:
    """The associated data a lead's PII is sealed with (exchange/core/sealing.py): its
    ping id as text, so a sealed value copied onto another lead's row does not open."""
    return ping_id.encode()
