"""The lead score: rules summed and clamped, the floor a score sets, and the load-time
checks that name each bad rule by its key path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from exchange.config import ConfigError, parse_config
from exchange.core.config import LoadedConfig, VerticalConfig
from exchange.core.scoring import Scorer, compile_scorer, score_lead
from tests.support.harness import VERTICAL, config_text

FIELDS = yaml.safe_load(VERTICAL)["auto_insurance"]["fields"]
RULES = [
    {"field": "credit_rating", "in": ["excellent", "good"], "points": 40},
    {"field": "age", "gte": 25, "points": 20},
    {"field": "state", "in": ["CA", "TX"], "points": 30},
    {"field": "credit_rating", "in": ["poor"], "points": -25},
]


def scorer(rules: list[dict[str, Any]], floors: list[dict[str, Any]] | None = None) -> Scorer:
    vertical = VerticalConfig.model_validate(
        {"fields": FIELDS, "score": rules, "floor_by_score": floors or []}
    )
    compiled = compile_scorer(vertical)
    assert compiled is not None
    return compiled


def load(vertical: dict[str, Any], buyers: list[dict[str, Any]] | None = None) -> LoadedConfig:
    doc = yaml.safe_load(config_text(buyers or []))
    doc["verticals"]["auto_insurance"].update(vertical)
    return parse_config(yaml.safe_dump(doc), "score.yaml", env={})


def problems_of(vertical: dict[str, Any], buyers: list[dict[str, Any]] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(vertical, buyers)
    return "\n".join(caught.value.problems)


def buyer(**extra: Any) -> dict[str, Any]:
    return {"id": "b", "verticals": ["auto_insurance"], "ping_url": "http://h/ping",
            "post_url": "http://h/post", **extra}  # fmt: skip


# -- the score ------------------------------------------------------------------------------


def test_score_is_the_sum_of_the_points_of_the_rules_the_lead_passes() -> None:
    s = scorer(RULES)
    assert s.score({"credit_rating": "good", "age": 30, "state": "NY"}) == 60
    assert s.score({"credit_rating": "good", "age": 24, "state": "CA"}) == 70
    assert s.score({"credit_rating": "fair", "state": "NY"}) == 0


def test_a_rule_with_several_operators_needs_them_all() -> None:
    s = scorer([{"field": "age", "gte": 25, "lte": 40, "points": 10}])
    assert [s.score({"age": a}) for a in (24, 25, 40, 41)] == [0, 10, 10, 0]


def test_negative_points_are_a_penalty_and_the_score_never_goes_below_zero() -> None:
    s = scorer(RULES)
    assert s.score({"credit_rating": "poor", "age": 30, "state": "CA"}) == 25
    assert s.score({"credit_rating": "poor", "state": "NY"}) == 0


def test_the_score_is_capped_at_100() -> None:
    s = scorer([{"field": "age", "gte": 18, "points": 70}, {"field": "state", "exists": True,
                 "points": 70}])  # fmt: skip
    assert s.score({"age": 30, "state": "CA"}) == 100


def test_missing_fields_earn_nothing_except_under_not_in() -> None:
    s = scorer([{"field": "age", "gte": 0, "points": 5},
                {"field": "credit_rating", "not_in": ["poor"], "points": 7}])  # fmt: skip
    assert s.score({}) == 7


def test_enum_and_state_lists_match_whatever_case_the_config_writes() -> None:
    s = scorer([{"field": "credit_rating", "in": ["Excellent"], "points": 9},
                {"field": "state", "in": ["ca"], "points": 1}])  # fmt: skip
    assert s.score({"credit_rating": "excellent", "state": "CA"}) == 10


def test_an_unscored_vertical_has_no_score_and_no_score_floor() -> None:
    vertical = VerticalConfig.model_validate({"fields": FIELDS})
    assert compile_scorer(vertical) is None
    scored = score_lead(None, {"age": 30})
    assert (scored.score, scored.floor_cents, dict(scored.fields)) == (None, 0, {"age": 30})


def test_buyer_filters_see_the_score_as_a_field_of_the_lead() -> None:
    scored = score_lead(scorer(RULES), {"credit_rating": "good", "age": 30})
    assert scored.fields == {"credit_rating": "good", "age": 30, "score": 60}


lead_values = st.fixed_dictionaries(
    {},
    optional={
        "credit_rating": st.sampled_from(["excellent", "good", "fair", "poor"]),
        "age": st.integers(16, 120),
        "state": st.sampled_from(["CA", "TX", "NY", "FL"]),
        "zip": st.sampled_from(["90210", "10001", "73301"]),
    },
)
rule_lists = st.lists(
    st.one_of(
        st.builds(lambda lo, p: {"field": "age", "gte": lo, "points": p},
                  st.integers(16, 120), st.integers(-100, 100)),
        st.builds(lambda vs, p: {"field": "credit_rating", "in": vs, "points": p},
                  st.lists(st.sampled_from(["excellent", "good", "fair", "poor"]), min_size=1),
                  st.integers(-100, 100)),
        st.builds(lambda pre, p: {"field": "zip", "prefix": [pre], "points": p},
                  st.sampled_from(["9", "10", "7"]), st.integers(-100, 100)),
    ),
    min_size=1,
    max_size=8,
)  # fmt: skip


@given(rule_lists, lead_values)
def test_the_score_is_always_within_0_and_100(
    rules: list[dict[str, Any]], lead: dict[str, Any]
) -> None:
    assert 0 <= scorer(rules).score(lead) <= 100


@given(rule_lists, lead_values, st.randoms())
def test_the_order_of_the_rules_never_changes_the_score(
    rules: list[dict[str, Any]], lead: dict[str, Any], rng: Any
) -> None:
    shuffled = list(rules)
    rng.shuffle(shuffled)
    assert scorer(shuffled).score(lead) == scorer(rules).score(lead)


@given(rule_lists, lead_values, st.integers(1, 100))
def test_a_rule_with_positive_points_never_lowers_a_score(
    rules: list[dict[str, Any]], lead: dict[str, Any], points: int
) -> None:
    extra = {"field": "age", "exists": True, "points": points}
    assert scorer([*rules, extra]).score(lead) >= scorer(rules).score(lead)


@given(rule_lists, lead_values)
def test_pii_never_changes_a_score(rules: list[dict[str, Any]], lead: dict[str, Any]) -> None:
    s = scorer(rules)
    assert s.score({**lead, "email": "a@example.com", "phone": "+14155552671"}) == s.score(lead)


# -- the floor a score sets -----------------------------------------------------------------

FLOORS = [{"gte": 80, "floor": 15.00}, {"gte": 50, "floor": 8.00}]


def test_the_first_step_the_score_reaches_sets_the_floor() -> None:
    s = scorer(RULES, FLOORS)
    assert [s.floor_cents(x) for x in (100, 80, 79, 50, 49, 0)] == [1500, 1500, 800, 800, 0, 0]
    assert s.floor_cents(None) == 0


def test_a_scored_lead_carries_its_score_floor() -> None:
    scored = score_lead(scorer(RULES, FLOORS), {"credit_rating": "good", "age": 30, "state": "CA"})
    assert (scored.score, scored.floor_cents) == (90, 1500)


@given(st.integers(0, 100), st.integers(0, 100))
def test_a_higher_score_never_gets_a_lower_step(low: int, high: int) -> None:
    s = scorer(RULES, FLOORS)
    step_of = {1500: 0, 800: 1, 0: 2}
    low, high = sorted((low, high))
    assert step_of[s.floor_cents(high)] <= step_of[s.floor_cents(low)]


# -- load-time checks -----------------------------------------------------------------------


def test_a_loaded_config_compiles_each_scoring_vertical_once() -> None:
    loaded = load({"score": RULES, "floor_by_score": FLOORS})
    scorer_ = loaded.scorers["auto_insurance"]
    assert isinstance(scorer_, Scorer)
    assert scorer_.score({"credit_rating": "excellent", "age": 40, "state": "TX"}) == 90
    assert scorer_.floors == ((80, 1500), (50, 800))


def test_rules_on_unknown_or_pii_fields_are_named_by_key_path() -> None:
    text = problems_of({"score": [{"field": "income", "gte": 1, "points": 5},
                                  {"field": "phone", "exists": True, "points": 5}]})  # fmt: skip
    assert "verticals.auto_insurance.score[0].field: no such field 'income'" in text
    assert "verticals.auto_insurance.score[1].field: 'phone' is PII" in text


def test_operators_unfit_for_the_field_type_are_named() -> None:
    text = problems_of({"score": [
        {"field": "state", "gte": 5, "points": 1},
        {"field": "age", "prefix": ["2"], "points": 1},
        {"field": "credit_rating", "in": ["excelent"], "points": 1},
        {"field": "zip", "in": [90210], "points": 1},
        {"field": "age", "in": ["30"], "points": 1},
        {"field": "state", "not_in": ["California"], "points": 1},
    ]})  # fmt: skip
    assert "score[0].gte: state is a state field: gte and lte are for integer" in text
    assert "score[1].prefix: age is an integer field: prefix is for text" in text
    assert "score[2].in: 'excelent' is not one of credit_rating's values" in text
    assert "score[3].in: zip is a zip field: its values are text; quote 90210" in text
    assert "score[4].in: age is an integer field: '30' is text" in text
    assert "score[5].not_in: 'California' is not a two-letter state code" in text


def test_a_rule_needs_an_operator_and_bounded_points() -> None:
    text = problems_of({"score": [{"field": "age", "points": 5},
                                  {"field": "age", "gte": 20, "points": 500}]})  # fmt: skip
    assert (
        "verticals.auto_insurance.score[0]: Value error, a score rule needs at least one operator"
        in text
    )
    assert (
        "verticals.auto_insurance.score[1].points: Input should be less than or equal to 100"
        in text
    )


def test_score_floors_must_run_from_the_highest_threshold_down() -> None:
    text = problems_of({"score": RULES, "floor_by_score": list(reversed(FLOORS))})
    assert "verticals.auto_insurance.floor_by_score[1].gte: list the steps from the highest" in text


def test_score_floors_need_rules_reachable_thresholds_and_a_floor_under_max_bid() -> None:
    assert "floor_by_score: the vertical has no score rules" in problems_of(
        {"floor_by_score": FLOORS}
    )
    text = problems_of({"score": [{"field": "age", "gte": 25, "points": 20}], "max_bid": 10.00,
                        "floor_by_score": FLOORS})  # fmt: skip
    assert "floor_by_score[0].gte: never reached: the score rules give at most 20 points" in text
    assert "floor_by_score[0].floor: above the vertical's max_bid (10.00)" in text


def test_no_vertical_may_declare_a_field_named_score() -> None:
    fields = {**FIELDS, "score": {"type": "integer"}}
    assert "verticals.auto_insurance.fields.score: the name is the exchange's lead score" in (
        problems_of({"fields": fields})
    )


def test_buyers_may_filter_on_the_score_of_a_scoring_vertical() -> None:
    loaded = load({"score": RULES}, [buyer(filters={"score": {"gte": 50}}),
                                     {**buyer(vertical_filters={"auto_insurance": {
                                         "score": {"lte": 90}}}), "id": "c"}])  # fmt: skip
    assert loaded.config.buyers[0].filters["score"].gte == 50


def test_a_score_filter_on_an_unscored_vertical_or_with_a_text_operator_is_refused() -> None:
    text = problems_of({}, [buyer(filters={"score": {"gte": 50}})])
    assert "buyers[0].filters.score: verticals.auto_insurance does not score its leads" in text
    text = problems_of({"score": RULES}, [buyer(vertical_filters={"auto_insurance": {
        "score": {"prefix": ["9"]}}})])  # fmt: skip
    assert (
        "buyers[0].vertical_filters.auto_insurance.score.prefix: score is an integer field" in text
    )
