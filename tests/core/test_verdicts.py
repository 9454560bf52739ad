"""A post's verdict (exchange/core/verdicts.py): the unsold reasons' order before a walk,
and sold or unsold after it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exchange.core.outcomes import PostStatus, UnsoldReason
from exchange.core.verdicts import after_walk, before_walk, walk_complete


@given(st.booleans(), st.booleans(), st.booleans())
def test_a_duplicate_person_is_refused_before_anything_else(
    sold: bool, had_bids: bool, walkable: bool
) -> None:
    verdict = before_walk(sold, had_bids, walkable)
    if sold:
        assert verdict is not None and verdict.reason is UnsoldReason.DUPLICATE
    elif not had_bids:
        assert verdict is not None and verdict.reason is UnsoldReason.NO_BIDS
    elif not walkable:
        assert verdict is not None and verdict.reason is UnsoldReason.BELOW_MIN_PRICE
    else:
        assert verdict is None
    assert verdict is None or verdict.status is PostStatus.UNSOLD


@given(st.integers(0, 10), st.booleans())
def test_any_sale_makes_the_post_sold_else_the_deadline_or_the_declines_say_why(
    sales: int, deadline_passed: bool
) -> None:
    verdict = after_walk(sales, deadline_passed)
    if sales:
        assert verdict.status is PostStatus.SOLD and verdict.reason is None
    else:
        expected = UnsoldReason.DEADLINE if deadline_passed else UnsoldReason.ALL_DECLINED
        assert verdict.status is PostStatus.UNSOLD and verdict.reason is expected


@given(st.integers(0, 10), st.integers(1, 10))
def test_the_walk_ends_once_the_lead_has_sold_as_often_as_it_may(sales: int, wanted: int) -> None:
    assert walk_complete(sales, wanted) == (sales >= wanted)
