"""The pure auction core: which buyers may bid, how bids rank, what the seller is paid.

No I/O, no clock reads: ``now``, the ping id and measured latencies come in as
arguments, so every decision here can be replayed in a test.

Ranking (a total order, documented in docs/auction.md):
  1. with ``ranking: price``, price, highest first; with ``ranking: expected_value``,
     price x p(accept) (exchange/core/acceptance.py), highest first, then price;
  2. the configured tie-breakers in order: ``company_size`` (larger first),
     ``priority`` (higher first), ``latency`` (faster first; fixed-price buyers answer
     in zero time), ``round_robin`` (among equals, the first buyer id after that of
     the last buyer that won a tie, ``last``, wrapping round), ``weighted`` (a draw by
     ``weight``: a buyer goes first among equals in proportion to its weight);
  3. last resort: SHA-256 of ``"<ping_id>:<buyer_id>"``, lowest first. Deterministic for
     a given ping (replayable), yet no buyer is favoured across pings the way an
     alphabetical order would favour one.

The ``weighted`` draw is the exponential-key method (Efraimidis-Spirakis): each bid's key
is -ln(u) / weight with u uniform in (0, 1], the lowest key first; u comes from SHA-256 of
``"weighted:<ping_id>:<buyer_id>"``, so the draw is as replayable as the last resort.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from exchange.core.acceptance import expected_value
from exchange.core.caps import CapCounts, CompiledCaps, cap_reached
from exchange.core.config import (
    BuyerConfig,
    Config,
    ExchangeSettings,
    SellerConfig,
    VerticalConfig,
)
from exchange.core.money import payout_cents
from exchange.core.outcomes import BidOutcome
from exchange.core.targeting import CompiledSchedule, Rule, compile_filter, compile_schedule


@dataclass(frozen=True, slots=True)
class BuyerRules:
    """One buyer's auction-relevant settings, compiled once at config load."""

    buyer_id: str
    company_size: int
    priority: int
    fixed_price_cents: int | None
    filters: tuple[Rule, ...]
    schedule: CompiledSchedule | None
    sellers_allow: frozenset[str] | None
    sellers_deny: frozenset[str]
    caps: CompiledCaps | None = None
    tier: int | None = None
    weight: int = 1
    dedupe_days: int = 0
    sub_ids_deny: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, buyer: BuyerConfig, vertical: str | None = None) -> BuyerRules:
        """The buyer's rules for one vertical (its filters may differ by vertical)."""
        rules: list[Rule] = []
        filters = {**buyer.filters, **buyer.vertical_filters.get(vertical or "", {})}
        for name, rule in filters.items():
            rules.extend(compile_filter(name, rule))
        caps = CompiledCaps.from_config(buyer.caps, buyer.zone)
        return cls(
            buyer_id=buyer.id,
            company_size=buyer.company_size,
            priority=buyer.priority,
            fixed_price_cents=buyer.price,
            filters=tuple(rules),
            schedule=compile_schedule(buyer.schedule, buyer.zone) if buyer.schedule else None,
            sellers_allow=frozenset(buyer.sellers_allow) if buyer.sellers_allow else None,
            sellers_deny=frozenset(buyer.sellers_deny),
            caps=caps if caps.limits else None,
            tier=buyer.tier,
            weight=buyer.weight,
            dedupe_days=buyer.dedupe_days,
            sub_ids_deny=frozenset(buyer.sub_ids_deny),
        )


def buyers_by_vertical(config: Config) -> dict[str, tuple[BuyerRules, ...]]:
    """Enabled buyers of each vertical, in config order, with that vertical's rules."""
    index: dict[str, list[BuyerRules]] = {v: [] for v in config.verticals}
    for buyer in config.buyers:
        if not buyer.enabled:
            continue
        for vertical in buyer.verticals:
            index[vertical].append(BuyerRules.from_config(buyer, vertical))
    return {v: tuple(b) for v, b in index.items()}


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A buyer left out of an auction before any call, and why."""

    buyer_id: str
    outcome: BidOutcome
    reason: str


def screen(
    buyers: Iterable[BuyerRules],
    seller_id: str,
    lead: Mapping[str, Any],
    now: datetime,
    cap_counts: CapCounts | None = None,
    duplicates: Mapping[str, str] | None = None,
    sub_id: str | None = None,
) -> tuple[list[BuyerRules], list[Exclusion]]:
    """Split a vertical's buyers into those that may bid on this ping and those excluded.

    ``cap_counts`` is what is known of the buyers' accepted sales per cap window;
    ``duplicates`` maps a buyer to why it already has this lead; ``sub_id`` is the
    seller's traffic source, if the ping named one. Checks run cheapest
    first; the first that fails names the outcome."""
    eligible: list[BuyerRules] = []
    excluded: list[Exclusion] = []
    for buyer in buyers:
        exclusion = _exclusion(buyer, seller_id, lead, now, cap_counts, duplicates, sub_id)
        if exclusion is None:
            eligible.append(buyer)
        else:
            excluded.append(exclusion)
    return eligible, excluded


def _exclusion(
    buyer: BuyerRules,
    seller_id: str,
    lead: Mapping[str, Any],
    now: datetime,
    cap_counts: CapCounts | None,
    duplicates: Mapping[str, str] | None,
    sub_id: str | None = None,
) -> Exclusion | None:
    if seller_id in buyer.sellers_deny:
        return Exclusion(
            buyer.buyer_id, BidOutcome.SELLER_BLOCKED, "seller on the buyer's deny list"
        )
    if buyer.sellers_allow is not None and seller_id not in buyer.sellers_allow:
        return Exclusion(
            buyer.buyer_id, BidOutcome.SELLER_BLOCKED, "seller not on the buyer's allow list"
        )
    if sub_id is not None and sub_id in buyer.sub_ids_deny:
        return Exclusion(
            buyer.buyer_id, BidOutcome.SELLER_BLOCKED, "sub_id on the buyer's sub_ids_deny list"
        )
    if buyer.schedule is not None:
        reason = buyer.schedule.closed_reason(now)
        if reason is not None:
            return Exclusion(buyer.buyer_id, BidOutcome.OFF_SCHEDULE, reason)
    for rule in buyer.filters:
        reason = rule(lead)
        if reason is not None:
            return Exclusion(buyer.buyer_id, BidOutcome.FILTERED, reason)
    if duplicates and buyer.buyer_id in duplicates:
        return Exclusion(buyer.buyer_id, BidOutcome.DUPLICATE, duplicates[buyer.buyer_id])
    if buyer.caps is not None and cap_counts is not None:
        reason = cap_reached(buyer.buyer_id, buyer.caps, cap_counts, now, price_cents=1)
        if reason is not None:
            return Exclusion(buyer.buyer_id, BidOutcome.CAPPED, reason)
    return None


@dataclass(slots=True)
class Bid:
    """A priced offer for the lead: a real-time bid or a fixed price. (Made per bid per
    auction: a plain slots class, as a frozen one costs three times as much to build;
    nothing mutates a bid once made.)"""

    buyer_id: str
    price_cents: int
    company_size: int
    priority: int
    latency_us: int
    bid_id: str | None = None
    fixed_price: bool = False
    tier: int | None = None
    weight: int = 1
    # The buyer's p(accept) in this vertical when the auction ranked (None: not known,
    # as for a tree read back from the ledger).
    p_accept: Fraction | None = None


def fixed_price_bid(buyer: BuyerRules, p_accept: Fraction | None = None) -> Bid:
    assert buyer.fixed_price_cents is not None
    return Bid(
        buyer_id=buyer.buyer_id,
        price_cents=buyer.fixed_price_cents,
        company_size=buyer.company_size,
        priority=buyer.priority,
        latency_us=0,
        fixed_price=True,
        tier=buyer.tier,
        weight=buyer.weight,
        p_accept=p_accept,
    )


def last_resort(ping_id: str, buyer_id: str) -> bytes:
    return hashlib.sha256(f"{ping_id}:{buyer_id}".encode()).digest()


class _LastResort:
    """The last two sort keys, (last_resort(ping_id, buyer_id), buyer_id), hashed only when
    a comparison reaches them: only full ties pay for SHA-256."""

    __slots__ = ("_buyer_id", "_key", "_ping_id")

    def __init__(self, ping_id: str, buyer_id: str) -> None:
        self._ping_id = ping_id
        self._buyer_id = buyer_id
        self._key: tuple[bytes, str] | None = None

    def key(self) -> tuple[bytes, str]:
        if self._key is None:
            self._key = (last_resort(self._ping_id, self._buyer_id), self._buyer_id)
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _LastResort) and self.key() == other.key()

    def __lt__(self, other: _LastResort) -> bool:
        return self.key() < other.key()

    __hash__ = None  # type: ignore[assignment]


def weighted_key(ping_id: str, buyer_id: str, weight: int) -> float:
    """The ``weighted`` tie-breaker's key: lowest first, so P(first) is weight / total."""
    digest = hashlib.sha256(f"weighted:{ping_id}:{buyer_id}".encode()).digest()
    u = (int.from_bytes(digest[:8], "big") + 1) / 2**64  # in (0, 1]
    return -math.log(u) / weight


def rank_value(bid: Bid, ranking: str) -> Fraction | int:
    """What a bid is ranked by: its price, or its price x p(accept) (p = 1 for a bid that
    carries none: a tree read back from the ledger is already in order)."""
    if ranking == "expected_value":
        p = bid.p_accept if bid.p_accept is not None else Fraction(1)
        return expected_value(bid.price_cents, p)
    return bid.price_cents


def rank(
    bids: Iterable[Bid],
    tie_breakers: Sequence[str],
    ping_id: str,
    ranking: str = "price",
    last: str | None = None,
) -> list[Bid]:
    """Bids best first; a total order (see the module docstring). ``last`` is the buyer
    that last won a tie under ``round_robin``: among equal bids, the buyer ids after it
    come first, in order, then the others."""

    def key(bid: Bid) -> tuple[Any, ...]:
        parts: list[Any] = []
        if ranking == "expected_value":
            parts.append(-rank_value(bid, ranking))
        parts.append(-bid.price_cents)
        for breaker in tie_breakers:
            if breaker == "company_size":
                parts.append(-bid.company_size)
            elif breaker == "priority":
                parts.append(-bid.priority)
            elif breaker == "latency":
                parts.append(bid.latency_us)
            elif breaker == "round_robin":
                parts.append((last is not None and bid.buyer_id <= last, bid.buyer_id))
            elif breaker == "weighted":
                parts.append(weighted_key(ping_id, bid.buyer_id, bid.weight))
        parts.append(_LastResort(ping_id, bid.buyer_id))
        return tuple(parts)

    return sorted(bids, key=key)


def split_floor(bids: Iterable[Bid], floor_cents: int) -> tuple[list[Bid], list[Bid]]:
    """(bids at or above the floor, bids under it)."""
    kept: list[Bid] = []
    dropped: list[Bid] = []
    for bid in bids:
        (kept if bid.price_cents >= floor_cents else dropped).append(bid)
    return kept, dropped


def build_tree(
    bids: Iterable[Bid],
    tie_breakers: Sequence[str],
    ping_id: str,
    ranking: str = "price",
    last: str | None = None,
) -> list[Bid]:
    """The ping tree: ranked bids (real-time and untiered fixed-price) first, then the
    fixed-price tiers in ascending order. Inside a tier the order here is by rank; the
    tier's distribution rearranges it at post time (``arrange_tiers``)."""
    ranked = rank(bids, tie_breakers, ping_id, ranking, last)
    head = [b for b in ranked if b.tier is None]
    tiers = sorted({b.tier for b in ranked if b.tier is not None})
    return head + [b for t in tiers for b in ranked if b.tier == t]


def arrange_tiers(
    tree: Sequence[Bid],
    distributions: Mapping[int, str],
    last_winners: Mapping[int, str],
    rng: random.Random,
) -> list[Bid]:
    """The post-time order of each fixed-price tier of a ping tree.

    ``priority`` keeps the rank order; ``round_robin`` starts with the buyer after the
    tier's last winner (in rank order, wrapping); ``weighted`` draws the order at random
    by weight, so over many leads each buyer is first in proportion to its weight."""
    out: list[Bid] = [b for b in tree if b.tier is None]
    for tier in sorted({b.tier for b in tree if b.tier is not None}):
        members = [b for b in tree if b.tier == tier]
        distribution = distributions.get(tier, "priority")
        if distribution == "round_robin":
            members = sorted(members, key=lambda b: b.buyer_id)
            last = last_winners.get(tier)
            ids = [b.buyer_id for b in members]
            if last is not None:
                after = next((i for i, b in enumerate(ids) if b > last), 0)
                members = members[after:] + members[:after]
        elif distribution == "weighted":
            members = _weighted_order(members, rng)
        out.extend(members)
    return out


def _weighted_order(members: list[Bid], rng: random.Random) -> list[Bid]:
    pool = list(members)
    order: list[Bid] = []
    while pool:
        total = sum(b.weight for b in pool)
        pick = rng.randrange(total)
        for i, bid in enumerate(pool):
            pick -= bid.weight
            if pick < 0:
                order.append(pool.pop(i))
                break
    return order


def tie_at_top(tree: Sequence[Bid], ranking: str) -> bool:
    """Whether the first two bids of a tree were equal by the ranking (the tie-breakers
    chose between them): the round-robin rotation moves on only then."""
    if len(tree) < 2 or tree[0].tier is not None or tree[1].tier is not None:
        return False
    return rank_value(tree[0], ranking) == rank_value(tree[1], ranking)


def ranking_of(settings: ExchangeSettings, vertical: VerticalConfig) -> str:
    """The vertical's ranking (``price`` or ``expected_value``), else the exchange's."""
    return vertical.ranking if vertical.ranking is not None else settings.ranking


def seller_payout(seller: SellerConfig, price_cents: int) -> int:
    return payout_cents(price_cents, seller.payout_share)


def ping_tree(ranked: Sequence[Bid], share: Decimal, min_payout_cents: int) -> list[Bid]:
    """The bids a post will try, in order: those whose payout meets the seller's minimum."""
    return [b for b in ranked if payout_cents(b.price_cents, share) >= min_payout_cents]


def promised_payout(tree: Sequence[Bid], share: Decimal, max_sales: int) -> int | None:
    """What a ping answer promises: the payout of the first ``max_sales`` buyers of the
    tree (one for an exclusive lead), or None with an empty tree."""
    if not tree:
        return None
    return sum(payout_cents(b.price_cents, share) for b in tree[:max_sales])


def effective_floor(seller: SellerConfig, vertical: VerticalConfig, vertical_name: str) -> int:
    """The highest of the vertical's floor and the seller's (per-vertical, else general)."""
    return max(vertical.floor, seller.vertical_floors.get(vertical_name, seller.floor))


def max_sales(seller: SellerConfig, vertical: VerticalConfig) -> int:
    return seller.max_sales if seller.max_sales is not None else vertical.max_sales
