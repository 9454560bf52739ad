"""The pool's price arithmetic (exchange/core/offers.py): exact cents, continuous decay
rounded in the seller's favour to the cent, never under the floor; and a seller's
min_price carried into the pool as a raised floor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from exchange.core.config import PoolSettings
from exchange.core.money import payout_cents
from exchange.core.offers import (
    OfferTerms,
    age_minutes,
    decayed_price,
    listed_fields,
    min_price_for_payout,
    offer_terms,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
cents = st.integers(min_value=1, max_value=1_000_000)
elapsed = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=120))
shares = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(1), places=4)


def test_price_falls_by_the_hourly_decay_to_the_cent() -> None:
    assert decayed_price(2000, 200, 100, timedelta(0)) == 2000
    assert decayed_price(2000, 200, 100, timedelta(hours=2)) == 1800
    assert decayed_price(2000, 200, 100, timedelta(hours=2, minutes=30)) == 1750
    # 100 cents an hour is a cent every 36 s: 35.999999 s has not yet taken it.
    assert decayed_price(2000, 200, 100, timedelta(seconds=36)) == 1999
    assert decayed_price(2000, 200, 100, timedelta(seconds=35, microseconds=999_999)) == 2000
    assert decayed_price(2000, 200, 100, timedelta(hours=18)) == 200
    assert decayed_price(2000, 200, 100, timedelta(hours=500)) == 200


@given(cents, cents, st.integers(min_value=0, max_value=100_000), elapsed)
def test_decayed_price_is_exact_integer_arithmetic(
    start: int, floor: int, decay: int, age: timedelta
) -> None:
    floor = min(floor, start)
    us = age // timedelta(microseconds=1)
    expected = max(floor, start - (decay * us) // 3_600_000_000)
    price = decayed_price(start, floor, decay, age)
    assert price == expected
    assert floor <= price <= start
    assert isinstance(price, int)


@given(cents, cents, st.integers(min_value=0, max_value=100_000), elapsed, elapsed)
def test_price_never_rises_with_age(
    start: int, floor: int, decay: int, a: timedelta, b: timedelta
) -> None:
    floor = min(floor, start)
    early, late = sorted((a, b))
    assert decayed_price(start, floor, decay, late) <= decayed_price(start, floor, decay, early)


@given(st.integers(min_value=0, max_value=10_000_000), shares)
def test_min_price_is_the_lowest_price_whose_payout_reaches_the_minimum(
    min_payout: int, share: Decimal
) -> None:
    price = min_price_for_payout(min_payout, share)
    assert payout_cents(price, share) >= min_payout
    if price > 0:
        assert payout_cents(price - 1, share) < min_payout


def test_seller_minimum_raises_the_floor_and_can_keep_a_lead_out() -> None:
    pool = PoolSettings(start_price=20, floor_price=2, decay_per_hour=1, max_age_hours=72)
    plain = offer_terms(pool, T0)
    assert plain == OfferTerms(2000, 200, 100, T0, T0 + timedelta(hours=72))
    raised = offer_terms(pool, T0, min_payout_cents=850, payout_share=Decimal("0.85"))
    assert raised is not None and raised.floor_price_cents == 1000
    assert offer_terms(pool, T0, min_payout_cents=1701, payout_share=Decimal("0.85")) is None
    off = PoolSettings(enabled=False, start_price=20, floor_price=2)
    assert offer_terms(off, T0) is None


def test_offer_expires_exactly_at_max_age() -> None:
    terms = OfferTerms(2000, 200, 100, T0, T0 + timedelta(hours=72))
    assert not terms.expired(T0 + timedelta(hours=72) - timedelta(microseconds=1))
    assert terms.expired(T0 + timedelta(hours=72))
    assert age_minutes(T0, T0 + timedelta(minutes=90, seconds=59)) == 90


def test_blind_listing_shows_only_the_state() -> None:
    lead = {"zip": "90210", "state": "CA", "age": 34}
    assert listed_fields(lead, "cherry_pick") == lead
    assert listed_fields(lead, "blind") == {"state": "CA"}
