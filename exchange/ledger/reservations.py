"""Holding a person against a second offer of them meanwhile (migration 0025): before a
lead is offered where its person may be sold once in a window (to a buyer with a dedupe
window, in a vertical with one), its contact hashes are reserved in that scope, in the
statement that also reads the person's sales, and given back when the offer did not sell.

The duplicate rules are the sales' (exchange/core/dedupe.py), read once when a post
starts; two offers of one person under way at once both read no sale yet. Here the
second finds the first's reservation while the first is under way, and its sale once
it is done: the reservation is released only after the sale committed, and a statement
that no longer meets the reservation sees the sale. A process that dies holding a
reservation leaves it to run out at its ``until``; a sweep deletes those.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from exchange.ledger.bounded import LedgerArea, bounded, row_count


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a person is sold at most once in a window: to one buyer, or in one vertical.
    A sale of the person since ``since`` (to that buyer, in that vertical) makes another
    offer there a duplicate."""

    name: str  # 'buyer:<id>' or 'vertical:<name>': the reservation's key with the hash
    since: datetime
    buyer_id: str | None = None
    vertical: str | None = None

    @classmethod
    def buyer(cls, buyer_id: str, since: datetime) -> Scope:
        return cls(f"buyer:{buyer_id}", since, buyer_id=buyer_id)

    @classmethod
    def of_vertical(cls, vertical: str, since: datetime) -> Scope:
        return cls(f"vertical:{vertical}", since, vertical=vertical)


# Sold: a sale of the person in any scope's window. Else every (scope, hash) pair is
# taken, in key order so that two statements wanting some of the same rows take them in
# the same order (no deadlock): a row is taken when free, when its time is up, or when
# this ping holds it already (a repeat asks again).
_RESERVE = """
WITH scope AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
        AS s (scope, buyer_id, vertical, since)
), sold AS (
    SELECT 1 FROM sales AS x JOIN scope AS s
      ON x.created_at >= s.since
     AND (s.buyer_id IS NULL OR x.buyer_id = s.buyer_id)
     AND (s.vertical IS NULL OR x.vertical = s.vertical)
    WHERE x.phone_hash = ANY($5::bytea[]) OR x.email_hash = ANY($5::bytea[])
    LIMIT 1
), wanted AS (
    SELECT s.scope, h.contact_hash FROM scope AS s, unnest($5::bytea[]) AS h (contact_hash)
    WHERE NOT EXISTS (SELECT 1 FROM sold)
    ORDER BY 1, 2
), taken AS (
    INSERT INTO contact_reservations AS r (scope, contact_hash, ping_id, until)
    SELECT scope, contact_hash, $6, $7 FROM wanted
    ON CONFLICT (scope, contact_hash) DO UPDATE
    SET ping_id = EXCLUDED.ping_id, until = EXCLUDED.until
    WHERE r.until <= $8 OR r.ping_id = EXCLUDED.ping_id
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM sold) AS sold, (SELECT count(*) FROM taken) AS taken
"""

_RELEASE = "DELETE FROM contact_reservations WHERE scope = ANY($1::text[]) AND ping_id = $2"

_SWEEP = """
DELETE FROM contact_reservations WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM contact_reservations WHERE until <= $1 LIMIT $2))
"""

SOLD = "sold"  # the person was sold in a scope's window
HELD = "held"  # another offer of the person holds it in a scope


class Reservations(LedgerArea):
    @bounded
    async def reserve_contacts(
        self,
        scopes: Sequence[Scope],
        hashes: Sequence[bytes],
        ping_id: str,
        until: datetime,
        now: datetime,
    ) -> str | None:
        """Reserve every hash in every scope for ``ping_id`` until ``until``: None when all
        were taken, else SOLD or HELD and none is kept."""
        unique = sorted(set(hashes))
        if not scopes or not unique:
            return None
        key = uuid.UUID(ping_id)
        names = [s.name for s in scopes]
        row = await self.pool.fetchrow(
            _RESERVE, names, [s.buyer_id for s in scopes], [s.vertical for s in scopes],
            [s.since for s in scopes], unique, key, until, now,
        )  # fmt: skip
        assert row is not None
        if row["sold"]:
            return SOLD
        if row["taken"] == len(scopes) * len(unique):
            return None
        await self.pool.execute(_RELEASE, names, key)
        return HELD

    @bounded
    async def release_contacts(self, scopes: Sequence[Scope], ping_id: str) -> None:
        """Give back what ``ping_id`` holds in these scopes (its offer did not sell)."""
        if scopes:
            await self.pool.execute(_RELEASE, [s.name for s in scopes], uuid.UUID(ping_id))

    @bounded
    async def sweep_contact_reservations(self, now: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` reservations whose time is up; how many went."""
        done = await self.pool.execute(_SWEEP, now, limit)
        return row_count(done)
