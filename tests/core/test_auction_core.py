"""Properties of the pure auction core: the ranking is a total order, money never gains
or loses a cent, floors and minimum prices cut exactly where they say."""

from __future__ import annotations

import hashlib
import itertools
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from exchange.core.money import MoneyError, dollars_json, parse_dollars, payout_cents
from exchange.core.ranking import Bid, ping_tree, rank, split_floor

TIE_BREAKERS = ("company_size", "priority", "latency")

bids = st.lists(
    st.builds(
        Bid,
        buyer_id=st.text("abcdefgh", min_size=1, max_size=6),
        price_cents=st.integers(1, 10_000),
        company_size=st.integers(0, 3),
        priority=st.integers(0, 3),
        latency_us=st.integers(0, 5),
    ),
    max_size=12,
    unique_by=lambda b: b.buyer_id,
)
breaker_chains = st.permutations(TIE_BREAKERS).flatmap(
    lambda chain: st.integers(0, 3).map(lambda n: tuple(chain[:n]))
)


@given(bids, breaker_chains, st.uuids())
def test_ranking_is_a_total_order_independent_of_input_order(
    offered: list[Bid], chain: tuple[str, ...], ping_id: object
) -> None:
    ranked = rank(offered, chain, str(ping_id))
    assert rank(list(reversed(offered)), chain, str(ping_id)) == ranked
    assert sorted(b.buyer_id for b in ranked) == sorted(b.buyer_id for b in offered)
    prices = [b.price_cents for b in ranked]
    assert prices == sorted(prices, reverse=True)


@given(bids, st.uuids())
def test_tie_breakers_apply_in_configured_order(offered: list[Bid], ping_id: object) -> None:
    ranked = rank(offered, TIE_BREAKERS, str(ping_id))
    for better, worse in itertools.pairwise(ranked):
        key_better = (-better.price_cents, -better.company_size, -better.priority,
                      better.latency_us)  # fmt: skip
        key_worse = (-worse.price_cents, -worse.company_size, -worse.priority, worse.latency_us)
        assert key_better <= key_worse


def test_full_tie_is_broken_by_the_ping_hash_not_the_name() -> None:
    a = Bid("aaa", 1000, 1, 1, 1)
    z = Bid("zzz", 1000, 1, 1, 1)
    winners = set()
    for n in range(40):
        ping_id = f"ping-{n}"
        first = rank([a, z], TIE_BREAKERS, ping_id)[0].buyer_id
        expected = min(
            ("aaa", "zzz"), key=lambda b: hashlib.sha256(f"{ping_id}:{b}".encode()).digest()
        )
        assert first == expected
        winners.add(first)
    assert winners == {"aaa", "zzz"}  # neither name always wins


def test_tie_goes_to_larger_company_then_priority_then_faster() -> None:
    slow_big = Bid("slow-big", 1000, 500, 1, 900)
    fast_big = Bid("fast-big", 1000, 500, 1, 100)
    small = Bid("small", 1000, 10, 9, 1)
    urgent = Bid("urgent", 1000, 500, 5, 999)
    ranked = rank([small, slow_big, fast_big, urgent], TIE_BREAKERS, "p")
    assert [b.buyer_id for b in ranked] == ["urgent", "fast-big", "slow-big", "small"]


@given(st.integers(0, 10**9), st.decimals(min_value=Decimal("0.0001"), max_value=1, places=4))
def test_payout_never_exceeds_the_share_and_misses_it_by_under_a_cent(
    price: int, share: Decimal
) -> None:
    payout = payout_cents(price, share)
    exact = Decimal(price) * share
    assert isinstance(payout, int)
    assert payout <= exact < payout + 1


@given(st.integers(0, 10**12))
def test_cents_round_trip_through_json_dollars_exactly(cents: int) -> None:
    assert parse_dollars(dollars_json(cents)) == cents
    assert parse_dollars(str(Decimal(cents).scaleb(-2))) == cents


def test_dollars_with_more_than_two_decimals_or_negative_are_refused() -> None:
    for bad in (1.234, "0.001", -1, "abc", True, None, float("nan"), "Infinity"):
        try:
            parse_dollars(bad)
        except MoneyError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


@given(bids, st.integers(0, 10_000))
def test_floor_splits_bids_exactly_at_the_floor(offered: list[Bid], floor: int) -> None:
    kept, dropped = split_floor(offered, floor)
    assert all(b.price_cents >= floor for b in kept)
    assert all(b.price_cents < floor for b in dropped)
    assert len(kept) + len(dropped) == len(offered)


@given(bids, st.integers(0, 10_000))
def test_ping_tree_keeps_rank_order_and_only_payouts_at_or_above_minimum(
    offered: list[Bid], minimum: int
) -> None:
    ranked = rank(offered, TIE_BREAKERS, "p")
    tree = ping_tree(ranked, Decimal("0.85"), minimum)
    assert tree == [b for b in ranked if payout_cents(b.price_cents, Decimal("0.85")) >= minimum]


def test_absurd_amounts_are_refused_not_crashed_on() -> None:
    for bad in ("1e999999", "-1e999999", 1e300, "1000000000000"):
        try:
            parse_dollars(bad)
        except MoneyError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
    assert parse_dollars("999999999999.99") == 99999999999999
