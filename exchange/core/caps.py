"""Buyer caps as pure code: which counting windows a sale falls in, in the buyer's time
zone, and whether known counts already reach a limit.

The exact check happens in the database at post time (exchange.ledger.caps.Caps.reserve_caps: an
atomic conditional increment per window, all in one transaction). The in-memory view
used at ping time is advisory: it keeps capped buyers from being pinged at all, and is
refreshed from the database every second, so several processes see each other's sales.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from exchange.core.config import Caps

HOUR, DAY, WEEK, MONTH = "hour", "day", "week", "month"


@dataclass(frozen=True, slots=True)
class CapLimit:
    period: str
    max_count: int | None
    max_spend_cents: int | None

    def describe(self) -> str:
        parts = []
        if self.max_count is not None:
            parts.append(f"{self.max_count} leads")
        if self.max_spend_cents is not None:
            parts.append(f"${self.max_spend_cents // 100}.{self.max_spend_cents % 100:02d}")
        return f"{self.period}ly cap of {' / '.join(parts)}".replace("dayly", "daily")


@dataclass(frozen=True, slots=True)
class CapWindow:
    """One counting window: a limit and the UTC instant its period began."""

    limit: CapLimit
    start: datetime


def period_start(period: str, now: datetime, zone: ZoneInfo) -> datetime:
    """The start (as a UTC instant) of the local period containing ``now``."""
    local = now.astimezone(zone)
    if period == HOUR:
        begun = local.replace(minute=0, second=0, microsecond=0)
    else:
        day = local.date()
        if period == WEEK:
            day -= timedelta(days=day.weekday())
        elif period == MONTH:
            day = day.replace(day=1)
        begun = datetime.combine(day, time(0), tzinfo=zone)
    return begun.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class CompiledCaps:
    zone: ZoneInfo
    limits: tuple[CapLimit, ...]

    @classmethod
    def from_config(cls, caps: Caps, zone: str) -> CompiledCaps:
        limits = [
            CapLimit(HOUR, caps.hourly, None),
            CapLimit(DAY, caps.daily, caps.daily_budget),
            CapLimit(WEEK, caps.weekly, None),
            CapLimit(MONTH, caps.monthly, caps.monthly_budget),
        ]
        kept = tuple(
            lim for lim in limits if lim.max_count is not None or lim.max_spend_cents is not None
        )
        return cls(ZoneInfo(zone), kept)

    def windows(self, now: datetime) -> list[CapWindow]:
        return [CapWindow(lim, period_start(lim.period, now, self.zone)) for lim in self.limits]


# (buyer_id, period, period start) -> (accepted sales, spend in cents)
CapCounts = Mapping[tuple[str, str, datetime], tuple[int, int]]


def cap_reached(
    buyer_id: str, caps: CompiledCaps, counts: CapCounts, now: datetime, price_cents: int = 0
) -> str | None:
    """Why one more sale (at ``price_cents``) would break a cap, or None."""
    for window in caps.windows(now):
        count, spent = counts.get((buyer_id, window.limit.period, window.start), (0, 0))
        limit = window.limit
        if limit.max_count is not None and count + 1 > limit.max_count:
            return f"{limit.describe()} reached"
        if limit.max_spend_cents is not None and spent + price_cents > limit.max_spend_cents:
            return f"{limit.describe()} reached"
    return None
