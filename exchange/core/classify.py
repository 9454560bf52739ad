"""Classifying one ping auction once its buyers have answered: the one place that decides
each buyer's outcome, the ping tree and the price quoted. The fan-out (exchange.auction.pinging)
asks; this module decides, over plain data, so a test can replay any auction.

Every buyer considered gets exactly one decision, in this order (the order of the
ledger's ``bid_outcomes`` rows):

1. **Real-time buyers**, in the order their replies are given. A reply is what the
   buyer's adapter read from its answer, or the transport's ``timeout`` / ``error``.
   A ``bid`` reply is then held to the exchange's rules, first failure wins:

   - a price above the vertical's ``max_bid`` is that buyer's ``error``,
     "bid above max_bid (<dollars>)" (no lead costs more; a 1e17 bid must not become a
     quote);
   - a ``bid_id`` the ledger cannot keep and a post cannot echo exactly
     (exchange.core.storable.id_problem) is its ``error``, "bid_id <problem>";
   - no price (none, or zero) is a ``no_bid``;
   - a price under the floor is ``below_floor``, "bid under the seller's floor";
   - else it is a ``bid`` in the tree, with its rank.

   Any other reply (``no_bid``, ``timeout``, ``error``) keeps its outcome and reason.
2. **Fixed-price buyers in the tree**, in tree order: ``bid``, "fixed price", latency 0.
3. **Fixed-price buyers under the floor**, in config order: ``below_floor``,
   "fixed price under the seller's floor", latency 0. (Their price is at most
   ``max_bid``: the config refuses one above it.)
4. **Screened-out buyers** (exchange.core.ranking.screen), in screening order: the
   exclusion's outcome and reason, with no price, latency or rank.

With ``auction: first_bid`` the first real-time bid at or above the floor to arrive
(lowest latency) heads the tree alone, whatever its price, fixed-price buyers behind it;
every other real-time bid that stood is ``cancelled``, "another buyer bid first" (its price
kept), as is every buyer the fan-out stopped waiting for once that bid came.

Ranks are 1..n over the ping tree (exchange.core.ranking.build_tree) and nobody else. The
tree, the ranks and each buyer's decision do not depend on the order replies came in.
The tree is ordered by the vertical's ranking (``price`` or ``expected_value``: price x
p(accept), exchange/core/acceptance.py); every bid in it carries its buyer's p(accept) and
expected value, whichever ranking decided, so the record shows what the other would do.
The price quoted is the sum of the first ``max_sales`` bids of the tree, the payout the
seller's share of each (exchange.core.ranking.promised_payout); both None with no tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from exchange.core.acceptance import AcceptanceRates, expected_value_cents
from exchange.core.money import dollars_text
from exchange.core.outcomes import BidOutcome
from exchange.core.ranking import (
    Bid,
    BuyerRules,
    Exclusion,
    build_tree,
    fixed_price_bid,
    promised_payout,
    split_floor,
)
from exchange.core.storable import id_problem

UNDER_FLOOR = "bid under the seller's floor"
BID_FIRST = "another buyer bid first"
FIXED_PRICE = "fixed price"
FIXED_UNDER_FLOOR = "fixed price under the seller's floor"


@dataclass(slots=True)
class BuyerReply:
    """A real-time buyer's reply to the ping as it reached the exchange, before the
    exchange's rules: what its adapter read (``bid`` with a price and maybe a bid id,
    ``no_bid``, ``error``), or the transport's ``timeout`` / ``error``. ``reason`` is
    already cleaned for the ledger (exchange.core.storable.clean_text). (Made per buyer
    per auction: a plain slots class, as a frozen one costs three times as much to build;
    never mutated.)"""

    buyer_id: str
    outcome: BidOutcome
    latency_us: int
    price_cents: int | None = None
    bid_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AuctionInputs:
    """What one auction is decided from, once the fan-out is over."""

    ping_id: str  # the ranking's last resort hashes it
    eligible: Sequence[BuyerRules]  # screened in: real-time and fixed-price, config order
    excluded: Sequence[Exclusion]  # screened out, with why
    replies: Sequence[BuyerReply]  # one per eligible real-time buyer
    floor_cents: int  # exchange.core.ranking.effective_floor
    max_bid_cents: int  # the vertical's max_bid
    tie_breakers: Sequence[str]  # exchange.tie_breakers
    max_sales: int  # exchange.core.ranking.max_sales: 1 for an exclusive lead
    payout_share: Decimal  # the seller's
    ranking: str = "price"  # the vertical's: price | expected_value
    acceptance: AcceptanceRates | None = None  # p(accept) of the vertical's buyers
    last_tie_winner: str | None = None  # under round_robin: the last buyer to win a tie
    auction: str = "sealed"  # the vertical's: sealed | first_bid


@dataclass(slots=True)
class BuyerDecision:
    """One buyer's outcome in one auction: a ``bid_outcomes`` row without its ping id and
    time. (Made per buyer per auction: slots, not frozen; never mutated.)"""

    buyer_id: str
    outcome: BidOutcome
    price_cents: int | None
    latency_us: int | None
    rank: int | None
    reason: str | None
    p_accept: Fraction | None = None  # bids in the tree, when p(accept) was known
    expected_value_cents: int | None = None  # price x p_accept, rounded down


@dataclass(frozen=True, slots=True)
class AuctionDecision:
    """The whole decision of one auction."""

    tree: tuple[Bid, ...]  # best first: what a post walks
    decisions: list[BuyerDecision]  # one per buyer considered, in the module's row order
    price_cents: int | None  # what the first max_sales buyers of the tree pay, summed
    payout_cents: int | None  # what the seller is promised for them


def bid_problem(price_cents: int | None, bid_id: str | None, max_bid_cents: int) -> str | None:
    """Why a buyer's bid cannot stand as given (its ``error`` reason), or None."""
    if price_cents is not None and price_cents > max_bid_cents:
        return f"bid above max_bid ({dollars_text(max_bid_cents)})"
    if bid_id is not None:
        problem = id_problem(bid_id)
        if problem is not None:
            return f"bid_id {problem}"
    return None


def classify(auction: AuctionInputs) -> AuctionDecision:
    """Every buyer's decision, the ping tree and the price (rules: the module docstring)."""
    replies = [_held_to_rules(reply, auction.max_bid_cents) for reply in auction.replies]
    rates = auction.acceptance
    bids = [
        fixed_price_bid(b, rates.of(b.buyer_id) if rates is not None else None)
        for b in auction.eligible
        if b.fixed_price_cents is not None
    ]
    bids.extend(_realtime_bids(replies, auction.eligible, rates))
    kept, below = split_floor(bids, auction.floor_cents)
    first: list[Bid] = []
    if auction.auction == "first_bid":
        first, kept, cancelled = _first_bid(kept)
        replies = [_cancelled(r) if r.buyer_id in cancelled else r for r in replies]
    tree = tuple(
        first + build_tree(kept, auction.tie_breakers, auction.ping_id, auction.ranking,
                           auction.last_tie_winner)
    )  # fmt: skip
    wanted = auction.max_sales
    return AuctionDecision(
        tree=tree,
        decisions=_decisions(tree, below, replies, auction.excluded),
        price_cents=sum(b.price_cents for b in tree[:wanted]) if tree else None,
        payout_cents=promised_payout(tree, auction.payout_share, wanted),
    )


def first_bid_stands(
    outcome: BidOutcome,
    price_cents: int | None,
    bid_id: str | None,
    floor_cents: int,
    max_bid_cents: int,
) -> bool:
    """Under ``auction: first_bid``, whether a buyer's reply ends the wait: a priced bid
    at or above the floor that the exchange's rules let stand."""
    return (
        outcome is BidOutcome.BID
        and price_cents is not None
        and price_cents > 0
        and price_cents >= floor_cents
        and bid_problem(price_cents, bid_id, max_bid_cents) is None
    )


def _first_bid(kept: list[Bid]) -> tuple[list[Bid], list[Bid], set[str]]:
    """``auction: first_bid``: of the real-time bids at or above the floor, the first to
    arrive (lowest latency; then buyer id) wins, whatever its price; the others are
    cancelled. Fixed-price buyers stay behind it, ranked as usual. Returns (the winner, the
    fixed-price bids, the cancelled buyers)."""
    realtime = [b for b in kept if not b.fixed_price]
    fixed = [b for b in kept if b.fixed_price]
    if not realtime:
        return [], fixed, set()
    winner = min(realtime, key=lambda b: (b.latency_us, b.buyer_id))
    return [winner], fixed, {b.buyer_id for b in realtime if b is not winner}


def _cancelled(reply: BuyerReply) -> BuyerReply:
    # Replies may be shared: a new one. A cancelled bid keeps its price, for the record.
    return BuyerReply(reply.buyer_id, BidOutcome.CANCELLED, reply.latency_us,
                      reply.price_cents, reply.bid_id, BID_FIRST)  # fmt: skip


def _held_to_rules(reply: BuyerReply, max_bid_cents: int) -> BuyerReply:
    if reply.outcome is not BidOutcome.BID:
        return reply
    problem = bid_problem(reply.price_cents, reply.bid_id, max_bid_cents)
    if problem is None:
        return reply
    # Replies may be shared: a new one, not a changed one. The refused bid keeps no price.
    return BuyerReply(reply.buyer_id, BidOutcome.ERROR, reply.latency_us, reason=problem)


def _realtime_bids(
    replies: list[BuyerReply], eligible: Sequence[BuyerRules], rates: AcceptanceRates | None
) -> list[Bid]:
    """The priced replies as bids, ranked by their buyer's company size, priority, weight
    and p(accept)."""
    rules: dict[str, BuyerRules] | None = None
    bids: list[Bid] = []
    for reply in replies:
        price = reply.price_cents
        if reply.outcome is not BidOutcome.BID or not price:
            continue
        if rules is None:
            rules = {b.buyer_id: b for b in eligible}
        buyer = rules[reply.buyer_id]
        bids.append(
            Bid(
                buyer_id=reply.buyer_id,
                price_cents=price,
                company_size=buyer.company_size,
                priority=buyer.priority,
                latency_us=reply.latency_us,
                bid_id=reply.bid_id,
                weight=buyer.weight,
                p_accept=rates.of(reply.buyer_id) if rates is not None else None,
            )
        )
    return bids


def _decisions(
    tree: tuple[Bid, ...],
    below: list[Bid],
    replies: list[BuyerReply],
    excluded: Sequence[Exclusion],
) -> list[BuyerDecision]:
    rank_of = {b.buyer_id: i + 1 for i, b in enumerate(tree)}
    in_tree = {b.buyer_id: b for b in tree}
    below_ids = {b.buyer_id for b in below}
    decisions: list[BuyerDecision] = []
    for reply in replies:
        outcome, reason = reply.outcome, reply.reason
        if reply.buyer_id in below_ids:
            outcome, reason = BidOutcome.BELOW_FLOOR, UNDER_FLOOR
        elif outcome is BidOutcome.BID and not reply.price_cents:
            outcome = BidOutcome.NO_BID
        bid = in_tree.get(reply.buyer_id)
        p, value = _worth(bid) if bid is not None else (None, None)
        decisions.append(
            BuyerDecision(reply.buyer_id, outcome, reply.price_cents, reply.latency_us,
                          rank_of.get(reply.buyer_id), reason, p, value)
        )  # fmt: skip
    decisions.extend(
        BuyerDecision(b.buyer_id, BidOutcome.BID, b.price_cents, 0, rank_of[b.buyer_id],
                      FIXED_PRICE, *_worth(b))
        for b in tree if b.fixed_price
    )  # fmt: skip
    decisions.extend(
        BuyerDecision(b.buyer_id, BidOutcome.BELOW_FLOOR, b.price_cents, 0, None,
                      FIXED_UNDER_FLOOR)
        for b in below if b.fixed_price
    )  # fmt: skip
    decisions.extend(
        BuyerDecision(e.buyer_id, e.outcome, None, None, None, e.reason) for e in excluded
    )
    return decisions


def _worth(bid: Bid) -> tuple[Fraction | None, int | None]:
    """A bid's p(accept) and expected value in cents, when its p(accept) is known."""
    if bid.p_accept is None:
        return None, None
    return bid.p_accept, expected_value_cents(bid.price_cents, bid.p_accept)
