"""The rules of delayed delivery, pure: who a lead is held for, when a schedule next
opens, and when a hold is looked at again or is over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.config import ConfigError, parse_config
from exchange.core.config import BuyerConfig, Schedule
from exchange.core.holds import (
    RECHECK,
    HeldBuyer,
    held_for,
    is_over,
    next_check,
    next_opening,
    open_now,
    should_hold,
)
from exchange.core.outcomes import UnsoldReason
from exchange.core.ranking import BuyerRules
from exchange.core.targeting import compile_schedule
from tests.support.harness import config_text

MONDAY_9AM = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # a Monday
LEAD = {"state": "CA", "zip": "90210"}


def rules(buyer_id: str, **extra: object) -> BuyerRules:
    config = BuyerConfig.model_validate(
        {"id": buyer_id, "verticals": ["auto_insurance"], "price": 10,
         "post_url": "http://127.0.0.1:1/post", **extra}
    )  # fmt: skip
    return BuyerRules.from_config(config)


NIGHTS = {"schedule": {"timezone": "UTC", "start": "18:00", "end": "23:00"}}


def test_a_lead_is_held_for_a_delayed_buyer_closed_only_by_its_schedule() -> None:
    buyers = [rules("night", **NIGHTS), rules("day")]
    found = held_for(buyers, {"night": 12, "day": 12}, "acme", LEAD, MONDAY_9AM, MONDAY_9AM)
    assert found == [HeldBuyer("night", MONDAY_9AM + timedelta(hours=12))]


def test_a_lead_is_not_held_for_a_buyer_without_delayed_or_one_its_filters_refuse() -> None:
    texan = rules("texan", filters={"state": {"in": ["TX"]}}, **NIGHTS)
    deny = rules("deny", sellers_deny=["acme"], **NIGHTS)
    plain = rules("plain", **NIGHTS)
    hours = {"texan": 12, "deny": 12}
    assert held_for([texan, deny, plain], hours, "acme", LEAD, MONDAY_9AM, MONDAY_9AM) == []


def test_only_reasons_a_buyer_could_still_fix_hold_a_lead() -> None:
    buyers = [HeldBuyer("night", MONDAY_9AM)]
    assert should_hold(UnsoldReason.NO_BIDS, buyers)
    assert should_hold(UnsoldReason.ALL_DECLINED, buyers)
    assert not should_hold(UnsoldReason.DUPLICATE, buyers)
    assert not should_hold(UnsoldReason.NO_BIDS, [])


def test_a_hold_is_due_when_the_first_of_its_buyers_opens() -> None:
    held = [HeldBuyer("night", MONDAY_9AM + timedelta(hours=12))]
    by_id = {"night": rules("night", **NIGHTS)}
    assert next_check(held, (), by_id, MONDAY_9AM) == MONDAY_9AM + RECHECK
    just_before = MONDAY_9AM + timedelta(hours=8, minutes=58)
    assert next_check(held, (), by_id, just_before) == MONDAY_9AM + timedelta(hours=9)
    assert open_now(held, (), by_id, MONDAY_9AM + timedelta(hours=9)) == ["night"]
    assert open_now(held, ["night"], by_id, MONDAY_9AM + timedelta(hours=9)) == []


def test_a_buyer_open_now_but_not_tried_is_looked_at_again_after_a_recheck_not_at_once() -> None:
    # Open now and still waiting after a pass: it was capped. Not due again at once (a
    # hold would be claimed every pass), but within RECHECK.
    held = [HeldBuyer("night", MONDAY_9AM + timedelta(hours=20))]
    by_id = {"night": rules("night", **NIGHTS)}
    at_ten = MONDAY_9AM + timedelta(hours=10)
    assert open_now(held, (), by_id, at_ten) == ["night"]
    assert next_check(held, (), by_id, at_ten) == at_ten + RECHECK


def test_a_hold_is_over_once_every_buyer_was_tried_or_its_window_ended() -> None:
    held = [HeldBuyer("a", MONDAY_9AM + timedelta(hours=6)),
            HeldBuyer("b", MONDAY_9AM + timedelta(hours=12))]  # fmt: skip
    assert not is_over(held, ["a"], MONDAY_9AM)
    assert is_over(held, ["a", "b"], MONDAY_9AM)
    assert not is_over(held, [], MONDAY_9AM + timedelta(hours=7))
    assert is_over(held, [], MONDAY_9AM + timedelta(hours=12))
    by_id = {"a": rules("a", **NIGHTS), "b": rules("b", **NIGHTS)}
    assert next_check(held, ["a", "b"], by_id, MONDAY_9AM) == MONDAY_9AM


HOURS = st.integers(0, 23).map(lambda h: f"{h:02d}:00")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ZONES = st.sampled_from(["UTC", "America/New_York", "Europe/London", "Australia/Sydney"])


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    start, end = draw(HOURS), draw(HOURS | st.just("24:00"))
    if start == end:
        end = "24:00" if start != "00:00" else "12:00"
    days = draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1))
    return Schedule(days=tuple(d for d in WEEKDAYS if d in days), start=start, end=end)


@settings(max_examples=150, deadline=None)
@given(schedules(), ZONES, st.integers(0, 14 * 24 * 60))
def test_next_opening_is_open_and_nothing_before_it_is(
    schedule: Schedule, zone: str, minutes: int
) -> None:
    compiled = compile_schedule(schedule, zone)
    after = MONDAY_9AM + timedelta(minutes=minutes)
    until = after + timedelta(days=8)
    opens = next_opening(compiled, after, until)
    assert opens is not None  # every schedule opens at least once a week
    assert after <= opens < until
    assert compiled.closed_reason(opens) is None
    # Closed at every quarter hour from ``after`` up to the opening.
    step = after
    while step + timedelta(minutes=15) <= opens:
        assert compiled.closed_reason(step) is not None
        step += timedelta(minutes=15)


def test_a_delayed_buyer_needs_a_schedule_and_the_pii_key() -> None:
    doc = yaml.safe_load(config_text([]))
    doc["buyers"] = [
        {"id": "unscheduled", "verticals": ["auto_insurance"], "price": 5,
         "post_url": "http://127.0.0.1:1/post", "delayed": {"hold_hours": 12}},
    ]  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(doc), "holds.yaml", env={})
    text = "\n".join(caught.value.problems)
    assert "buyers[0].delayed: needs a schedule" in text
    assert "buyers[0].delayed: needs exchange.pii_key" in text
