"""Lead field checkers: one small closure per declared field, compiled once at config
load from the field's rules (exchange.core.fields.FieldSpec) and run on every lead.

A checker takes one raw JSON value (never None) and returns the normalised value, or
``ABSENT`` for a blank string, or raises ``Reject`` with a message that holds no value
(messages go back to clients and into logs: they name the expectation instead).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

import phonenumbers

from exchange.core.states import US_STATE_CODES, state_code
from exchange.core.storable import INT64_MAX, INT64_MIN, OUT_OF_INT64, text_problem

_EMAIL_MAX_LENGTH = 254  # RFC 5321 path limit
_EMAIL_LOCAL_MAX_LENGTH = 64


class FieldRules(Protocol):
    """What a checker reads of a field's declaration (a FieldSpec)."""

    @property
    def min(self) -> Decimal | None: ...

    @property
    def max(self) -> Decimal | None: ...

    @property
    def values(self) -> tuple[str, ...] | None: ...

    @property
    def max_length(self) -> int: ...


class Reject(Exception):
    """A value a field refuses; ``msg`` says what was expected, never the value."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class _Absent:
    __slots__ = ()


ABSENT = _Absent()  # a blank string: the field is treated as not given

Checker = Callable[[object], Any]


def _too_long(max_length: int) -> str:
    return f"must be at most {max_length} characters"


def _string_checker(spec: FieldRules) -> Checker:
    max_length = spec.max_length
    too_long = _too_long(max_length)

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise Reject("must be a string")
        value = value.strip()
        if not value:
            return ABSENT
        if len(value) > max_length:
            raise Reject(too_long)
        problem = text_problem(value)
        if problem is not None:
            raise Reject(problem)
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


def _integer_checker(spec: FieldRules) -> Checker:
    # Integer bounds as ints: comparing int to int is cheaper than int to Decimal.
    low = None if spec.min is None else math.ceil(spec.min)
    high = None if spec.max is None else math.floor(spec.max)
    out_of_bounds = _bounds_message(spec.min, spec.max)

    def check(value: object) -> Any:
        if isinstance(value, bool):
            raise Reject("must be an integer")
        # A float with an integral value (30.0, from some JSON encoders) is an integer too.
        if not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise Reject("must be an integer")
        number = int(value)
        if (low is not None and number < low) or (high is not None and number > high):
            raise Reject(out_of_bounds)
        if not INT64_MIN <= number <= INT64_MAX:
            raise Reject(OUT_OF_INT64)
        return number

    return check


def _float_bound(bound: Decimal | None) -> float | Decimal | None:
    """A bound as a float when that is exact (faster to compare), else the Decimal."""
    if bound is None:
        return None
    as_float = float(bound)
    return as_float if Decimal(as_float) == bound else bound


def _number_checker(spec: FieldRules) -> Checker:
    low = _float_bound(spec.min)
    high = _float_bound(spec.max)
    out_of_bounds = _bounds_message(spec.min, spec.max)

    def check(value: object) -> Any:
        number: int | float
        if isinstance(value, bool):
            raise Reject("must be a number")
        if isinstance(value, int):
            number = int(value)
            if not INT64_MIN <= number <= INT64_MAX:
                raise Reject(OUT_OF_INT64)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise Reject("must be a finite number")
            number = float(value)
        else:
            raise Reject("must be a number")
        # int/float against float/Decimal compares exactly in Python.
        if (low is not None and number < low) or (high is not None and number > high):
            raise Reject(out_of_bounds)
        return number

    return check


def _boolean_checker(spec: FieldRules) -> Checker:
    def check(value: object) -> Any:
        if value is True or value is False:
            return value
        raise Reject("must be true or false")

    return check


def _enum_checker(spec: FieldRules) -> Checker:
    assert spec.values is not None  # FieldSpec guarantees it for enums
    exact = {v: v for v in spec.values}
    folded = {v.casefold(): v for v in spec.values}
    invalid = "must be one of: " + ", ".join(spec.values)
    max_length = spec.max_length

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise Reject(invalid)
        member = exact.get(value)
        if member is not None:
            return member
        value = value.strip()
        if not value:
            return ABSENT
        if len(value) > max_length:
            raise Reject(invalid)
        member = folded.get(value.casefold())
        if member is None:
            raise Reject(invalid)
        return member

    return check


# Characters never valid unquoted in an address; quoted local parts are not accepted.
_EMAIL_FORBIDDEN = re.compile(r'[\s\x00-\x1f\x7f"(),:;<>\[\\\]]')
_DOMAIN_LABEL = re.compile(r"(?!-)[^.]{1,63}(?<!-)")


def _email_checker(spec: FieldRules) -> Checker:
    max_length = min(spec.max_length, _EMAIL_MAX_LENGTH)
    too_long = _too_long(max_length)
    invalid = "is not a valid email address"

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise Reject(invalid)
        value = value.strip().lower()
        if not value:
            return ABSENT
        if len(value) > max_length:
            raise Reject(too_long)
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
            raise Reject(invalid)
        return value

    return check


def _phone_checker(spec: FieldRules) -> Checker:
    max_length = spec.max_length
    invalid = "is not a valid phone number"
    e164 = phonenumbers.PhoneNumberFormat.E164

    def check(value: object) -> Any:
        if isinstance(value, bool):
            raise Reject(invalid)
        if isinstance(value, int):  # a bare national number sent as a JSON number
            value = str(value)
        elif not isinstance(value, str):
            raise Reject(invalid)
        if not value.strip():
            return ABSENT
        if len(value) > max_length:
            raise Reject(invalid)
        try:
            number = phonenumbers.parse(value, "US")
        except phonenumbers.NumberParseException:
            # Its message may quote the input: never let it out.
            raise Reject(invalid) from None
        if not phonenumbers.is_valid_number(number):
            raise Reject(invalid)
        return phonenumbers.format_number(number, e164)

    return check


_ZIP = re.compile(r"([0-9]{5})(?:-[0-9]{4})?")


def _zip_checker(spec: FieldRules) -> Checker:
    invalid = "must be a 5-digit ZIP code"

    def check(value: object) -> Any:
        if isinstance(value, bool):
            raise Reject(invalid)
        if isinstance(value, int):
            # Only when no leading zero can have been lost (2134 may have been 02134).
            if 10000 <= value <= 99999:
                return str(int(value))
            raise Reject(invalid)
        if not isinstance(value, str):
            raise Reject(invalid)
        value = value.strip()
        if not value:
            return ABSENT
        match = _ZIP.fullmatch(value)
        if match is None:
            raise Reject(invalid)
        return match.group(1)

    return check


def _state_checker(spec: FieldRules) -> Checker:
    invalid = "must be a US state code or name"
    max_length = spec.max_length

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise Reject(invalid)
        if value in US_STATE_CODES:
            return value
        value = value.strip()
        if not value:
            return ABSENT
        if len(value) > max_length:
            raise Reject(invalid)
        code = state_code(value)
        if code is None:
            raise Reject(invalid)
        return code

    return check


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date_checker(spec: FieldRules) -> Checker:
    invalid = "must be a date as YYYY-MM-DD"

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise Reject(invalid)
        value = value.strip()
        if not value:
            return ABSENT
        # fromisoformat alone also takes "20240102" and week dates; the wire format is one.
        if _ISO_DATE.fullmatch(value) is None:
            raise Reject(invalid)
        try:
            date.fromisoformat(value)
        except ValueError:
            raise Reject(invalid) from None
        return value

    return check


# Consent evidence (SPEC section 10): a TrustedForm certificate's URL, and a Jornaya
# LeadiD token. Both are fixed formats, matched whole; the host and the hex are
# case-insensitive on the wire and normalised to the one spelling each issuer uses.
_CONSENT_FLAGS = re.IGNORECASE | re.ASCII  # ASCII: no other script's letter folds into one
_TRUSTEDFORM_URL = re.compile(r"https://cert\.trustedform\.com/([0-9a-f]{40})", _CONSENT_FLAGS)
TRUSTEDFORM_CERT_PREFIX = "https://cert.trustedform.com/"
_LEADID_TOKEN = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", _CONSENT_FLAGS
)


def _fixed_format_checker(invalid: str, read: Callable[[str], str | None]) -> Checker:
    """Text in one fixed format: ``read`` gives its one spelling, or None when the text
    is not in the format."""

    def check(value: object) -> Any:
        if not isinstance(value, str):
            raise Reject(invalid)
        value = value.strip()
        if not value:
            return ABSENT
        normal = read(value)
        if normal is None:
            raise Reject(invalid)
        return normal

    return check


def _trustedform_url_checker(spec: FieldRules) -> Checker:
    def read(value: str) -> str | None:
        match = _TRUSTEDFORM_URL.fullmatch(value)
        return None if match is None else TRUSTEDFORM_CERT_PREFIX + match.group(1).lower()

    return _fixed_format_checker(
        "must be a TrustedForm certificate URL (https://cert.trustedform.com/ and 40 hex digits)",
        read,
    )


def _leadid_token_checker(spec: FieldRules) -> Checker:
    def read(value: str) -> str | None:
        return None if _LEADID_TOKEN.fullmatch(value) is None else value.upper()

    return _fixed_format_checker(
        "must be a Jornaya LeadiD token (a UUID: 8-4-4-4-12 hex digits)", read
    )


COMPILERS: Mapping[str, Callable[[FieldRules], Checker]] = {
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
    "trustedform_url": _trustedform_url_checker,
    "leadid_token": _leadid_token_checker,
}
