"""Buyer targeting rules compiled once at config load: field filters and schedules.

Each rule becomes a small closure that answers "why not" (a reason naming the rule) or
None, so the per-ping cost is a handful of dictionary lookups and comparisons.
Pure code: the clock is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from exchange.core.config import FieldFilter, Schedule

Rule = Callable[[Mapping[str, Any]], str | None]
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def compile_filter(name: str, rule: FieldFilter) -> list[Rule]:
    """One closure per operator of one field's filter; all must pass (AND)."""
    checks: list[Rule] = []
    if rule.exists is not None:
        want = rule.exists

        def exists(lead: Mapping[str, Any]) -> str | None:
            if (name in lead) != want:
                return f"{name} {'missing' if want else 'present'} (filter exists: {want})"
            return None

        checks.append(exists)
    if rule.in_ is not None:
        allowed = frozenset(_key(v) for v in rule.in_)

        def in_(lead: Mapping[str, Any]) -> str | None:
            value = lead.get(name)
            if isinstance(value, str):
                value = value.casefold()  # as _key, inline: this runs per buyer per ping
            if value not in allowed:
                return f"{name} not in filter list"
            return None

        checks.append(in_)
    if rule.not_in is not None:
        denied = frozenset(_key(v) for v in rule.not_in)

        def not_in(lead: Mapping[str, Any]) -> str | None:
            if name not in lead:
                return None
            if _key(lead[name]) in denied:
                return f"{name} in filter not_in list"
            return None

        checks.append(not_in)
    for op, bound in (("gte", rule.gte), ("lte", rule.lte)):
        if bound is None:
            continue
        checks.append(_bound(name, op, bound))
    if rule.prefix is not None:
        prefixes = tuple(rule.prefix)

        def prefix(lead: Mapping[str, Any]) -> str | None:
            value = lead.get(name)
            if value is None or not str(value).startswith(prefixes):
                return f"{name} does not start with a filter prefix"
            return None

        checks.append(prefix)
    return checks


def _key(value: Any) -> Any:
    # Lead values are already normalised (states upper case, enums in declared spelling);
    # strings compare case-insensitively so "ca" in a config still matches "CA".
    return value.casefold() if isinstance(value, str) else value


def _bound(name: str, op: str, bound: Decimal) -> Rule:
    def check(lead: Mapping[str, Any]) -> str | None:
        value = lead.get(name)
        # An int compares exactly with the Decimal bound as it is; anything else is read
        # as a Decimal first (a float by its shortest repr, as the lead's JSON wrote it).
        number = value if type(value) is int else _number(value)
        if number is None:
            return f"{name} missing or not a number (filter {op} {bound})"
        if (op == "gte" and number < bound) or (op == "lte" and number > bound):
            return f"{name} fails filter {op} {bound}"
        return None

    return check


@dataclass(frozen=True, slots=True)
class CompiledSchedule:
    zone: ZoneInfo
    days: frozenset[int]
    start: time
    end: time | None  # None: until midnight
    holidays: frozenset[date]

    def closed_reason(self, now: datetime) -> str | None:
        """None when open at ``now`` (an aware datetime), else why it is closed.

        The window belongs to the local day it starts on: an overnight window (end before
        start) opened on Friday evening runs into Saturday morning."""
        local = now.astimezone(self.zone)
        clock = local.time()
        overnight = self.end is not None and self.end < self.start
        if overnight and self.end is not None and clock < self.end:
            opened_on = local.date() - timedelta(days=1)
        elif clock >= self.start and (overnight or self.end is None or clock < self.end):
            opened_on = local.date()
        else:
            return f"outside hours at {clock:%H:%M} ({self.zone.key})"
        if opened_on.weekday() not in self.days:
            return f"closed on {_WEEKDAYS[opened_on.weekday()]} ({self.zone.key})"
        if opened_on in self.holidays:
            return f"closed for the holiday {opened_on.isoformat()} ({self.zone.key})"
        return None


def compile_schedule(schedule: Schedule, default_zone: str) -> CompiledSchedule:
    return CompiledSchedule(
        zone=ZoneInfo(schedule.timezone or default_zone),
        days=frozenset(_WEEKDAYS.index(d) for d in schedule.days),
        start=time.fromisoformat(schedule.start),
        end=None if schedule.end == "24:00" else time.fromisoformat(schedule.end),
        holidays=frozenset(schedule.holidays),
    )
