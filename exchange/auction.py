"""The pure auction core: which buyers may bid, how bids rank, what the seller is paid.

No I/O, no clock reads: ``now``, the ping id and measured latencies come in as
arguments, so every decision here can be replayed in a test.

Ranking (a total order, documented in docs/auction.md):
  1. price, highest first;
  2. the configured tie-breakers in order: ``company_size`` (larger first),
     ``priority`` (higher first), ``latency`` (faster first; fixed-price buyers answer
     in zero time);
  3. last resort: SHA-256 of ``"<ping_id>:<buyer_id>"``, lowest first. Deterministic for
     a given ping (replayable), yet no buyer is favoured across pings the way an
     alphabetical order would favour one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from exchange.config import BuyerConfig, Config, SellerConfig
from exchange.money import payout_cents
from exchange.outcomes import BidOutcome
from exchange.targeting import CompiledSchedule, Rule, compile_filter, compile_schedule


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

    @classmethod
    def from_config(cls, buyer: BuyerConfig) -> BuyerRules:
        rules: list[Rule] = []
        for name, rule in buyer.filters.items():
            rules.extend(compile_filter(name, rule))
        return cls(
            buyer_id=buyer.id,
            company_size=buyer.company_size,
            priority=buyer.priority,
            fixed_price_cents=buyer.price,
            filters=tuple(rules),
            schedule=compile_schedule(buyer.schedule) if buyer.schedule else None,
            sellers_allow=frozenset(buyer.sellers_allow) if buyer.sellers_allow else None,
            sellers_deny=frozenset(buyer.sellers_deny),
        )


def buyers_by_vertical(config: Config) -> dict[str, tuple[BuyerRules, ...]]:
    """Enabled buyers of each vertical, in config order."""
    index: dict[str, list[BuyerRules]] = {v: [] for v in config.verticals}
    for buyer in config.buyers:
        if not buyer.enabled:
            continue
        rules = BuyerRules.from_config(buyer)
        for vertical in buyer.verticals:
            index[vertical].append(rules)
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
) -> tuple[list[BuyerRules], list[Exclusion]]:
    """Split a vertical's buyers into those that may bid on this ping and those excluded."""
    eligible: list[BuyerRules] = []
    excluded: list[Exclusion] = []
    for buyer in buyers:
        reason = _seller_block(buyer, seller_id)
        if reason is not None:
            excluded.append(Exclusion(buyer.buyer_id, BidOutcome.SELLER_BLOCKED, reason))
            continue
        if buyer.schedule is not None:
            reason = buyer.schedule.closed_reason(now)
            if reason is not None:
                excluded.append(Exclusion(buyer.buyer_id, BidOutcome.OFF_SCHEDULE, reason))
                continue
        for rule in buyer.filters:
            reason = rule(lead)
            if reason is not None:
                excluded.append(Exclusion(buyer.buyer_id, BidOutcome.FILTERED, reason))
                break
        else:
            eligible.append(buyer)
    return eligible, excluded


def _seller_block(buyer: BuyerRules, seller_id: str) -> str | None:
    if seller_id in buyer.sellers_deny:
        return "seller on the buyer's deny list"
    if buyer.sellers_allow is not None and seller_id not in buyer.sellers_allow:
        return "seller not on the buyer's allow list"
    return None


@dataclass(frozen=True, slots=True)
class Bid:
    """A priced offer for the lead: a real-time bid or a fixed price."""

    buyer_id: str
    price_cents: int
    company_size: int
    priority: int
    latency_us: int
    bid_id: str | None = None
    fixed_price: bool = False


def fixed_price_bid(buyer: BuyerRules) -> Bid:
    assert buyer.fixed_price_cents is not None
    return Bid(
        buyer_id=buyer.buyer_id,
        price_cents=buyer.fixed_price_cents,
        company_size=buyer.company_size,
        priority=buyer.priority,
        latency_us=0,
        fixed_price=True,
    )


def last_resort(ping_id: str, buyer_id: str) -> bytes:
    return hashlib.sha256(f"{ping_id}:{buyer_id}".encode()).digest()


def rank(bids: Iterable[Bid], tie_breakers: Sequence[str], ping_id: str) -> list[Bid]:
    """Bids best first; a total order (see the module docstring)."""

    def key(bid: Bid) -> tuple[Any, ...]:
        parts: list[Any] = [-bid.price_cents]
        for breaker in tie_breakers:
            if breaker == "company_size":
                parts.append(-bid.company_size)
            elif breaker == "priority":
                parts.append(-bid.priority)
            elif breaker == "latency":
                parts.append(bid.latency_us)
        parts.append(last_resort(ping_id, bid.buyer_id))
        parts.append(bid.buyer_id)
        return tuple(parts)

    return sorted(bids, key=key)


def split_floor(bids: Iterable[Bid], floor_cents: int) -> tuple[list[Bid], list[Bid]]:
    """(bids at or above the floor, bids under it)."""
    kept: list[Bid] = []
    dropped: list[Bid] = []
    for bid in bids:
        (kept if bid.price_cents >= floor_cents else dropped).append(bid)
    return kept, dropped


def seller_payout(seller: SellerConfig, price_cents: int) -> int:
    return payout_cents(price_cents, seller.payout_share)


def ping_tree(ranked: Sequence[Bid], share: Decimal, min_payout_cents: int) -> list[Bid]:
    """The bids a post will try, in order: those whose payout meets the seller's minimum."""
    return [b for b in ranked if payout_cents(b.price_cents, share) >= min_payout_cents]
