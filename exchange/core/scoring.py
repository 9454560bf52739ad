"""The lead score (SPEC section 10): a vertical's rules, compiled once at config load and
run on every ping, and the floor a score sets.

A rule is a buyer filter's operators on one non-PII field plus ``points``; a lead earns
the points of every rule it passes (all of the rule's operators, as a filter). The score
is the sum of those points, clamped to 0-100 once, at the end: points may be negative (a
penalty), and the order of the rules never changes the score. A vertical without rules
does not score its leads: their score is None (not 0), and nothing is sent or stored.

The score is a built-in integer field named ``score``: buyer filters and
vertical_filters may name it like any field, the ping sent to buyers carries it, and no
vertical may declare a field of that name. ``floor_by_score`` lists steps from the
highest threshold down; the first step the score reaches sets the score's floor, and the
auction's floor is the highest of that and the seller's and vertical's floors.

Also here: the load-time checks of rules and of filters that name the score, each
problem naming its key path. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from exchange.core.config import (
    SCORE_MAX,
    SCORE_MIN,
    FieldFilter,
    LeadScorer,
    VerticalConfig,
)
from exchange.core.fields import FieldSpec
from exchange.core.money import dollars_text
from exchange.core.states import STATE_NAMES
from exchange.core.targeting import Rule, compile_filter

SCORE_FIELD = "score"
# What a filter naming the score is checked against: an integer field, 0-100.
SCORE_SPEC = FieldSpec(type="integer", min=SCORE_MIN, max=SCORE_MAX)
_ORDERED_TYPES = frozenset({"integer", "number"})


@dataclass(frozen=True, slots=True)
class Scorer:
    """One vertical's score rules and score floors, compiled.

    ``rules``: each rule's checks (all must pass) and its points, in config order.
    ``floors``: (threshold, floor in cents), highest threshold first."""

    rules: tuple[tuple[tuple[Rule, ...], int], ...]
    floors: tuple[tuple[int, int], ...] = ()

    def score(self, lead: Mapping[str, Any]) -> int:
        """The lead's score: the points of the rules it passes, summed, clamped to 0-100."""
        total = 0
        for checks, points in self.rules:
            for check in checks:
                if check(lead) is not None:
                    break
            else:
                total += points
        return min(SCORE_MAX, max(SCORE_MIN, total))

    def floor_cents(self, score: int | None) -> int:
        """The floor the score sets: the first step it reaches, else 0 (no floor)."""
        if score is None:
            return 0
        for threshold, floor_cents in self.floors:
            if score >= threshold:
                return floor_cents
        return 0


@dataclass(frozen=True, slots=True)
class ScoredLead:
    """A ping's score (None: its vertical does not score), the floor it sets, and the
    lead as buyer filters see it: its fields, and ``score`` when scored."""

    score: int | None
    floor_cents: int
    fields: Mapping[str, Any]


def compile_scorer(vertical: VerticalConfig) -> Scorer | None:
    """The vertical's scorer, or None when it has no score rules."""
    if not vertical.score:
        return None
    rules = tuple((tuple(compile_filter(rule.field, rule)), rule.points) for rule in vertical.score)
    floors = tuple((step.gte, step.floor) for step in vertical.floor_by_score)
    return Scorer(rules, floors)


def score_lead(scorer: LeadScorer | None, lead: Mapping[str, Any]) -> ScoredLead:
    """Score one redacted, validated lead (a ping's)."""
    if scorer is None:
        return ScoredLead(None, 0, lead)
    score = scorer.score(lead)
    return ScoredLead(score, scorer.floor_cents(score), {**lead, SCORE_FIELD: score})


def average_score(score_sum: int, scored: int) -> Decimal | None:
    """The average of ``scored`` scores summing to ``score_sum``, exact to one decimal
    (half up), or None when nothing was scored (reports' ``avg_score``)."""
    if scored <= 0:
        return None
    return (Decimal(score_sum) / Decimal(scored)).quantize(Decimal("0.1"), ROUND_HALF_UP)


# -- load-time checks ----------------------------------------------------------------------


def vertical_score_problems(name: str, vertical: VerticalConfig) -> list[str]:
    """What is wrong with a vertical's ``score`` and ``floor_by_score``, by key path."""
    where = f"verticals.{name}"
    problems: list[str] = []
    if SCORE_FIELD in vertical.fields:
        problems.append(
            f"{where}.fields.{SCORE_FIELD}: the name is the exchange's lead score "
            "(verticals.<name>.score); name the field otherwise"
        )
    for i, rule in enumerate(vertical.score):
        at = f"{where}.score[{i}]"
        spec = vertical.fields.get(rule.field)
        if spec is None:
            problems.append(f"{at}.field: no such field {rule.field!r} in {where}.fields")
        elif spec.pii:
            problems.append(f"{at}.field: {rule.field!r} is PII: not in pings, not scored on")
        else:
            problems.extend(operator_problems(at, rule.field, spec, rule))
    problems.extend(_floor_problems(where, vertical))
    return problems


def _floor_problems(where: str, vertical: VerticalConfig) -> list[str]:
    steps = vertical.floor_by_score
    if not steps:
        return []
    if not vertical.score:
        return [f"{where}.floor_by_score: the vertical has no score rules ({where}.score)"]
    problems: list[str] = []
    reachable = min(SCORE_MAX, sum(r.points for r in vertical.score if r.points > 0))
    for i, step in enumerate(steps):
        at = f"{where}.floor_by_score[{i}]"
        if i and step.gte >= steps[i - 1].gte:
            problems.append(
                f"{at}.gte: list the steps from the highest gte down "
                f"({step.gte} follows {steps[i - 1].gte})"
            )
        if step.gte > reachable:
            problems.append(
                f"{at}.gte: never reached: the score rules give at most {reachable} points"
            )
        if step.floor > vertical.max_bid:
            problems.append(
                f"{at}.floor: above the vertical's max_bid ({dollars_text(vertical.max_bid)})"
            )
    return problems


def operator_problems(at: str, name: str, spec: FieldSpec, rule: FieldFilter) -> list[str]:
    """Operators that can never do what they say on a field of this type: an order on a
    field without one, a list value no lead value can equal, a prefix on a number."""
    problems: list[str] = []
    ordered = spec.type in _ORDERED_TYPES
    if not ordered:
        for op in ("gte", "lte"):
            if getattr(rule, op) is not None:
                problems.append(
                    f"{at}.{op}: {name} is {_a(spec.type)} field: gte and lte are for "
                    "integer and number fields"
                )
    if rule.prefix is not None and (ordered or spec.type == "boolean"):
        problems.append(f"{at}.prefix: {name} is {_a(spec.type)} field: prefix is for text")
    for op in ("in", "not_in"):
        values = rule.in_ if op == "in" else rule.not_in
        if values is not None:
            problems.extend(f"{at}.{op}: {p}" for p in _list_problems(name, spec, values))
    return problems


def _list_problems(name: str, spec: FieldSpec, values: tuple[str | int, ...]) -> list[str]:
    kind = spec.type
    if kind == "number":
        return [f"{name} is a number field: compare it with gte and lte"]
    if kind == "boolean":
        if any(v not in (0, 1) or isinstance(v, str) for v in values):
            return [f"{name} is a boolean field: list true or false"]
        return []
    if kind == "integer":
        text = [v for v in values if isinstance(v, str)]
        return [f"{name} is an integer field: {text[0]!r} is text"] if text else []
    numbers = [v for v in values if not isinstance(v, str)]
    if numbers:
        return [f"{name} is {_a(kind)} field: its values are text; quote {numbers[0]!r}"]
    if kind == "enum" and spec.values is not None:
        known = {v.casefold() for v in spec.values}
        unknown = [v for v in values if isinstance(v, str) and v.casefold() not in known]
        if unknown:
            return [f"{unknown[0]!r} is not one of {name}'s values ({', '.join(spec.values)})"]
    if kind == "state":
        unknown = [v for v in values if isinstance(v, str) and v.upper() not in STATE_NAMES]
        if unknown:
            return [f"{unknown[0]!r} is not a two-letter state code"]
    return []


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def score_filter_problems(
    where: str, rule: FieldFilter, verticals: Mapping[str, VerticalConfig], names: tuple[str, ...]
) -> list[str]:
    """A buyer filter naming ``score`` (at ``where``): its operators fit an integer 0-100,
    and each of the verticals ``names`` scores its leads (else no lead would pass)."""
    problems = operator_problems(where, SCORE_FIELD, SCORE_SPEC, rule)
    for v in names:
        if v in verticals and not verticals[v].score:
            problems.append(
                f"{where}: verticals.{v} does not score its leads (no verticals.{v}.score)"
            )
    return problems
