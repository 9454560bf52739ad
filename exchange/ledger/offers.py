"""The lead pool in the ledger (``pool_offers``, migration 0020): an unsold lead offered,
listed, claimed by the first buyer to ask (its sale written in the same statement),
expired by a sweep any process may run, and the sealed PII of every table that keeps
some, for key rotation.

What must never break is the database's to enforce: a claim is one conditional UPDATE
(``claimed_by IS NULL``), so of any number of concurrent claimers on any number of
processes exactly one gets the row; its sale goes into ``sales`` in the same statement
(slot 1 of a ping that sold nothing: ``sales (ping_id, sale_seq)`` is unique), and the
PII is set NULL as the row is claimed or expired.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from exchange.core.dedupe import PastSale
from exchange.core.offers import OfferTerms
from exchange.core.outcomes import ClaimStatus
from exchange.core.sealing import Sealed
from exchange.ledger.bounded import LedgerArea, bounded
from exchange.ledger.words import sql_word

# Every table that keeps sealed PII (exchange/core/sealing.py), with the column whose
# text is the seal's context (exchange.core.offers.sealing_context). Each has the
# columns ``pii_key_id text`` and ``pii bytea``, both NULL once the PII is purged.
# ``lead-exchange rotate-key`` re-seals all of them; a table not created yet is skipped.
SEALED_TABLES: tuple[tuple[str, str], ...] = (
    ("pool_offers", "ping_id"),
    ("held_leads", "ping_id"),
)


@dataclass(frozen=True, slots=True)
class PoolOffer:
    """An offer as the ledger holds it. ``sealed`` is None once the PII is purged."""

    ping_id: str
    seller_id: str
    vertical: str
    lead: dict[str, Any]  # non-PII fields
    phone_hash: bytes | None
    email_hash: bytes | None
    terms: OfferTerms
    sealed: Sealed | None = None
    sub_id: str | None = None
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    price_cents: int | None = None
    payout_cents: int | None = None
    expired_at: datetime | None = None

    @property
    def position(self) -> OfferPosition:
        """Where the offer stands in a listing's order (newest first)."""
        return self.terms.entered_at, self.ping_id


# An offer's place in the listing order: (entered_at, ping_id), newest first; a page
# of offers starts after one such place.
OfferPosition = tuple[datetime, str]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One vertical's open offers: how many, and when the oldest entered."""

    offers: int
    oldest_entered_at: datetime | None


def _offer(row: Mapping[str, Any]) -> PoolOffer:
    sealed = None
    if row.get("pii") is not None:
        sealed = Sealed(row["pii_key_id"], bytes(row["pii"]))
    return PoolOffer(
        ping_id=str(row["ping_id"]),
        seller_id=row["seller_id"],
        vertical=row["vertical"],
        lead=row["lead"],
        phone_hash=row["phone_hash"],
        email_hash=row["email_hash"],
        terms=OfferTerms(row["start_price_cents"], row["floor_price_cents"],
                         row["decay_cents_per_hour"], row["entered_at"], row["expires_at"]),
        sealed=sealed,
        sub_id=row["sub_id"],
        claimed_by=row["claimed_by"],
        claimed_at=row["claimed_at"],
        price_cents=row["price_cents"],
        payout_cents=row["payout_cents"],
        expired_at=row["expired_at"],
    )  # fmt: skip


_COLUMNS = """ping_id, seller_id, vertical, lead, phone_hash, email_hash, start_price_cents,
    floor_price_cents, decay_cents_per_hour, entered_at, expires_at, pii_key_id, pii, sub_id"""
_VALUES = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14"
_OPEN = "claimed_by IS NULL AND expired_at IS NULL"

_ADD = f"INSERT INTO pool_offers ({_COLUMNS}) VALUES ({_VALUES}) ON CONFLICT DO NOTHING"

# The post closed unsold and its lead offered, in one statement: a lead is pooled exactly
# when its post ends unsold here (not when another process closed the claim first).
_CLOSE_INTO_POOL = f"""
WITH closed AS (
    UPDATE posts SET status = {sql_word(ClaimStatus.UNSOLD)}, reason = $15, finished_at = $16
    WHERE ping_id = $1 AND status = {sql_word(ClaimStatus.IN_PROGRESS)}
    RETURNING 1
), offered AS (
    INSERT INTO pool_offers ({_COLUMNS})
    SELECT {_VALUES} WHERE EXISTS (SELECT 1 FROM closed)
    ON CONFLICT DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM closed)
"""

# The first claimer wins: a concurrent claim waits on the row lock, then finds
# claimed_by set and takes nothing. The sale goes in with it (a unique violation on the
# sale's slot fails the whole statement: never a claim without its sale, nor two sales).
_CLAIM = """
WITH taken AS (
    UPDATE pool_offers
    SET claimed_by = $2, claimed_at = $3, price_cents = $4, payout_cents = $5,
        pii = NULL, pii_key_id = NULL
    WHERE ping_id = $1 AND claimed_by IS NULL AND expired_at IS NULL AND expires_at > $3
      AND pii IS NOT NULL
    RETURNING ping_id, seller_id, vertical, phone_hash, email_hash
), sale AS (
    INSERT INTO sales (ping_id, sale_seq, seller_id, buyer_id, vertical, price_cents,
                       payout_cents, created_at, phone_hash, email_hash)
    SELECT ping_id, 1, seller_id, $2, vertical, $4, $5, $3, phone_hash, email_hash FROM taken
    RETURNING sale_id
)
SELECT (SELECT sale_id FROM sale) AS sale_id
"""

_EXPIRE = f"""
WITH due AS (
    SELECT ping_id FROM pool_offers
    WHERE {_OPEN} AND expires_at <= $1
    ORDER BY expires_at LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE pool_offers o SET expired_at = $1, pii = NULL, pii_key_id = NULL
FROM due WHERE o.ping_id = due.ping_id
RETURNING o.vertical
"""


class Offers(LedgerArea):
    @bounded
    async def add_offer(self, offer: PoolOffer) -> bool:
        """Offer a lead to the pool; False if it was offered before."""
        done = await self.pool.execute(_ADD, *_offer_values(offer))
        return bool(done == "INSERT 0 1")

    @bounded
    async def close_unsold_into_pool(
        self, offer: PoolOffer, reason: str, finished_at: datetime
    ) -> bool:
        """Close an in-progress post as unsold and offer its lead, together; False (and
        nothing offered) if the post was no longer in progress."""
        closed = await self.pool.fetchval(
            _CLOSE_INTO_POOL, *_offer_values(offer), reason, finished_at
        )
        return bool(closed)

    @bounded
    async def pool_offer(self, ping_id: str) -> PoolOffer | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM pool_offers WHERE ping_id = $1", uuid.UUID(ping_id)
        )
        return _offer(row) if row is not None else None

    @bounded
    async def open_offers(
        self,
        verticals: Sequence[str],
        now: datetime,
        limit: int,
        after: OfferPosition | None = None,
    ) -> list[PoolOffer]:
        """Unclaimed, unexpired offers of these verticals, newest first (PII left out):
        ``limit`` of them, from the first one past ``after`` in that order."""
        at, ping_id = after if after is not None else (None, None)
        rows = await self.pool.fetch(
            "SELECT ping_id, seller_id, vertical, sub_id, lead, phone_hash, email_hash,"
            " start_price_cents, floor_price_cents, decay_cents_per_hour, entered_at,"
            " expires_at, claimed_by, claimed_at, price_cents, payout_cents, expired_at"
            f" FROM pool_offers WHERE vertical = ANY($1::text[]) AND {_OPEN}"
            " AND expires_at > $2"
            " AND ($4::timestamptz IS NULL OR (entered_at, ping_id) < ($4, $5::uuid))"
            " ORDER BY entered_at DESC, ping_id DESC LIMIT $3",
            list(verticals),
            now,
            limit,
            at,
            uuid.UUID(ping_id) if ping_id is not None else None,
        )
        return [_offer(r) for r in rows]

    @bounded
    async def claim_offer(
        self, ping_id: str, buyer_id: str, now: datetime, price_cents: int, payout_cents: int
    ) -> int | None:
        """Claim the offer for ``buyer_id`` and record its sale; returns the sale's id, or
        None when the offer is gone (claimed by someone else, expired, or unknown)."""
        try:
            sale_id = await self.pool.fetchval(
                _CLAIM, uuid.UUID(ping_id), buyer_id, now, price_cents, payout_cents
            )
        except asyncpg.UniqueViolationError:  # the lead has a sale already: no claim
            return None
        return int(sale_id) if sale_id is not None else None

    async def expire_offers(self, now: datetime, limit: int = 1000) -> dict[str, int]:
        """Take offers past their age out of the pool, PII purged; per vertical, how many.
        Safe on any number of processes at once (each skips the rows another holds)."""
        expired: dict[str, int] = {}
        for row in await self.pool.fetch(_EXPIRE, now, limit):
            expired[row["vertical"]] = expired.get(row["vertical"], 0) + 1
        return expired

    @bounded
    async def sealed_open_offers(
        self, verticals: Sequence[str], after_ping_id: str | None, limit: int
    ) -> list[tuple[str, str, Sealed]]:
        """Open offers of these verticals with their sealed PII, by ping id from the first
        past ``after_ping_id``: (ping id, vertical, sealed), ``limit`` at most."""
        rows = await self.pool.fetch(
            "SELECT ping_id, vertical, pii_key_id, pii FROM pool_offers"
            f" WHERE vertical = ANY($1::text[]) AND {_OPEN} AND pii IS NOT NULL"
            " AND ($2::uuid IS NULL OR ping_id > $2) ORDER BY ping_id LIMIT $3",
            list(verticals),
            uuid.UUID(after_ping_id) if after_ping_id is not None else None,
            limit,
        )
        return [
            (str(r["ping_id"]), r["vertical"], Sealed(r["pii_key_id"], bytes(r["pii"])))
            for r in rows
        ]

    async def withdraw_offer(self, ping_id: str, now: datetime) -> bool:
        """Take one open offer out of the pool now, PII purged (its person was put on a
        suppression list while it waited); False when it was no longer open."""
        row = await self.pool.fetchval(
            "UPDATE pool_offers SET expired_at = $2, pii = NULL, pii_key_id = NULL"
            f" WHERE ping_id = $1 AND {_OPEN} RETURNING 1",
            uuid.UUID(ping_id),
            now,
        )
        return row is not None

    async def pool_stats(self, now: datetime) -> dict[str, PoolStats]:
        """Per vertical, the open offers and the oldest one's entry."""
        rows = await self.pool.fetch(
            "SELECT vertical, count(*) AS offers, min(entered_at) AS oldest FROM pool_offers"
            f" WHERE {_OPEN} AND expires_at > $1 GROUP BY vertical",
            now,
        )
        return {r["vertical"]: PoolStats(r["offers"], r["oldest"]) for r in rows}

    @bounded
    async def sales_of_contacts(
        self, hashes: Sequence[bytes], since: datetime
    ) -> list[tuple[bytes | None, bytes | None, PastSale]]:
        """Sales since ``since`` of anyone with these contact hashes, with the hashes
        (which offer each sale concerns)."""
        if not hashes:
            return []
        rows = await self.pool.fetch(
            "SELECT phone_hash, email_hash, buyer_id, vertical, created_at FROM sales"
            " WHERE (phone_hash = ANY($1::bytea[]) OR email_hash = ANY($1::bytea[]))"
            " AND created_at >= $2",
            list(hashes),
            since,
        )
        return [
            (r["phone_hash"], r["email_hash"],
             PastSale(r["buyer_id"], r["vertical"], r["created_at"]))
            for r in rows
        ]  # fmt: skip


def _offer_values(offer: PoolOffer) -> tuple[Any, ...]:
    terms, sealed = offer.terms, offer.sealed
    return (
        uuid.UUID(offer.ping_id), offer.seller_id, offer.vertical, offer.lead,
        offer.phone_hash, offer.email_hash, terms.start_price_cents, terms.floor_price_cents,
        terms.decay_cents_per_hour, terms.entered_at, terms.expires_at,
        sealed.key_id if sealed is not None else None,
        sealed.blob if sealed is not None else None, offer.sub_id,
    )  # fmt: skip


# Key rotation over SEALED_TABLES. The table and column names come from that constant
# list, never from input; values are parameters.


async def existing_sealed_tables(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    """The SEALED_TABLES this database has."""
    found = []
    for table, key in SEALED_TABLES:
        if await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            found.append((table, key))
    return found


async def sealed_not_under(
    pool: asyncpg.Pool, table: str, key: str, current_id: str, limit: int
) -> list[tuple[str, Sealed]]:
    """Up to ``limit`` sealed values of ``table`` under another key than ``current_id``:
    (the row's key column as text, the sealed value)."""
    _check_sealed(table, key)
    rows = await pool.fetch(
        f"SELECT {key}::text AS id, pii_key_id, pii FROM {table}"
        " WHERE pii IS NOT NULL AND pii_key_id <> $1 LIMIT $2",
        current_id,
        limit,
    )
    return [(r["id"], Sealed(r["pii_key_id"], bytes(r["pii"]))) for r in rows]


async def replace_sealed(
    pool: asyncpg.Pool, table: str, key: str, row_id: str, old: Sealed, new: Sealed
) -> bool:
    """Put ``new`` in place of ``old``; False if the row changed meanwhile (claimed,
    expired, or re-sealed by another rotation)."""
    _check_sealed(table, key)
    done = await pool.execute(
        # By the key column itself (every sealed table's is a uuid ping id), not its text:
        # a cast column would scan the whole table for each value re-sealed.
        f"UPDATE {table} SET pii_key_id = $2, pii = $3"
        f" WHERE {key} = $1::uuid AND pii_key_id = $4 AND pii = $5",
        row_id,
        new.key_id,
        new.blob,
        old.key_id,
        old.blob,
    )
    return bool(done == "UPDATE 1")


async def sealed_key_counts(pool: asyncpg.Pool) -> dict[str, dict[str, int]]:
    """Per sealed table, how many values each key id seals."""
    counts: dict[str, dict[str, int]] = {}
    for table, _ in await existing_sealed_tables(pool):
        rows = await pool.fetch(
            f"SELECT pii_key_id, count(*) AS n FROM {table}"
            " WHERE pii IS NOT NULL GROUP BY pii_key_id"
        )
        counts[table] = {r["pii_key_id"]: r["n"] for r in rows}
    return counts


def _check_sealed(table: str, key: str) -> None:
    if (table, key) not in SEALED_TABLES:
        raise ValueError(f"{table}.{key} is not a sealed table")
