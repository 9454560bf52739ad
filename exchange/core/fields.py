"""Lead fields: a vertical's field types, compiled once into fast validators.

A vertical declares its fields in the config (SPEC section 3). At config load each
`FieldSpec` is compiled into one small closure that checks and normalises a single JSON
value; a `LeadSchema` holds those closures and runs them over every ping and post. No
pydantic model is built per lead: this runs on the hot path of every auction.

Invariants the rest of the exchange relies on:

- Output holds only declared fields, as plain JSON values (str, int, float, bool), in
  declaration order, already normalised (phone E.164, email lower case, state code,
  5-digit ZIP, enum in its declared spelling). Normalising is idempotent: a validated
  lead validates to itself.
- A ping never carries PII: `validate_ping` drops declared PII fields unseen, and an
  undeclared field is always an error, so PII cannot slip through under another name.
- Error messages never contain the rejected value (they go back to clients and into
  logs); they name the expectation instead. Every bad field is reported at once.
- A missing value, `None`, or a blank string all mean "absent": an error for a required
  field, dropped silently for an optional one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, model_validator

from exchange.core.storable import INT64_MAX, INT64_MIN, OUT_OF_INT64, text_problem

FieldType = Literal[
    "string", "integer", "number", "boolean", "enum", "email", "phone", "zip", "state", "date"
]

_NUMERIC_TYPES = frozenset({"integer", "number"})
_EMAIL_MAX_LENGTH = 254  # RFC 5321 path limit
_EMAIL_LOCAL_MAX_LENGTH = 64


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


# --- compiled checkers -------------------------------------------------------------------
#
# A checker takes one raw JSON value (never None) and returns the normalised value, or
# _ABSENT for a blank string, or raises _Reject with a message that holds no value.


class _Reject(Exception):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class _Absent:
    __slots__ = ()


_ABSENT = _Absent()

_Checker = Callable[[object], Any]


def _too_long(max_length: int) -> str:
    return f"must be at most {max_length} characters"


def _string_checker(spec: FieldSpec) -> _Checker:
    max_length = spec.max_length
    too_long = _too_long(max_length)

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise _Reject("must be a string")
        value = value.strip()
        if not value:
            return _ABSENT
        if len(value) > max_length:
            raise _Reject(too_long)
        problem = text_problem(value)
        if problem is not None:
            raise _Reject(problem)
        return value

    return check


def _bounds_message(low: Decimal | None, high: Decimal | None) -> str:
    if low is not None and high is not None:
        return f"must be between {low:f} and {high:f}"
    if low is not None:
        return f"must be at least {low:f}"
    if high is not None:
        return f"must be at most {high:f}"
    return "is out of range"  # never raised: no bounds to break


def _integer_checker(spec: FieldSpec) -> _Checker:
    # Integer bounds as ints: comparing int to int is cheaper than int to Decimal.
    low = None if spec.min is None else math.ceil(spec.min)
    high = None if spec.max is None else math.floor(spec.max)
    out_of_bounds = _bounds_message(spec.min, spec.max)

    def check(value: object) -> Any:
        if isinstance(value, bool):
            raise _Reject("must be an integer")
        # A float with an integral value (30.0, from some JSON encoders) is an integer too.
        if not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise _Reject("must be an integer")
        number = int(value)
        if (low is not None and number < low) or (high is not None and number > high):
            raise _Reject(out_of_bounds)
        if not INT64_MIN <= number <= INT64_MAX:
            raise _Reject(OUT_OF_INT64)
        return number

    return check


def _float_bound(bound: Decimal | None) -> float | Decimal | None:
    """A bound as a float when that is exact (faster to compare), else the Decimal."""
    if bound is None:
        return None
    as_float = float(bound)
    return as_float if Decimal(as_float) == bound else bound


def _number_checker(spec: FieldSpec) -> _Checker:
    low = _float_bound(spec.min)
    high = _float_bound(spec.max)
    out_of_bounds = _bounds_message(spec.min, spec.max)

    def check(value: object) -> Any:
        number: int | float
        if isinstance(value, bool):
            raise _Reject("must be a number")
        if isinstance(value, int):
            number = int(value)
            if not INT64_MIN <= number <= INT64_MAX:
                raise _Reject(OUT_OF_INT64)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _Reject("must be a finite number")
            number = float(value)
        else:
            raise _Reject("must be a number")
        # int/float against float/Decimal compares exactly in Python.
        if (low is not None and number < low) or (high is not None and number > high):
            raise _Reject(out_of_bounds)
        return number

    return check


def _boolean_checker(spec: FieldSpec) -> _Checker:
    def check(value: object) -> Any:
        if value is True or value is False:
            return value
        raise _Reject("must be true or false")

    return check


def _enum_checker(spec: FieldSpec) -> _Checker:
    assert spec.values is not None  # FieldSpec guarantees it for enums
    exact = {v: v for v in spec.values}
    folded = {v.casefold(): v for v in spec.values}
    invalid = "must be one of: " + ", ".join(spec.values)
    max_length = spec.max_length

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise _Reject(invalid)
        member = exact.get(value)
        if member is not None:
            return member
        value = value.strip()
        if not value:
            return _ABSENT
        if len(value) > max_length:
            raise _Reject(invalid)
        member = folded.get(value.casefold())
        if member is None:
            raise _Reject(invalid)
        return member

    return check


# Characters never valid unquoted in an address; quoted local parts are not accepted.
_EMAIL_FORBIDDEN = re.compile(r'[\s\x00-\x1f\x7f"(),:;<>\[\\\]]')
_DOMAIN_LABEL = re.compile(r"(?!-)[^.]{1,63}(?<!-)")


def _email_checker(spec: FieldSpec) -> _Checker:
    max_length = min(spec.max_length, _EMAIL_MAX_LENGTH)
    too_long = _too_long(max_length)
    invalid = "is not a valid email address"

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise _Reject(invalid)
        value = value.strip().lower()
        if not value:
            return _ABSENT
        if len(value) > max_length:
            raise _Reject(too_long)
        local, at, domain = value.partition("@")
        if (
            not at
            or not local
            or len(local) > _EMAIL_LOCAL_MAX_LENGTH
            or "@" in domain
            or "." not in domain
            or _EMAIL_FORBIDDEN.search(value)
            or local.startswith(".")
            or local.endswith(".")
            or ".." in local
            or not all(_DOMAIN_LABEL.fullmatch(label) for label in domain.split("."))
        ):
            raise _Reject(invalid)
        return value

    return check


def _phone_checker(spec: FieldSpec) -> _Checker:
    max_length = spec.max_length
    invalid = "is not a valid phone number"
    e164 = phonenumbers.PhoneNumberFormat.E164

    def check(value: object) -> Any:
        if isinstance(value, bool):
            raise _Reject(invalid)
        if isinstance(value, int):  # a bare national number sent as a JSON number
            value = str(value)
        elif not isinstance(value, str):
            raise _Reject(invalid)
        if not value.strip():
            return _ABSENT
        if len(value) > max_length:
            raise _Reject(invalid)
        try:
            number = phonenumbers.parse(value, "US")
        except phonenumbers.NumberParseException:
            # Its message may quote the input: never let it out.
            raise _Reject(invalid) from None
        if not phonenumbers.is_valid_number(number):
            raise _Reject(invalid)
        return phonenumbers.format_number(number, e164)

    return check


_ZIP = re.compile(r"([0-9]{5})(?:-[0-9]{4})?")


def _zip_checker(spec: FieldSpec) -> _Checker:
    invalid = "must be a 5-digit ZIP code"

    def check(value: object) -> Any:
        if isinstance(value, bool):
            raise _Reject(invalid)
        if isinstance(value, int):
            # Only when no leading zero can have been lost (2134 may have been 02134).
            if 10000 <= value <= 99999:
                return str(int(value))
            raise _Reject(invalid)
        if not isinstance(value, str):
            raise _Reject(invalid)
        value = value.strip()
        if not value:
            return _ABSENT
        match = _ZIP.fullmatch(value)
        if match is None:
            raise _Reject(invalid)
        return match.group(1)

    return check


_STATE_NAMES: Mapping[str, str] = {
    "AL": "Alabama",
    "AK": "Alaska",
    "AZ": "Arizona",
    "AR": "Arkansas",
    "CA": "California",
    "CO": "Colorado",
    "CT": "Connecticut",
    "DE": "Delaware",
    "FL": "Florida",
    "GA": "Georgia",
    "HI": "Hawaii",
    "ID": "Idaho",
    "IL": "Illinois",
    "IN": "Indiana",
    "IA": "Iowa",
    "KS": "Kansas",
    "KY": "Kentucky",
    "LA": "Louisiana",
    "ME": "Maine",
    "MD": "Maryland",
    "MA": "Massachusetts",
    "MI": "Michigan",
    "MN": "Minnesota",
    "MS": "Mississippi",
    "MO": "Missouri",
    "MT": "Montana",
    "NE": "Nebraska",
    "NV": "Nevada",
    "NH": "New Hampshire",
    "NJ": "New Jersey",
    "NM": "New Mexico",
    "NY": "New York",
    "NC": "North Carolina",
    "ND": "North Dakota",
    "OH": "Ohio",
    "OK": "Oklahoma",
    "OR": "Oregon",
    "PA": "Pennsylvania",
    "RI": "Rhode Island",
    "SC": "South Carolina",
    "SD": "South Dakota",
    "TN": "Tennessee",
    "TX": "Texas",
    "UT": "Utah",
    "VT": "Vermont",
    "VA": "Virginia",
    "WA": "Washington",
    "WV": "West Virginia",
    "WI": "Wisconsin",
    "WY": "Wyoming",
    "DC": "District of Columbia",
    "AS": "American Samoa",
    "GU": "Guam",
    "MP": "Northern Mariana Islands",
    "PR": "Puerto Rico",
    "VI": "U.S. Virgin Islands",
    "UM": "United States Minor Outlying Islands",
}

US_STATE_CODES: frozenset[str] = frozenset(_STATE_NAMES)


def _state_key(text: str) -> str:
    """A full name folded for lookup: case, runs of spaces and dots do not matter."""
    return " ".join(text.replace(".", " ").casefold().split())


_STATE_BY_NAME: Mapping[str, str] = {
    **{_state_key(name): code for code, name in _STATE_NAMES.items()},
    _state_key("Virgin Islands"): "VI",
    _state_key("US Virgin Islands"): "VI",
    _state_key("Washington DC"): "DC",
}


def _state_checker(spec: FieldSpec) -> _Checker:
    invalid = "must be a US state code or name"
    max_length = spec.max_length

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise _Reject(invalid)
        if value in US_STATE_CODES:
            return value
        value = value.strip()
        if not value:
            return _ABSENT
        if len(value) > max_length:
            raise _Reject(invalid)
        if len(value) == 2:
            code = value.upper()
            if code in US_STATE_CODES:
                return code
            raise _Reject(invalid)
        named = _STATE_BY_NAME.get(_state_key(value))
        if named is None:
            raise _Reject(invalid)
        return named

    return check


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date_checker(spec: FieldSpec) -> _Checker:
    invalid = "must be a date as YYYY-MM-DD"

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise _Reject(invalid)
        value = value.strip()
        if not value:
            return _ABSENT
        # fromisoformat alone also takes "20240102" and week dates; the wire format is one.
        if _ISO_DATE.fullmatch(value) is None:
            raise _Reject(invalid)
        try:
            date.fromisoformat(value)
        except ValueError:
            raise _Reject(invalid) from None
        return value

    return check


_COMPILERS: Mapping[str, Callable[[FieldSpec], _Checker]] = {
    "string": _string_checker,
    "integer": _integer_checker,
    "number": _number_checker,
    "boolean": _boolean_checker,
    "enum": _enum_checker,
    "email": _email_checker,
    "phone": _phone_checker,
    "zip": _zip_checker,
    "state": _state_checker,
    "date": _date_checker,
}


# --- the schema ----------------------------------------------------------------------------

_NOT_AN_OBJECT = (FieldProblem(("lead",), "must be an object"),)
_REQUIRED = "is required"

# (name, required, checker), in declaration order.
_Plan = tuple[tuple[str, bool, _Checker], ...]


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
            (name, spec.required, _COMPILERS[spec.type](spec)) for name, spec in fields.items()
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
                except _Reject as reject:
                    problems.append(FieldProblem(("lead", name), reject.msg))
                    continue
                if value is not _ABSENT:
                    out[name] = value
                    continue
            if required:
                problems.append(FieldProblem(("lead", name), _REQUIRED))
        for key in unknown:
            problems.append(FieldProblem(("lead", key), self._not_a_field))
        if problems:
            raise LeadInvalid(problems)
        return out
