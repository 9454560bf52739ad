"""A sample lead for one vertical, made from its field declarations: one valid value for
every field, so a buyer's integration can be tried (``lead-exchange buyer-test``) before
any real lead exists.

The values are fixed and plausible together (a Beverly Hills ZIP, state and phone), and
each keeps inside its field's rules: an enum's first value, a number within ``min`` and
``max``. The caller still validates the result with the vertical's schema, as every lead
is, so what is sent is the normalised lead the exchange would send.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from exchange.core.fields import FieldSpec

# A value most numeric fields take (an age, a count of years, a score), moved into a
# field's bounds when they exclude it.
TYPICAL_NUMBER = 35

# Strings by field name where a name says what a value looks like; else SAMPLE_TEXT.
NAMED_TEXT: Mapping[str, str] = {
    "first_name": "Jane",
    "last_name": "Doe",
    "street_address": "1 Main St",
    "address": "1 Main St",
    "city": "Beverly Hills",
}
SAMPLE_TEXT = "test"

BY_TYPE: Mapping[str, Any] = {
    "email": "jane.doe@example.com",
    "phone": "+13105550123",
    "zip": "90210",
    "state": "CA",
    "date": "1990-01-15",
    "trustedform_url": "https://cert.trustedform.com/" + "0123456789abcdef0123" * 2,
    "leadid_token": "7F3B2C1D-4E5A-4B6C-8D7E-9F0A1B2C3D4E",
    "boolean": True,
}


def sample_lead(fields: Mapping[str, FieldSpec]) -> dict[str, Any]:
    """A value for every declared field, required or not, in declaration order."""
    return {name: sample_value(name, spec) for name, spec in fields.items()}


def sample_value(name: str, spec: FieldSpec) -> Any:
    """One value of field ``name`` that its declaration accepts."""
    if spec.type == "enum":
        assert spec.values  # FieldSpec requires values on an enum
        return spec.values[0]
    if spec.type in ("integer", "number"):
        return _number_within(spec.min, spec.max)
    if spec.type == "string":
        return NAMED_TEXT.get(name, SAMPLE_TEXT)[: spec.max_length]
    return BY_TYPE[spec.type]


def _number_within(low: Decimal | None, high: Decimal | None) -> int | float:
    """TYPICAL_NUMBER moved to the nearest whole number within the bounds; else the float
    nearest the middle of the bounds that lies within them (a ``number`` field only: an
    ``integer`` field's bounds hold a whole number, FieldSpec checks). Floats are compared
    with the bounds exactly, as the field's checker does."""
    value = TYPICAL_NUMBER
    if low is not None and value < low:
        value = math.ceil(low)
    if high is not None and value > high:
        value = math.floor(high)
    if (low is None or value >= low) and (high is None or value <= high):
        return value
    assert low is not None and high is not None
    middle = float((low + high) / 2)
    if Decimal(middle) > high:
        middle = math.nextafter(middle, -math.inf)
    elif Decimal(middle) < low:
        middle = math.nextafter(middle, math.inf)
    return middle
