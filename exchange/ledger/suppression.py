"""Suppression lists in the ledger (SPEC section 10): loading a list (append or an atomic
replace, one transaction), the post-time look-up, the lists and their counts, deleting a
list, and closing a post refused for a suppressed lead.

Entries are keyed hashes only (exchange/core/suppression.py); this module never sees a
phone or an email. A load locks its list's row, so two loads of one list run one after
the other and its count stays exact; a look-up reads committed entries only, so it sees
a replaced list whole before or whole after.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from exchange.core.outcomes import ClaimStatus, UnsoldReason
from exchange.ledger.bounded import LedgerArea, bounded, row_count
from exchange.ledger.words import sql_word


class SuppressionKeyChanged(Exception):
    """An append to a list whose entries were hashed under another key: they would never
    match again alongside the new ones. The list must be replaced (or deleted) first."""

    def __init__(self, name: str) -> None:
        super().__init__(f"suppression list {name} was loaded under another hash key")
        self.name = name


@dataclass(frozen=True, slots=True)
class ListChange:
    """What one load did: entries newly added, entries removed (replace), and the total."""

    added: int
    removed: int
    total: int


@dataclass(frozen=True, slots=True)
class ListSummary:
    name: str
    entries: int
    key_id: bytes
    created_at: datetime
    updated_at: datetime


_LOCK_LIST = """
INSERT INTO suppression_lists AS l (name, entries, key_id, created_at, updated_at)
VALUES ($1, 0, $2, $3, $3)
ON CONFLICT (name) DO UPDATE SET updated_at = l.updated_at
RETURNING entries, key_id
"""
_REMOVE_OTHERS = """
DELETE FROM suppression_entries e
WHERE e.list_name = $1
  AND NOT EXISTS (SELECT 1 FROM unnest($2::bytea[]) AS n(hash) WHERE n.hash = e.hash)
"""
_INSERT = """
INSERT INTO suppression_entries (list_name, hash)
SELECT $1, hash FROM unnest($2::bytea[]) AS n(hash)
ON CONFLICT DO NOTHING
"""
_SET_COUNT = """
UPDATE suppression_lists SET entries = $2, key_id = $3, updated_at = $4 WHERE name = $1
"""
# The vertical's lists in its own order: the first that holds one of the lead's hashes.
_MATCH = """
SELECT list_name FROM suppression_entries
WHERE list_name = ANY($1::text[]) AND hash = ANY($2::bytea[])
ORDER BY array_position($1::text[], list_name) LIMIT 1
"""
_FINISH_SUPPRESSED = f"""
UPDATE posts SET status = {sql_word(ClaimStatus.UNSOLD)},
                 reason = {sql_word(UnsoldReason.SUPPRESSED)}, suppressed_by = $2,
                 finished_at = $3
WHERE ping_id = $1 AND status = {sql_word(ClaimStatus.IN_PROGRESS)}
"""


class Suppression(LedgerArea):
    async def load_suppression(
        self, name: str, hashes: list[bytes], replace: bool, key_id: bytes, now: datetime
    ) -> ListChange:
        """Add ``hashes`` to list ``name`` (made if new); with ``replace`` the list becomes
        exactly ``hashes``. One transaction: a look-up sees the list before or after.
        Raises SuppressionKeyChanged for an append under another key than the list's."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK_LIST, name, key_id, now)
            assert row is not None
            if not replace and bytes(row["key_id"]) != key_id and row["entries"]:
                raise SuppressionKeyChanged(name)
            removed = 0
            if replace:
                removed = row_count(await conn.execute(_REMOVE_OTHERS, name, hashes))
            added = row_count(await conn.execute(_INSERT, name, hashes))
            total = row["entries"] - removed + added
            await conn.execute(_SET_COUNT, name, total, key_id, now)
        return ListChange(added, removed, total)

    @bounded
    async def suppressed_in(self, hashes: list[bytes], lists: tuple[str, ...]) -> str | None:
        """The first of ``lists`` holding one of ``hashes``, or None (one indexed read)."""
        if not hashes or not lists:
            return None
        found: str | None = await self.pool.fetchval(_MATCH, list(lists), hashes)
        return found

    @bounded
    async def listed_hashes(self, name: str, hashes: list[bytes]) -> set[bytes]:
        """Which of ``hashes`` are on list ``name`` (one indexed read)."""
        if not hashes:
            return set()
        rows = await self.pool.fetch(
            "SELECT hash FROM suppression_entries WHERE list_name = $1 AND hash = ANY($2::bytea[])",
            name,
            hashes,
        )
        return {bytes(r["hash"]) for r in rows}

    async def suppression_lists(self) -> list[ListSummary]:
        rows = await self.pool.fetch(
            "SELECT name, entries, key_id, created_at, updated_at FROM suppression_lists"
            " ORDER BY name"
        )
        return [
            ListSummary(r["name"], r["entries"], bytes(r["key_id"]), r["created_at"],
                        r["updated_at"])
            for r in rows
        ]  # fmt: skip

    async def delete_suppression_list(self, name: str) -> int | None:
        """Delete list ``name`` and its entries; how many entries it had, or None when
        there was no such list."""
        async with self.pool.acquire() as conn, conn.transaction():
            entries = await conn.fetchval(
                "DELETE FROM suppression_lists WHERE name = $1 RETURNING entries", name
            )
            if entries is None:
                return None
            await conn.execute("DELETE FROM suppression_entries WHERE list_name = $1", name)
        return int(entries)

    @bounded
    async def finish_suppressed(self, ping_id: str, list_name: str, finished_at: datetime) -> bool:
        """Close an in-progress post as unsold, reason suppressed, naming the list that
        matched; False if it was no longer in progress."""
        done = await self.pool.execute(
            _FINISH_SUPPRESSED, uuid.UUID(ping_id), list_name, finished_at
        )
        return bool(done == "UPDATE 1")
