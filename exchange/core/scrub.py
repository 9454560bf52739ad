"""Keeping personal data out of text that buyers send back (reject reasons, lead ids,
return reasons) before it is stored or shown to operators.

Two passes: the lead's own PII values, when known, are replaced wherever they appear;
then anything shaped like an email address, and (in free text) like a phone number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_EMAIL = re.compile(r"[\w.+-]+@[\w-]*(?:\.[\w-]+)*")
_PHONE = re.compile(r"(?:\+|\()?\d[\d ().-]{5,}\d")
_MIN_VALUE_LENGTH = 3  # shorter values (initials) would blank out ordinary words


def pii_values(lead: Mapping[str, Any], pii_fields: Iterable[str]) -> list[str]:
    """The lead's PII values as they may be quoted back: as sent to the buyer, and a
    US phone without its +1."""
    values: list[str] = []
    for name in pii_fields:
        value = lead.get(name)
        if value is None:
            continue
        text = str(value)
        values.append(text)
        if text.startswith("+1") and text[2:].isdigit():
            values.append(text[2:])
    return sorted((v for v in values if len(v) >= _MIN_VALUE_LENGTH), key=len, reverse=True)


def scrub(text: str | None, values: Iterable[str] = (), free_text: bool = True) -> str | None:
    """``text`` with PII replaced; ``free_text`` False keeps digit runs (a buyer's lead id
    may be a long number)."""
    if text is None:
        return None
    for value in values:
        text = re.sub(re.escape(value), "[redacted]", text, flags=re.IGNORECASE)
    text = _EMAIL.sub("[email]", text)
    if free_text:
        text = _PHONE.sub("[number]", text)
    return text
