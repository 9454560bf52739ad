"""The outcome and status words of exchange/core/outcomes.py as SQL literals: the one way
the ledger's statements name them, so a list like ``outcome IN (...)`` is the core's set,
never a copy kept in step by hand."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

_WORD = re.compile(r"[a-z_]+")


def sql_word(word: StrEnum) -> str:
    """``'in_progress'``: one enum value as a SQL string literal. Only the enums' own
    lower-case words pass, so nothing here ever needs quoting."""
    if not _WORD.fullmatch(word.value):
        raise ValueError(f"not a ledger word: {word.value!r}")
    return f"'{word.value}'"


def sql_words(words: Iterable[StrEnum]) -> str:
    """``'bid', 'no_bid'``: a set of enum values for ``IN (...)``, in a fixed order."""
    return ", ".join(sorted(sql_word(w) for w in words))
