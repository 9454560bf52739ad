"""Suppression lists as pure code (SPEC section 10): what an entry of an operator's list
is, how it is kept, and which of a lead's values are looked up in the lists.

A list holds phones and emails, each normalised exactly as a lead field of its type is
(E.164, lower case: exchange/core/checkers.py) and kept only as a keyed hash:
HMAC-SHA256 under ``exchange.suppression_hash_key`` of ``"phone:+14155552671"`` or
``"email:ada@example.com"`` (the same message form as the duplicate check's hashes,
exchange/core/dedupe.py, under a key of its own). Nothing kept reverses to a phone
number without the key; a lead matches when one of its phone or email fields hashes to
an entry of one of its vertical's ``suppress`` lists.

A list is tagged with the key's id (``key_id``), so that a key change is seen: hashes
made under another key match nothing, and the list has to be loaded again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from exchange.core.checkers import ABSENT, COMPILERS, Reject
from exchange.core.fields import FieldSpec, LeadSchema

# A list's name: what a vertical's ``suppress`` names and the API's path holds.
LIST_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_LIST_NAME = re.compile(LIST_NAME_PATTERN)
# Entries one load may carry; a bigger list is loaded in several appends.
MAX_ENTRIES = 100_000
# The field types a list's entries are, and a lead's values looked up.
CONTACT_TYPES = ("phone", "email")

_KEY_ID_MESSAGE = b"lead-exchange suppression key id"
_NOT_CONTACT = "must be a phone number or an email address"
_check_phone = COMPILERS["phone"](FieldSpec(type="phone"))
_check_email = COMPILERS["email"](FieldSpec(type="email"))


class LoadMode(StrEnum):
    """How a load changes a list: ``append`` adds its entries (the default: a mistaken
    append only adds), ``replace`` makes the list exactly its entries, atomically."""

    APPEND = "append"
    REPLACE = "replace"


def valid_list_name(name: str) -> bool:
    return _LIST_NAME.fullmatch(name) is not None


def key_id(key: bytes) -> bytes:
    """A short public tag of the hash key: equal tags, equal keys (to 2^-64)."""
    return hmac.new(key, _KEY_ID_MESSAGE, hashlib.sha256).digest()[:8]


def contact_hash(key: bytes, kind: str, normalised: str) -> bytes:
    """The keyed hash of one normalised phone or email."""
    return hmac.new(key, f"{kind}:{normalised}".encode(), hashlib.sha256).digest()


def normalise_entry(value: object) -> tuple[str, str]:
    """``(kind, value)`` of one list entry: an email when it has an ``@``, else a phone.
    Raises Reject with a message that never holds the value."""
    if isinstance(value, str) and "@" in value:
        kind, checked = "email", _check_email(value)
    elif isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        kind, checked = "phone", _check_phone(value)
    else:
        raise Reject(_NOT_CONTACT)
    if checked is ABSENT:
        raise Reject(f"is blank: {_NOT_CONTACT}")
    return kind, checked


@dataclass(frozen=True, slots=True)
class InvalidEntry:
    index: int  # its place in the loaded array, from 0
    msg: str


@dataclass(slots=True)
class HashedEntries:
    """A load's entries as their hashes (distinct, in first-seen order), and what was
    wrong with the others. Filled a slice at a time (``add``), so that a caller can give
    other work a turn between slices of a long list."""

    key: bytes
    received: int = 0
    hashes: dict[bytes, None] = field(default_factory=dict)
    invalid: list[InvalidEntry] = field(default_factory=list)

    def add(self, values: Iterable[object]) -> None:
        key, hashes = self.key, self.hashes
        for value in values:
            index = self.received
            self.received += 1
            try:
                kind, normalised = normalise_entry(value)
            except Reject as reject:
                self.invalid.append(InvalidEntry(index, reject.msg))
                continue
            hashes[contact_hash(key, kind, normalised)] = None

    @property
    def valid(self) -> int:
        return self.received - len(self.invalid)


@dataclass(frozen=True, slots=True)
class LoadCounts:
    """What a load did to its list. ``received = invalid + added + already_present``: an
    entry repeated within one load counts as already present from its second time."""

    received: int
    invalid: int
    added: int
    already_present: int
    removed: int  # replace only: entries of the old list not in the new one
    total: int  # entries of the list after the load


def load_counts(entries: HashedEntries, added: int, removed: int, total: int) -> LoadCounts:
    return LoadCounts(
        received=entries.received,
        invalid=len(entries.invalid),
        added=added,
        already_present=entries.valid - added,
        removed=removed,
        total=total,
    )


def lead_hashes(lead: Mapping[str, Any], schema: LeadSchema, key: bytes) -> list[bytes]:
    """The keyed hashes of every phone and email field of a validated full lead (a lead
    may carry two phones; either one on a list suppresses it)."""
    found: list[bytes] = []
    for name, spec in schema.fields.items():
        value = lead.get(name)
        if spec.type in CONTACT_TYPES and isinstance(value, str) and value:
            found.append(contact_hash(key, spec.type, value))
    return found
