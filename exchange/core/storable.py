"""What the ledger can store: the one room that knows which values from outside
PostgreSQL refuses, so they are stopped at the edge, before any row is built.

Values come from sellers (lead fields, ``external_id``), from buyers (bid ids, reasons,
buyer lead ids, prices) and from return requests. PostgreSQL refuses, in ``text`` and
``jsonb`` alike, the NUL character; a Python string holding an unpaired surrogate cannot
even be encoded for the wire. An integer beyond 64 bits fits no ``bigint`` column and no
JSON encoder the exchange uses. What this module lets through is stored: a Hypothesis
test writes whatever it accepts to a real database (tests/core/test_storable.py).

Two ways to apply the rules, by what the value is:

- **Refuse** what a client must correct (a seller's field, a return reason, a buyer's
  ``bid_id`` that later posts must echo exactly): ``text_problem`` / ``integer_problem``
  name the problem, never the value.
- **Clean** free text the exchange only keeps as a record (a buyer's reject reason, the
  lead id a buyer gave for a lead it has already taken): ``clean_text`` replaces each
  refused character with U+FFFD and cuts the text to its column's size, so a buyer's
  bytes can neither block the ledger nor undo a sale.
"""

from __future__ import annotations

import re

# The widest integer a bigint column, orjson and every JSON reader of ours takes.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# PostgreSQL's integer (latency_us, tmax_ms, attempt, rank).
INT32_MAX = 2**31 - 1

# Sizes of the ledger's free-text and id columns as the exchange fills them.
MAX_ID_CHARS = 128  # bid_id, buyer_lead_id, external_id
MAX_REASON_CHARS = 200  # bid and post reasons from buyers
MAX_RETURN_REASON_CHARS = 500

# NUL (refused by text and jsonb) and unpaired surrogates (not encodable as UTF-8).
_REFUSED = re.compile("[\x00\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None. Says what, never the value."""
    found = _REFUSED.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain the NUL character (\\u0000)"
    return "must not contain an unpaired UTF-16 surrogate"


OUT_OF_INT64 = f"must be between {INT64_MIN} and {INT64_MAX}"


def integer_problem(value: int) -> str | None:
    """Why ``value`` cannot be stored as an integer, or None."""
    if INT64_MIN <= value <= INT64_MAX:
        return None
    return OUT_OF_INT64


def clean_text(value: str | None, max_chars: int) -> str | None:
    """Free text made storable: refused characters replaced, cut to ``max_chars``;
    None (and text that ends up blank) stays None."""
    if value is None:
        return None
    if _REFUSED.search(value) is not None:
        value = _REFUSED.sub(_REPLACEMENT, value)
    value = value[:max_chars]
    return value if value.strip() else None


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be kept as an id (stored, then echoed back exactly), or None."""
    if len(value) > MAX_ID_CHARS:
        return f"must be at most {MAX_ID_CHARS} characters"
    return text_problem(value)
