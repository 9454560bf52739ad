"""The market benchmark's oracles (benchmarks/market_report.py): what its figures rest on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.market_report import FLOOR_CENTS, Offer, walk

offers = st.lists(
    st.builds(
        Offer,
        price_cents=st.integers(0, 20_000),
        accepts=st.booleans(),
        rate=st.sampled_from([0.55, 0.97]),
    ),
    max_size=10,
)


def clairvoyant(market: list[Offer]) -> int:
    best = max((o.price_cents for o in market if o.accepts), default=0)
    return best if best >= FLOOR_CENTS else 0


@given(offers)
def test_the_price_ranking_always_earns_the_clairvoyant_oracles_revenue(
    market: list[Offer],
) -> None:
    assert walk(market, 0.0)[0] == clairvoyant(market)


@given(offers, st.floats(0, 3))
def test_no_ranking_earns_more_than_the_clairvoyant_oracle(
    market: list[Offer], alpha: float
) -> None:
    price, posts = walk(market, alpha)
    assert price <= clairvoyant(market)
    assert posts <= sum(1 for o in market if o.price_cents >= FLOOR_CENTS)


def test_the_informed_oracle_posts_first_to_the_best_bid_times_rate() -> None:
    honest = Offer(2000, True, 0.97)
    inflated = Offer(2600, False, 0.55)  # 14.30 expected against 19.40
    assert walk([inflated, honest], 1.0) == (2000, 1)
    assert walk([inflated, honest], 0.0) == (2000, 2)  # by price: a reject first
