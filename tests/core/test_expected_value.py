"""Rules of the expected-value ranking, binding bids and the tie-breakers among equal bids
(exchange/core/acceptance.py, ranking.py, classify.py, verdicts.py), as properties."""

from __future__ import annotations

import itertools
from collections import Counter
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from exchange.core.acceptance import (
    AcceptanceRates,
    Tally,
    expected_value,
    expected_value_cents,
    p_accept,
)
from exchange.core.classify import AuctionInputs, BuyerReply, classify
from exchange.core.config import DEFAULT_MAX_BID_CENTS, AcceptancePrior
from exchange.core.outcomes import BidOutcome, PostOutcome
from exchange.core.ranking import Bid, BuyerRules, rank, tie_at_top
from exchange.core.verdicts import is_breach

TIE_BREAKERS = ("company_size", "priority", "latency")
PRIOR = AcceptancePrior(accepts=8, posts=10)

priors = st.builds(
    lambda posts, share: AcceptancePrior(accepts=posts * share // 100, posts=posts),
    st.integers(1, 50),
    st.integers(0, 100),
)
tallies = st.builds(
    lambda posts, share: Tally(posts=posts, accepted=posts * share // 100),
    st.integers(0, 10_000),
    st.integers(0, 100),
)
rates = st.fractions(min_value=0, max_value=1, max_denominator=1000)


@st.composite
def bids(draw: st.DrawFn, min_size: int = 1) -> list[Bid]:
    count = draw(st.integers(min_size, 8))
    return [
        Bid(
            buyer_id=f"b{i}",
            price_cents=draw(st.integers(1, 50_000)),
            company_size=draw(st.integers(0, 3)),
            priority=draw(st.integers(0, 3)),
            latency_us=draw(st.integers(0, 1000)),
            p_accept=draw(rates),
        )
        for i in range(count)
    ]


def _rules(buyer_id: str, weight: int = 1) -> BuyerRules:
    return BuyerRules(buyer_id, 1, 1, None, (), None, None, frozenset(), weight=weight)


def _auction(
    prices: dict[str, int],
    ranking: str,
    acceptance: AcceptanceRates | None,
    tie_breakers: tuple[str, ...] = TIE_BREAKERS,
    last: str | None = None,
    ping_id: str = "ping-1",
    weights: dict[str, int] | None = None,
) -> AuctionInputs:
    eligible = [_rules(b, (weights or {}).get(b, 1)) for b in prices]
    replies = [BuyerReply(b, BidOutcome.BID, 1000, price) for b, price in prices.items()]
    return AuctionInputs(
        ping_id=ping_id, eligible=eligible, excluded=[], replies=replies, floor_cents=0,
        max_bid_cents=DEFAULT_MAX_BID_CENTS, tie_breakers=tie_breakers, max_sales=1,
        payout_share=Decimal("0.85"), ranking=ranking, acceptance=acceptance, last_tie_winner=last,
    )  # fmt: skip


@given(bids())
def test_expected_value_never_ranks_a_lower_bid_times_p_above_a_higher_one(
    offered: list[Bid],
) -> None:
    ranked = rank(offered, TIE_BREAKERS, "ping-1", ranking="expected_value")
    values = [expected_value(b.price_cents, b.p_accept or Fraction(0)) for b in ranked]
    assert values == sorted(values, reverse=True)


@given(bids())
def test_equal_expected_values_go_to_the_higher_bid(offered: list[Bid]) -> None:
    ranked = rank(offered, TIE_BREAKERS, "ping-1", ranking="expected_value")
    for better, worse in itertools.pairwise(ranked):
        assert better.p_accept is not None and worse.p_accept is not None
        if better.price_cents * better.p_accept == worse.price_cents * worse.p_accept:
            assert better.price_cents >= worse.price_cents


@given(bids())
def test_price_ranking_ignores_acceptance(offered: list[Bid]) -> None:
    ranked = rank(offered, TIE_BREAKERS, "ping-1", ranking="price")
    without_p = [
        Bid(b.buyer_id, b.price_cents, b.company_size, b.priority, b.latency_us) for b in offered
    ]
    unranked = rank(without_p, TIE_BREAKERS, "ping-1")
    assert [b.buyer_id for b in ranked] == [b.buyer_id for b in unranked]


@given(
    st.dictionaries(st.sampled_from("abcdef"), st.integers(200, 20_000), min_size=1),
    st.dictionaries(st.sampled_from("abcdef"), tallies),
    priors,
)
def test_price_ranking_is_unchanged_by_any_acceptance_history(
    prices: dict[str, int], history: dict[str, Tally], prior: AcceptancePrior
) -> None:
    known = AcceptanceRates.from_tallies(history, prior)
    with_history = classify(_auction(prices, "price", known))
    without = classify(_auction(prices, "price", None))
    assert [b.buyer_id for b in with_history.tree] == [b.buyer_id for b in without.tree]
    assert with_history.price_cents == without.price_cents == max(prices.values())


@given(priors, st.dictionaries(st.sampled_from("abcdef"), tallies))
def test_a_buyer_with_no_history_is_at_its_prior(
    prior: AcceptancePrior, history: dict[str, Tally]
) -> None:
    known = AcceptanceRates.from_tallies(history, prior)
    assert known.of("newcomer") == Fraction(prior.accepts, prior.posts)
    assert p_accept(Tally(posts=0, accepted=0), prior) == Fraction(prior.accepts, prior.posts)


@given(
    st.dictionaries(st.sampled_from("abcde"), st.integers(200, 20_000), min_size=1),
    st.dictionaries(st.sampled_from("abcde"), tallies),
    priors,
    st.integers(200, 20_000),
)
def test_a_buyer_with_no_history_ranks_where_its_prior_puts_it(
    prices: dict[str, int],
    history: dict[str, Tally],
    prior: AcceptancePrior,
    newcomer_price: int,
) -> None:
    known = AcceptanceRates.from_tallies(history, prior)
    decision = classify(_auction({**prices, "newcomer": newcomer_price}, "expected_value", known))
    row = next(d for d in decision.decisions if d.buyer_id == "newcomer")
    assert row.p_accept == Fraction(prior.accepts, prior.posts)
    newcomer_value = newcomer_price * Fraction(prior.accepts, prior.posts)
    ahead = [b for b in decision.tree[: (row.rank or 0) - 1]]
    behind = [b for b in decision.tree[row.rank or 0 :]]
    assert all(b.price_cents * known.of(b.buyer_id) >= newcomer_value for b in ahead)
    assert all(b.price_cents * known.of(b.buyer_id) <= newcomer_value for b in behind)


@given(tallies, priors)
def test_acceptance_is_a_share_that_accepts_raise_and_rejects_lower(
    tally: Tally, prior: AcceptancePrior
) -> None:
    p = p_accept(tally, prior)
    assert 0 <= p <= 1
    accepted = p_accept(Tally(tally.posts + 1, tally.accepted + 1), prior)
    rejected = p_accept(Tally(tally.posts + 1, tally.accepted), prior)
    assert rejected <= p <= accepted


def test_a_high_bidder_that_rejects_half_its_posts_loses_to_an_honest_lower_bid() -> None:
    known = AcceptanceRates.from_tallies(
        {"inflated": Tally(posts=90, accepted=42), "honest": Tally(posts=90, accepted=88)}, PRIOR
    )  # inflated: (42 + 8) / 100 = 0.5; honest: (88 + 8) / 100 = 0.96
    prices = {"inflated": 3000, "honest": 2200}
    by_price = classify(_auction(prices, "price", known))
    by_value = classify(_auction(prices, "expected_value", known))
    assert [b.buyer_id for b in by_price.tree] == ["inflated", "honest"]
    assert [b.buyer_id for b in by_value.tree] == ["honest", "inflated"]
    # The seller is quoted the payout of the bid at the top of the ranking.
    assert by_value.price_cents == 2200
    assert by_value.payout_cents == 1870
    honest = next(d for d in by_value.decisions if d.buyer_id == "honest")
    assert (honest.rank, honest.p_accept, honest.expected_value_cents) == (
        1, Fraction(96, 100), 2112
    )  # fmt: skip


@given(
    st.sampled_from([PostOutcome.ACCEPTED, PostOutcome.TIMEOUT, PostOutcome.ERROR]),
    st.none() | st.text(max_size=20),
)
def test_only_a_reject_can_break_a_bid(outcome: PostOutcome, reason: str | None) -> None:
    assert not is_breach(outcome, reason, ("duplicate",))


@given(st.none() | st.text(max_size=20))
def test_nothing_is_a_breach_when_bids_are_not_binding(reason: str | None) -> None:
    assert not is_breach(PostOutcome.REJECTED, reason, None)


def test_a_reject_is_a_breach_unless_its_reason_is_allowed() -> None:
    allowed = ("duplicate", "out_of_area")
    assert not is_breach(PostOutcome.REJECTED, "duplicate", allowed)
    assert not is_breach(PostOutcome.REJECTED, "  Out_Of_Area ", allowed)
    assert is_breach(PostOutcome.REJECTED, None, allowed)
    assert is_breach(PostOutcome.REJECTED, "not interested", allowed)
    assert is_breach(PostOutcome.REJECTED, "duplicate lead", allowed)


def test_round_robin_gives_each_of_equal_bids_the_first_place_in_turn() -> None:
    prices = {"a": 1500, "b": 1500, "c": 1500, "d": 900}
    firsts: list[str] = []
    last: str | None = None
    for _ in range(6):
        tree = classify(_auction(prices, "price", None, ("round_robin",), last=last)).tree
        assert tie_at_top(tree, "price")
        last = tree[0].buyer_id
        firsts.append(last)
    assert firsts == ["a", "b", "c", "a", "b", "c"]


def test_weighted_shares_first_places_among_equal_bids_by_weight() -> None:
    prices = {"a": 1500, "b": 1500, "c": 1500}
    weights = {"a": 6, "b": 2, "c": 2}
    firsts = Counter(
        classify(_auction(prices, "price", None, ("weighted",), ping_id=f"p{i}", weights=weights))
        .tree[0]
        .buyer_id
        for i in range(10_000)
    )
    assert abs(firsts["a"] / 10_000 - 0.6) < 0.02
    assert abs(firsts["b"] / 10_000 - 0.2) < 0.02
    assert abs(firsts["c"] / 10_000 - 0.2) < 0.02


def test_tie_breakers_never_reorder_different_prices() -> None:
    prices = {"a": 1400, "b": 1500}
    for breakers in (("round_robin",), ("weighted",)):
        for last in (None, "a", "b"):
            tree = classify(_auction(prices, "price", None, breakers, last=last)).tree
            assert [b.buyer_id for b in tree] == ["b", "a"]
            assert not tie_at_top(tree, "price")


@given(st.integers(-(10**12), 10**12), st.fractions(min_value=-2, max_value=2))
def test_shown_expected_value_is_the_exact_one_truncated(price_cents: int, p: Fraction) -> None:
    assert expected_value_cents(price_cents, p) == int(expected_value(price_cents, p))
