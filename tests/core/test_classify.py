"""Properties of classifying an auction (exchange.core.classify): every buyer considered
gets one decision, the ping tree holds exactly the bids that stand, in the ranking's
order, and nothing depends on the order the buyers answered in. Then today's reasons,
word for word."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from exchange.core.classify import (
    FIXED_PRICE,
    FIXED_UNDER_FLOOR,
    UNDER_FLOOR,
    AuctionDecision,
    AuctionInputs,
    BuyerDecision,
    BuyerReply,
    classify,
)
from exchange.core.config import DEFAULT_MAX_BID_CENTS
from exchange.core.outcomes import BidOutcome
from exchange.core.ranking import Bid, BuyerRules, Exclusion, rank
from exchange.core.storable import MAX_ID_CHARS

TIE_BREAKERS = ("company_size", "priority", "latency")
SCREENED = (
    BidOutcome.SELLER_BLOCKED,
    BidOutcome.OFF_SCHEDULE,
    BidOutcome.FILTERED,
    BidOutcome.DUPLICATE,
    BidOutcome.CAPPED,
)
MAX_BID = 5_000


def _rules(
    buyer_id: str,
    fixed_price_cents: int | None = None,
    *,
    company_size: int = 1,
    priority: int = 1,
    tier: int | None = None,
) -> BuyerRules:
    return BuyerRules(
        buyer_id, company_size, priority, fixed_price_cents, (), None, None, frozenset(), tier=tier
    )


def _inputs(
    eligible: list[BuyerRules],
    replies: list[BuyerReply],
    *,
    excluded: list[Exclusion] | None = None,
    floor_cents: int = 0,
    max_bid_cents: int = DEFAULT_MAX_BID_CENTS,
    max_sales: int = 1,
    ping_id: str = "9a1f3c1e-2b7d-4d6e-8f00-0123456789ab",
) -> AuctionInputs:
    return AuctionInputs(
        ping_id=ping_id,
        eligible=eligible,
        excluded=excluded or [],
        replies=replies,
        floor_cents=floor_cents,
        max_bid_cents=max_bid_cents,
        tie_breakers=TIE_BREAKERS,
        max_sales=max_sales,
        payout_share=Decimal("0.7"),
    )


def _one(decision: AuctionDecision, buyer_id: str) -> BuyerDecision:
    (found,) = [d for d in decision.decisions if d.buyer_id == buyer_id]
    return found


# --- random auctions -------------------------------------------------------------------

bid_ids = st.one_of(st.none(), st.sampled_from(["b-1", "a\x00b", "x" * (MAX_ID_CHARS + 1)]))
reply_parts = st.one_of(
    st.tuples(
        st.just(BidOutcome.BID),
        st.one_of(st.none(), st.integers(0, MAX_BID + 500)),
        bid_ids,
        st.one_of(st.none(), st.just("bid")),
    ),
    st.tuples(
        st.sampled_from([BidOutcome.NO_BID, BidOutcome.TIMEOUT, BidOutcome.ERROR]),
        st.none(),
        st.none(),
        st.one_of(st.none(), st.just("buyer's own words")),
    ),
)


@st.composite
def auctions(draw: st.DrawFn) -> AuctionInputs:
    eligible: list[BuyerRules] = []
    replies: list[BuyerReply] = []
    for n in range(draw(st.integers(0, 8))):
        fixed = draw(st.one_of(st.none(), st.integers(1, MAX_BID)))
        tier = draw(st.one_of(st.none(), st.integers(1, 3))) if fixed is not None else None
        buyer = _rules(
            f"buyer-{n}",
            fixed,
            company_size=draw(st.integers(0, 2)),
            priority=draw(st.integers(0, 2)),
            tier=tier,
        )
        eligible.append(buyer)
        if fixed is None:
            outcome, price, bid_id, reason = draw(reply_parts)
            latency_us = draw(st.integers(0, 3))
            replies.append(BuyerReply(buyer.buyer_id, outcome, latency_us, price, bid_id, reason))
    excluded = [
        Exclusion(f"screened-{n}", draw(st.sampled_from(SCREENED)), "why")
        for n in range(draw(st.integers(0, 3)))
    ]
    return AuctionInputs(
        ping_id=str(draw(st.uuids())),
        eligible=draw(st.permutations(eligible)),
        excluded=excluded,
        replies=draw(st.permutations(replies)),
        floor_cents=draw(st.integers(0, MAX_BID)),
        max_bid_cents=MAX_BID,
        tie_breakers=draw(st.permutations(TIE_BREAKERS)),
        max_sales=draw(st.integers(1, 3)),
        payout_share=Decimal("0.7"),
    )


def _stands(auction: AuctionInputs, reply: BuyerReply) -> bool:
    """What a real-time reply must be to make the tree (the rules, said once more)."""
    return (
        reply.outcome is BidOutcome.BID
        and reply.price_cents is not None
        and reply.price_cents > 0
        and auction.floor_cents <= reply.price_cents <= auction.max_bid_cents
        and reply.bid_id in (None, "b-1")
    )


@given(auctions())
def test_every_buyer_considered_gets_exactly_one_decision(auction: AuctionInputs) -> None:
    decided = [d.buyer_id for d in classify(auction).decisions]
    considered = [b.buyer_id for b in auction.eligible] + [e.buyer_id for e in auction.excluded]
    assert sorted(decided) == sorted(considered)


@given(auctions())
def test_the_tree_holds_exactly_the_bids_between_floor_and_max_bid(auction: AuctionInputs) -> None:
    tree = classify(auction).tree
    expected = {r.buyer_id for r in auction.replies if _stands(auction, r)} | {
        b.buyer_id
        for b in auction.eligible
        if b.fixed_price_cents is not None and b.fixed_price_cents >= auction.floor_cents
    }
    assert sorted(b.buyer_id for b in tree) == sorted(expected)
    assert all(auction.floor_cents <= b.price_cents <= auction.max_bid_cents for b in tree)


@given(auctions())
def test_the_tree_is_in_the_ranking_order_then_tiers_ascending(auction: AuctionInputs) -> None:
    tree = list(classify(auction).tree)
    head = [b for b in tree if b.tier is None]
    assert tree[: len(head)] == head
    assert head == rank(head, auction.tie_breakers, auction.ping_id)
    tiers = [b.tier or 0 for b in tree[len(head) :]]
    assert tiers == sorted(tiers)
    for _, members in itertools.groupby(tree[len(head) :], key=lambda b: b.tier):
        in_tier = list(members)
        assert in_tier == rank(in_tier, auction.tie_breakers, auction.ping_id)


@given(auctions())
def test_ranks_run_one_to_n_over_the_tree_and_nobody_else(auction: AuctionInputs) -> None:
    decision = classify(auction)
    ranked = sorted(
        (d for d in decision.decisions if d.rank is not None), key=lambda d: d.rank or 0
    )
    assert [d.rank for d in ranked] == list(range(1, len(decision.tree) + 1))
    assert [d.buyer_id for d in ranked] == [b.buyer_id for b in decision.tree]
    assert all(d.outcome is BidOutcome.BID for d in ranked)
    assert all(d.rank is not None for d in decision.decisions if d.outcome is BidOutcome.BID)


@given(auctions())
def test_below_floor_names_the_floor_and_keeps_the_price(auction: AuctionInputs) -> None:
    fixed = {b.buyer_id for b in auction.eligible if b.fixed_price_cents is not None}
    for d in classify(auction).decisions:
        if d.outcome is BidOutcome.BELOW_FLOOR:
            assert d.reason == (FIXED_UNDER_FLOOR if d.buyer_id in fixed else UNDER_FLOOR)
            assert d.price_cents is not None and d.price_cents < auction.floor_cents
            assert d.rank is None


@given(auctions())
def test_a_bid_above_max_bid_is_its_buyers_error_without_a_price(auction: AuctionInputs) -> None:
    decision = classify(auction)
    for reply in auction.replies:
        if reply.outcome is BidOutcome.BID and (reply.price_cents or 0) > auction.max_bid_cents:
            d = _one(decision, reply.buyer_id)
            assert (d.outcome, d.price_cents, d.rank) == (BidOutcome.ERROR, None, None)
            assert d.reason == "bid above max_bid (50.00)"


@given(auctions(), st.randoms(use_true_random=False))
def test_the_decision_does_not_depend_on_the_order_of_replies(
    auction: AuctionInputs, rng: random.Random
) -> None:
    replies, eligible = list(auction.replies), list(auction.eligible)
    rng.shuffle(replies)
    rng.shuffle(eligible)
    shuffled = AuctionInputs(
        auction.ping_id,
        eligible,
        auction.excluded,
        replies,
        auction.floor_cents,
        auction.max_bid_cents,
        auction.tie_breakers,
        auction.max_sales,
        auction.payout_share,
    )
    first, second = classify(auction), classify(shuffled)
    assert first.tree == second.tree
    assert (first.price_cents, first.payout_cents) == (second.price_cents, second.payout_cents)

    def by_buyer(decision: AuctionDecision) -> dict[str, BuyerDecision]:
        return {d.buyer_id: d for d in decision.decisions}

    assert by_buyer(first) == by_buyer(second)


@given(auctions())
def test_the_price_is_the_top_max_sales_bids_and_the_payout_never_more(
    auction: AuctionInputs,
) -> None:
    decision = classify(auction)
    if not decision.tree:
        assert (decision.price_cents, decision.payout_cents) == (None, None)
        return
    top = decision.tree[: auction.max_sales]
    assert decision.price_cents == sum(b.price_cents for b in top)
    assert decision.payout_cents is not None
    assert 0 <= decision.payout_cents <= decision.price_cents


# --- today's reasons, word for word ---------------------------------------------------------


def test_a_bid_under_the_floor_is_below_floor_with_its_price_and_latency() -> None:
    decision = classify(
        _inputs(
            [_rules("low")],
            [BuyerReply("low", BidOutcome.BID, 1800, 900, "b-9", None)],
            floor_cents=1000,
        )
    )
    assert decision.tree == ()
    assert _one(decision, "low") == BuyerDecision(
        "low", BidOutcome.BELOW_FLOOR, 900, 1800, None, "bid under the seller's floor"
    )


def test_a_bid_at_the_floor_and_at_max_bid_stands() -> None:
    eligible = [_rules("at-floor"), _rules("at-max")]
    replies = [
        BuyerReply("at-floor", BidOutcome.BID, 10, 1000),
        BuyerReply("at-max", BidOutcome.BID, 10, 5000),
    ]
    decision = classify(_inputs(eligible, replies, floor_cents=1000, max_bid_cents=5000))
    assert [b.buyer_id for b in decision.tree] == ["at-max", "at-floor"]
    assert [(d.outcome, d.rank) for d in decision.decisions] == [
        (BidOutcome.BID, 2),
        (BidOutcome.BID, 1),
    ]


def test_a_fixed_price_buyer_bids_its_price_in_no_time() -> None:
    decision = classify(_inputs([_rules("flat", 2500)], [], floor_cents=1000))
    assert decision.tree[0] == Bid("flat", 2500, 1, 1, 0, fixed_price=True)
    assert decision.decisions == [BuyerDecision("flat", BidOutcome.BID, 2500, 0, 1, "fixed price")]
    assert FIXED_PRICE == "fixed price"


def test_a_fixed_price_under_the_floor_is_below_floor() -> None:
    decision = classify(_inputs([_rules("flat", 500)], [], floor_cents=1000))
    assert decision.tree == ()
    assert decision.decisions == [
        BuyerDecision(
            "flat", BidOutcome.BELOW_FLOOR, 500, 0, None, "fixed price under the seller's floor"
        )
    ]


def test_a_bid_above_the_default_max_bid_is_an_error_naming_it() -> None:
    reply = BuyerReply("greedy", BidOutcome.BID, 40, DEFAULT_MAX_BID_CENTS + 1, "b-1", None)
    decision = classify(_inputs([_rules("greedy")], [reply]))
    assert decision.tree == ()
    assert decision.decisions == [
        BuyerDecision("greedy", BidOutcome.ERROR, None, 40, None, "bid above max_bid (10000.00)")
    ]


def test_a_bid_id_with_nul_is_an_error_naming_the_character() -> None:
    reply = BuyerReply("odd", BidOutcome.BID, 40, 1500, "abc\x00def")
    decision = classify(_inputs([_rules("odd")], [reply]))
    assert decision.tree == ()
    assert _one(decision, "odd") == BuyerDecision(
        "odd",
        BidOutcome.ERROR,
        None,
        40,
        None,
        "bid_id must not contain the NUL character (\\u0000)",
    )


def test_a_bid_id_too_long_to_echo_is_an_error_even_without_a_price() -> None:
    reply = BuyerReply("long", BidOutcome.BID, 40, None, "x" * (MAX_ID_CHARS + 1))
    decision = classify(_inputs([_rules("long")], [reply]))
    assert _one(decision, "long").outcome is BidOutcome.ERROR
    assert _one(decision, "long").reason == "bid_id must be at most 128 characters"


def test_a_bid_without_a_price_is_no_bid_keeping_what_was_said() -> None:
    replies = [
        BuyerReply("zero", BidOutcome.BID, 30, 0, None, "nothing today"),
        BuyerReply("none", BidOutcome.BID, 31, None),
    ]
    decision = classify(_inputs([_rules("zero"), _rules("none")], replies))
    assert decision.decisions == [
        BuyerDecision("zero", BidOutcome.NO_BID, 0, 30, None, "nothing today"),
        BuyerDecision("none", BidOutcome.NO_BID, None, 31, None, None),
    ]


def test_timeouts_and_errors_keep_their_reason_and_latency() -> None:
    replies = [
        BuyerReply("slow", BidOutcome.TIMEOUT, 250_000, reason="no answer within 250 ms"),
        BuyerReply("broken", BidOutcome.ERROR, 12, reason="HTTP 500"),
    ]
    decision = classify(_inputs([_rules("slow"), _rules("broken")], replies))
    assert decision.decisions == [
        BuyerDecision("slow", BidOutcome.TIMEOUT, None, 250_000, None, "no answer within 250 ms"),
        BuyerDecision("broken", BidOutcome.ERROR, None, 12, None, "HTTP 500"),
    ]


def test_screened_out_buyers_keep_their_outcome_and_reason_only() -> None:
    excluded = [Exclusion("closed", BidOutcome.OFF_SCHEDULE, "outside the buyer's hours")]
    decision = classify(_inputs([], [], excluded=excluded))
    assert decision.decisions == [
        BuyerDecision(
            "closed", BidOutcome.OFF_SCHEDULE, None, None, None, "outside the buyer's hours"
        )
    ]


def test_decisions_come_in_ledger_row_order() -> None:
    eligible = [_rules("flat-low", 300), _rules("rt"), _rules("flat", 2000)]
    replies = [BuyerReply("rt", BidOutcome.BID, 5, 1500)]
    excluded = [Exclusion("capped", BidOutcome.CAPPED, "daily cap reached")]
    decision = classify(_inputs(eligible, replies, excluded=excluded, floor_cents=1000))
    assert [(d.buyer_id, d.outcome, d.rank) for d in decision.decisions] == [
        ("rt", BidOutcome.BID, 2),
        ("flat", BidOutcome.BID, 1),
        ("flat-low", BidOutcome.BELOW_FLOOR, None),
        ("capped", BidOutcome.CAPPED, None),
    ]


def test_a_shared_lead_is_quoted_the_sum_of_its_top_bids() -> None:
    eligible = [_rules("a"), _rules("b"), _rules("c")]
    replies = [
        BuyerReply("a", BidOutcome.BID, 1, 1000),
        BuyerReply("b", BidOutcome.BID, 1, 2000),
        BuyerReply("c", BidOutcome.BID, 1, 1501),
    ]
    decision = classify(_inputs(eligible, replies, max_sales=2))
    assert decision.price_cents == 3501
    assert decision.payout_cents == 1400 + 1050  # each share rounded down on its own
