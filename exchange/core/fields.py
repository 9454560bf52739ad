"""Lead fields: a vertical's field types, compiled once into fast validators.

A vertical declares its fields in the config (SPEC section 3). At config load each
`FieldSpec` is compiled into one small closure that checks and normalises a single JSON
value (exchange.core.checkers, one per field type; states in exchange.core.states); a
`LeadSchema` holds those closures and runs them over every ping and post. No pydantic
model is built per lead: this runs on the hot path of every auction.

Invariants the rest of the exchange relies on:

- Output holds only declared fields, as plain JSON values (str, int, float, bool), in
  declaration order, already normalised (phone E.164, email lower case, state code,
  5-digit ZIP, enum in its declared spelling, consent evidence in its issuer's
  spelling). Normalising is idempotent: a validated lead validates to itself.
- A ping never carries PII: `validate_ping` drops declared PII fields unseen, and an
  undeclared field is always an error, so PII cannot slip through under another name.
- Error messages never contain the rejected value (they go back to clients and into
  logs); they name the expectation instead. Every bad field is reported at once.
- A missing value, `None`, or a blank string all mean "absent": an error for a required
  field, dropped silently for an optional one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from exchange.core.checkers import ABSENT, COMPILERS, Checker, Reject

FieldType = Literal[
    "string", "integer", "number", "boolean", "enum", "email", "phone", "zip", "state", "date",
    "trustedform_url", "leadid_token",
]  # fmt: skip
# Types whose fields are post-only (``pii: true``) unless declared otherwise: whoever holds
# a TrustedForm certificate's URL can claim the certificate and replay the consent page
# session, which shows what the consumer typed. A LeadiD token opens nothing without the
# person's details, so it is pinged: buyers screen a lead's consent before bidding.
POST_ONLY_TYPES = frozenset({"trustedform_url"})

_NUMERIC_TYPES = frozenset({"integer", "number"})


class FieldSpec(BaseModel):
    """One field of a vertical, as written in the config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: FieldType
    pii: bool = False
    required: bool = False
    min: Decimal | None = None  # integer/number only: inclusive bounds
    max: Decimal | None = None
    values: tuple[str, ...] | None = None  # enum only, required there
    max_length: int = 255  # string-like types

    @model_validator(mode="before")
    @classmethod
    def _post_only_by_type(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("type") in POST_ONLY_TYPES and "pii" not in data:
            return {**data, "pii": True}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.type == "enum":
            if not self.values:
                raise ValueError("an enum field needs a non-empty `values` list")
            folded = [v.casefold() for v in self.values]
            if any(not v or v != v.strip() for v in self.values):
                raise ValueError("enum values must be non-blank, without surrounding spaces")
            if len(set(folded)) != len(folded):
                raise ValueError("enum values must be distinct (ignoring case)")
        elif self.values is not None:
            raise ValueError("`values` is only allowed on enum fields")
        if self.type not in _NUMERIC_TYPES:
            if self.min is not None or self.max is not None:
                raise ValueError("`min`/`max` are only allowed on integer and number fields")
        elif self.min is not None and self.max is not None:
            if self.min > self.max:
                raise ValueError("`min` must not be greater than `max`")
            if self.type == "integer" and math.ceil(self.min) > math.floor(self.max):
                raise ValueError("no integer lies between `min` and `max`")
        if self.max_length < 1:
            raise ValueError("`max_length` must be at least 1")
        return self


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One thing wrong with a lead: where (`("lead", field)`) and what, without the value."""

    loc: tuple[str | int, ...]
    msg: str


class LeadInvalid(Exception):
    """A lead that does not fit its vertical's fields; carries every problem found.

    The message is safe to log and to return: it holds field names, never values.
    """

    def __init__(self, problems: Iterable[FieldProblem]) -> None:
        self.problems: tuple[FieldProblem, ...] = tuple(problems)
        summary = "; ".join(
            f"{'.'.join(str(part) for part in p.loc)}: {p.msg}" for p in self.problems
        )
        super().__init__(f"invalid lead: {summary}")


# --- the schema ----------------------------------------------------------------------------

_NOT_AN_OBJECT = (FieldProblem(("lead",), "must be an object"),)
_REQUIRED = "is required"

# (name, required, checker), in declaration order.
_Plan = tuple[tuple[str, bool, Checker], ...]


class LeadSchema:
    """A vertical's fields, compiled: validates, normalises and redacts its leads."""

    __slots__ = (
        "_full",
        "_names",
        "_not_a_field",
        "_ping",
        "_public",
        "fields",
        "pii_fields",
        "vertical",
    )

    def __init__(self, vertical: str, fields: Mapping[str, FieldSpec]) -> None:
        self.vertical: str = vertical
        self.fields: Mapping[str, FieldSpec] = MappingProxyType(dict(fields))
        self.pii_fields: frozenset[str] = frozenset(n for n, s in fields.items() if s.pii)
        self._names = frozenset(self.fields)
        self._public = frozenset(self._names - self.pii_fields)
        self._full: _Plan = tuple(
            (name, spec.required, COMPILERS[spec.type](spec)) for name, spec in fields.items()
        )
        self._ping: _Plan = tuple(step for step in self._full if step[0] not in self.pii_fields)
        self._not_a_field = f"is not a field of vertical {vertical}"

    def validate_full(self, lead: object) -> dict[str, Any]:
        """A post or direct post: every required field, PII included. Raises LeadInvalid."""
        return self._validate(lead, self._full)

    def validate_ping(self, lead: object) -> dict[str, Any]:
        """A ping: declared PII fields are dropped unread; required non-PII fields must be
        there. Raises LeadInvalid."""
        return self._validate(lead, self._ping)

    def redact(self, full_lead: Mapping[str, Any]) -> dict[str, Any]:
        """The non-PII part of an already validated lead (what buyers are pinged with).

        Keeps declared non-PII fields only, so nothing undeclared can pass either."""
        public = self._public
        return {name: value for name, value in full_lead.items() if name in public}

    def _validate(self, lead: object, plan: _Plan) -> dict[str, Any]:
        if not isinstance(lead, dict):
            raise LeadInvalid(_NOT_AN_OBJECT)
        names = self._names
        unknown = [key for key in lead if key not in names]
        if unknown and not all(isinstance(key, str) for key in unknown):
            raise LeadInvalid(_NOT_AN_OBJECT)
        out: dict[str, Any] = {}
        problems: list[FieldProblem] = []
        for name, required, check in plan:
            value = lead.get(name)
            if value is not None:
                try:
                    value = check(value)
                except Reject as reject:
                    problems.append(FieldProblem(("lead", name), reject.msg))
                    continue
                if value is not ABSENT:
                    out[name] = value
                    continue
            if required:
                problems.append(FieldProblem(("lead", name), _REQUIRED))
        for key in unknown:
            problems.append(FieldProblem(("lead", key), self._not_a_field))
        if problems:
            raise LeadInvalid(problems)
        return out
