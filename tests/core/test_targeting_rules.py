"""Filters and schedules, compiled once and evaluated with a fixed clock."""

from __future__ import annotations

from datetime import UTC, date, datetime

from exchange.core.config import FieldFilter, Schedule
from exchange.core.targeting import compile_filter, compile_schedule


def passes(field: str, rule: dict[str, object], lead: dict[str, object]) -> bool:
    checks = compile_filter(field, FieldFilter.model_validate(rule))
    return all(check(lead) is None for check in checks)


def test_filter_in_matches_listed_values_case_insensitively() -> None:
    assert passes("state", {"in": ["CA", "tx"]}, {"state": "TX"})
    assert not passes("state", {"in": ["CA"]}, {"state": "NY"})
    assert not passes("state", {"in": ["CA"]}, {})


def test_filter_not_in_refuses_listed_values_and_allows_absent_field() -> None:
    assert not passes("credit_rating", {"not_in": ["poor"]}, {"credit_rating": "poor"})
    assert passes("credit_rating", {"not_in": ["poor"]}, {"credit_rating": "good"})
    assert passes("credit_rating", {"not_in": ["poor"]}, {})


def test_filter_gte_and_lte_bound_numbers_inclusively() -> None:
    rule = {"gte": 25, "lte": 65}
    assert passes("age", rule, {"age": 25})
    assert passes("age", rule, {"age": 65})
    assert not passes("age", rule, {"age": 24})
    assert not passes("age", rule, {"age": 66})
    assert not passes("age", rule, {})


def test_filter_prefix_matches_zip_prefixes() -> None:
    assert passes("zip", {"prefix": ["900", "941"]}, {"zip": "94110"})
    assert not passes("zip", {"prefix": ["900"]}, {"zip": "10001"})


def test_filter_exists_requires_presence_or_absence() -> None:
    assert passes("age", {"exists": True}, {"age": 30})
    assert not passes("age", {"exists": True}, {})
    assert passes("age", {"exists": False}, {})
    assert not passes("age", {"exists": False}, {"age": 30})


def test_filter_rules_combine_with_and() -> None:
    rule = {"in": ["CA", "TX"], "not_in": ["TX"]}
    assert passes("state", rule, {"state": "CA"})
    assert not passes("state", rule, {"state": "TX"})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_schedule_days_turn_at_the_buyers_local_midnight_not_utcs() -> None:
    weekdays = compile_schedule(
        Schedule(days=("mon", "tue", "wed", "thu", "fri")), "America/Los_Angeles"
    )
    friday_late = at("2026-11-27T23:59:59-08:00")
    assert friday_late.weekday() == 5  # already Saturday in UTC...
    assert weekdays.closed_reason(friday_late) is None  # ...still Friday for the buyer
    assert "sat" in (weekdays.closed_reason(at("2026-11-28T00:00:00-08:00")) or "")
    assert weekdays.closed_reason(at("2026-11-30T00:00:00-08:00")) is None  # Monday


def test_schedule_hours_are_local_with_inclusive_start_and_exclusive_end() -> None:
    hours = compile_schedule(Schedule(start="08:00", end="20:00"), "America/New_York")
    assert hours.closed_reason(at("2026-11-23T07:59:59-05:00")) is not None
    assert hours.closed_reason(at("2026-11-23T08:00:00-05:00")) is None
    assert hours.closed_reason(at("2026-11-23T19:59:59-05:00")) is None
    assert hours.closed_reason(at("2026-11-23T20:00:00-05:00")) is not None


def test_schedule_follows_the_buyers_clock_across_a_dst_change() -> None:
    # US clocks went back at 02:00 on 2026-11-01: 09:00 local is 14:00 UTC after, 13:00 before.
    schedule = compile_schedule(Schedule(start="09:00", end="17:00"), "America/New_York")
    assert schedule.closed_reason(datetime(2026, 10, 31, 13, 0, tzinfo=UTC)) is None
    assert schedule.closed_reason(datetime(2026, 11, 1, 13, 30, tzinfo=UTC)) is not None
    assert schedule.closed_reason(datetime(2026, 11, 1, 14, 0, tzinfo=UTC)) is None
    assert schedule.closed_reason(datetime(2026, 11, 1, 21, 59, tzinfo=UTC)) is None
    assert schedule.closed_reason(datetime(2026, 11, 1, 22, 0, tzinfo=UTC)) is not None


def test_overnight_window_belongs_to_the_day_it_opens() -> None:
    schedule = compile_schedule(
        Schedule(days=("fri",), start="20:00", end="06:00"), "America/Chicago"
    )
    assert schedule.closed_reason(at("2026-11-27T21:00:00-06:00")) is None  # Friday night
    assert schedule.closed_reason(at("2026-11-28T05:59:00-06:00")) is None  # Saturday small hours
    assert schedule.closed_reason(at("2026-11-28T06:00:00-06:00")) is not None
    assert schedule.closed_reason(at("2026-11-28T21:00:00-06:00")) is not None  # Saturday night


def test_holidays_close_the_whole_local_day() -> None:
    schedule = compile_schedule(Schedule(holidays=(date(2026, 11, 26),)), "America/New_York")
    assert "holiday" in (schedule.closed_reason(at("2026-11-26T12:00:00-05:00")) or "")
    assert schedule.closed_reason(at("2026-11-27T00:00:00-05:00")) is None
