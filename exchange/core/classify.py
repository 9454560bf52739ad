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

Ranks are 1..n over the ping tree (exchange.core.ranking.build_tree) and nobody else. The
tree, the ranks and each buyer's decision do not depend on the order replies came in.
The price quoted is the sum of the first ``max_sales`` bids of the tree, the payout the
seller's share of each (exchange.core.ranking.promised_payout); both None with no tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

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
    bids = [fixed_price_bid(b) for b in auction.eligible if b.fixed_price_cents is not None]
    bids.extend(_realtime_bids(replies, auction.eligible))
    kept, below = split_floor(bids, auction.floor_cents)
    tree = tuple(build_tree(kept, auction.tie_breakers, auction.ping_id))
    wanted = auction.max_sales
    return AuctionDecision(
        tree=tree,
        decisions=_decisions(tree, below, replies, auction.excluded),
        price_cents=sum(b.price_cents for b in tree[:wanted]) if tree else None,
        payout_cents=promised_payout(tree, auction.payout_share, wanted),
    )


def _held_to_rules(reply: BuyerReply, max_bid_cents: int) -> BuyerReply:
    if reply.outcome is not BidOutcome.BID:
        return reply
    problem = bid_problem(reply.price_cents, reply.bid_id, max_bid_cents)
    if problem is None:
        return reply
    # Replies may be shared: a new one, not a changed one. The refused bid keeps no price.
    return BuyerReply(reply.buyer_id, BidOutcome.ERROR, reply.latency_us, reason=problem)


def _realtime_bids(replies: list[BuyerReply], eligible: Sequence[BuyerRules]) -> list[Bid]:
    """The priced replies as bids, ranked by their buyer's company size and priority."""
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
    below_ids = {b.buyer_id for b in below}
    decisions: list[BuyerDecision] = []
    for reply in replies:
        outcome, reason = reply.outcome, reply.reason
        if reply.buyer_id in below_ids:
            outcome, reason = BidOutcome.BELOW_FLOOR, UNDER_FLOOR
        elif outcome is BidOutcome.BID and not reply.price_cents:
            outcome = BidOutcome.NO_BID
        decisions.append(
            BuyerDecision(reply.buyer_id, outcome, reply.price_cents, reply.latency_us,
                          rank_of.get(reply.buyer_id), reason)
        )  # fmt: skip
    decisions.extend(
        BuyerDecision(b.buyer_id, BidOutcome.BID, b.price_cents, 0, rank_of[b.buyer_id],
                      FIXED_PRICE)
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
