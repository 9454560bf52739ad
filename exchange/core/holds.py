"""Delayed delivery decided from plain facts: whether an unsold lead is held, for which
buyers and until when, which of them may be offered it now, and when to look again.

A lead is **held** when its post went unsold for a reason a buyer could still fix (no
bids, none at the seller's ``min_price``, every buyer declined, the post deadline) and
at least one buyer with ``delayed`` was left out of its auction **only** by its schedule:
it was off schedule when the lead was pinged, and with its schedule set aside it passes
every other screen (seller allow/deny lists, filters, duplicates, caps), exactly as
exchange.core.ranking.screen decides them.

Each such buyer may take the lead until ``hold_hours`` after the lead arrived (its post);
the hold lasts until the last of those windows ends. The buyers are offered the lead in
config order among those open at the same moment; one that was offered it (or dropped)
is not offered it again.

Pure code: the clock is an argument; the I/O is exchange/auction/holds.py (holding) and
delivery.py (delivering).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from exchange.core.caps import CapCounts
from exchange.core.outcomes import UnsoldReason
from exchange.core.ranking import BuyerRules, screen
from exchange.core.targeting import CompiledSchedule

# Why an unsold post may be held: a buyer off schedule could still have bought it. (Not a
# duplicate of a lead sold in the vertical, nor anything a buyer cannot change.)
HOLDABLE = frozenset(
    {UnsoldReason.NO_BIDS, UnsoldReason.BELOW_MIN_PRICE, UnsoldReason.ALL_DECLINED,
     UnsoldReason.DEADLINE}
)  # fmt: skip

# A held lead is looked at again at least this often, even when no buyer's schedule
# opens sooner: a live settings change may have opened one.
RECHECK = timedelta(minutes=5)


class HoldState(StrEnum):
    """Where a hold stands (``held_leads.state``, and the ``outcome`` label of
    exchange_holds_total, where ``held`` counts holds made)."""

    HELD = "held"
    SOLD = "sold"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class HeldBuyer:
    """A buyer a lead is held for, and until when it may take it."""

    buyer_id: str
    until: datetime

    def to_json(self) -> dict[str, Any]:
        return {"buyer": self.buyer_id, "until": self.until.isoformat()}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> HeldBuyer:
        return cls(str(value["buyer"]), datetime.fromisoformat(str(value["until"])))


def held_for(
    rules: Iterable[BuyerRules],
    hold_hours: Mapping[str, int],
    seller_id: str,
    lead: Mapping[str, Any],
    pinged_at: datetime,
    arrived_at: datetime,
    cap_counts: CapCounts | None = None,
    duplicates: Mapping[str, str] | None = None,
    sub_id: str | None = None,
) -> list[HeldBuyer]:
    """The buyers with ``delayed`` (``hold_hours`` by buyer id) that the lead would be held
    for: screened out at ``pinged_at`` for their schedule alone. In ``rules`` order.
    ``lead`` is the lead as buyer filters see it (its ``score`` included when scored)."""
    found: list[HeldBuyer] = []
    for buyer in rules:
        hours = hold_hours.get(buyer.buyer_id)
        if hours is None or buyer.schedule is None:
            continue
        if buyer.schedule.closed_reason(pinged_at) is None:
            continue  # open: it was in the auction (and did not buy)
        unscheduled = replace(buyer, schedule=None)
        eligible, _ = screen(
            [unscheduled], seller_id, lead, pinged_at, cap_counts, duplicates, sub_id
        )
        if eligible:
            found.append(HeldBuyer(buyer.buyer_id, arrived_at + timedelta(hours=hours)))
    return found


def should_hold(reason: UnsoldReason, buyers: Sequence[HeldBuyer]) -> bool:
    return reason in HOLDABLE and bool(buyers)


def hold_until(buyers: Sequence[HeldBuyer]) -> datetime:
    """When the hold ends: the last of its buyers' windows."""
    return max(b.until for b in buyers)


def waiting(buyers: Sequence[HeldBuyer], tried: Collection[str], now: datetime) -> list[str]:
    """The buyers still to be offered the lead, within their windows, in order."""
    return [b.buyer_id for b in buyers if b.buyer_id not in tried and now < b.until]


def open_now(
    buyers: Sequence[HeldBuyer],
    tried: Collection[str],
    rules: Mapping[str, BuyerRules],
    now: datetime,
) -> list[str]:
    """The waiting buyers whose schedule is open at ``now`` (a buyer no longer configured
    is never open; one whose schedule was removed is open)."""
    found = []
    for buyer_id in waiting(buyers, tried, now):
        rule = rules.get(buyer_id)
        if rule is None:
            continue
        if rule.schedule is None or rule.schedule.closed_reason(now) is None:
            found.append(buyer_id)
    return found


def next_opening(schedule: CompiledSchedule, after: datetime, until: datetime) -> datetime | None:
    """The first moment at or after ``after`` and before ``until`` when ``schedule`` is
    open, or None. A window is open from ``start`` local time on an open day (or runs on
    from before ``after``), so those are the only candidates. (A start inside a DST gap
    reads as zoneinfo's fold 0 instant; the schedule itself confirms each candidate.)"""
    if schedule.closed_reason(after) is None:
        return after
    day = after.astimezone(schedule.zone).date() - timedelta(days=1)
    last = until.astimezone(schedule.zone).date() + timedelta(days=1)
    while day <= last:
        starts = datetime.combine(day, schedule.start, tzinfo=schedule.zone)
        if after < starts < until and schedule.closed_reason(starts) is None:
            return starts
        day += timedelta(days=1)
    return None


def next_check(
    buyers: Sequence[HeldBuyer],
    tried: Collection[str],
    rules: Mapping[str, BuyerRules],
    now: datetime,
) -> datetime:
    """When to look at a hold again: the first opening of a waiting buyer's schedule
    within its window, or the end of a window, and at the latest ``now + RECHECK``; with
    no buyer left, ``now`` (the hold is over). A waiting buyer open now was offered the
    lead this pass and could not take it yet (capped): it is looked at again at RECHECK."""
    left = set(waiting(buyers, tried, now))
    if not left:
        return now
    candidates = [now + RECHECK]
    for held in buyers:
        if held.buyer_id not in left:
            continue
        candidates.append(held.until)
        rule = rules.get(held.buyer_id)
        if rule is None or rule.schedule is None:
            continue
        opens = next_opening(rule.schedule, now, held.until)
        if opens is not None and opens > now:
            candidates.append(opens)
    return min(candidates)


def is_over(buyers: Sequence[HeldBuyer], tried: Collection[str], now: datetime) -> bool:
    """No buyer left to offer the lead to within its window: the hold ends unsold."""
    return not waiting(buyers, tried, now)
