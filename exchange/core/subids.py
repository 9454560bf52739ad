"""Sub-IDs (SPEC section 11): a seller's traffic source, carried by a ping or lead as
``sub_id``, stored with the auction, reported per seller and sub-ID, and refused by a
buyer's ``sub_ids_deny``.

One rule for what a sub-ID may be, used by the seller API and the config alike: a string
of 1 to ``MAX_SUB_ID_CHARS`` printable characters (letters, digits, punctuation and
spaces of any script; no control characters, no line breaks), not blank. It is kept as
given and compared exactly (``FB-Camp-3`` is not ``fb-camp-3``). Sub-IDs are unbounded
in number, so they are never a metric label: they are read from the ledger.
"""

from __future__ import annotations

MAX_SUB_ID_CHARS = 64


def sub_id_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a sub-ID, or None when it is one."""
    if not isinstance(value, str):
        return f"must be a string of 1 to {MAX_SUB_ID_CHARS} printable characters"
    if not 1 <= len(value) <= MAX_SUB_ID_CHARS:
        return f"must be 1 to {MAX_SUB_ID_CHARS} characters (has {len(value)})"
    if not value.isprintable():
        return "must hold printable characters only (no control characters or line breaks)"
    if not value.strip():
        return "must not be blank"
    return None
