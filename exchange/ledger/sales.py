"""The money: a sale, and the post's final result, written synchronously before the
seller hears the answer.

What must never break is enforced by the database itself: ``sales (ping_id, sale_seq)``
and ``sales (ping_id, buyer_id)`` are unique, and a sale goes in only while its post's
claim (exchange/ledger/claims.py) is in progress.

A sale also keeps the buyer's ``redirect_url`` (cleaned: exchange/core/redirects.py), so
that the seller's answer rebuilt from the ledger (exchange/ledger/claims.py,
``Claims.fetch_post``) carries the redirect the first answer did.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exchange.core.outcomes import ClaimStatus
from exchange.ledger.bounded import LedgerArea, bounded
from exchange.ledger.words import sql_word

_IN_PROGRESS = sql_word(ClaimStatus.IN_PROGRESS)


@dataclass(frozen=True, slots=True)
class PostTotals:
    """A post's final result: the sum over its sales (one for an exclusive lead)."""

    price_cents: int
    payout_cents: int


@dataclass(frozen=True, slots=True)
class SaleRow:
    ping_id: str
    seller_id: str
    buyer_id: str
    vertical: str
    price_cents: int
    payout_cents: int
    bid_id: str | None
    buyer_lead_id: str | None
    created_at: datetime
    sale_seq: int = 1
    phone_hash: bytes | None = None
    email_hash: bytes | None = None
    redirect_url: str | None = None  # where the buyer wants the consumer sent


def sale_row(record: Mapping[str, Any]) -> SaleRow:
    """A sale read back from a ``sales`` row."""
    return SaleRow(
        ping_id=str(record["ping_id"]),
        seller_id=record["seller_id"],
        buyer_id=record["buyer_id"],
        vertical=record["vertical"],
        price_cents=record["price_cents"],
        payout_cents=record["payout_cents"],
        bid_id=record["bid_id"],
        buyer_lead_id=record["buyer_lead_id"],
        created_at=record["created_at"],
        sale_seq=record["sale_seq"],
        phone_hash=record["phone_hash"],
        email_hash=record["email_hash"],
        redirect_url=record["redirect_url"],
    )


class SaleConflict(Exception):
    """The sale slot was already taken, or the post's claim is no longer held."""


# One sale in one statement (one round trip, atomic on its own): the post's claim is
# locked first, so a claim declared interrupted meanwhile (its seller may have been told
# "unsold") gains no sale; the sale goes in only while the claim is in progress, and a
# taken slot (the same sequence number or buyer) inserts nothing; with $14 the post's
# "sold" result is written with it. ``sold`` says whether the sale went in.
_RECORD_SALE = f"""
WITH claim AS (
    SELECT status FROM posts WHERE ping_id = $1 FOR UPDATE
), sale AS (
    INSERT INTO sales (ping_id, sale_seq, seller_id, buyer_id, vertical, price_cents,
                       payout_cents, bid_id, buyer_lead_id, created_at, phone_hash, email_hash,
                       redirect_url)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13
    FROM claim WHERE status = {_IN_PROGRESS}
    ON CONFLICT DO NOTHING
    RETURNING 1
), closed AS (
    UPDATE posts SET status = {sql_word(ClaimStatus.SOLD)}, price_cents = $15,
                     payout_cents = $16, reason = NULL, finished_at = $17
    WHERE ping_id = $1 AND $14 AND EXISTS (SELECT 1 FROM sale)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM sale) AS sold
"""

_FINISH_SOLD = f"""
UPDATE posts SET status = {sql_word(ClaimStatus.SOLD)}, price_cents = $2, payout_cents = $3,
                 reason = NULL, finished_at = $4
WHERE ping_id = $1 AND status = {_IN_PROGRESS}
"""
_FINISH_UNSOLD = f"""
UPDATE posts SET status = {sql_word(ClaimStatus.UNSOLD)}, reason = $2, finished_at = $3
WHERE ping_id = $1 AND status = {_IN_PROGRESS}
"""


def sale_values(sale: SaleRow) -> tuple[Any, ...]:
    """A sale's columns, $1 to $13 of every statement inserting into ``sales``."""
    return (
        uuid.UUID(sale.ping_id),
        sale.sale_seq,
        sale.seller_id,
        sale.buyer_id,
        sale.vertical,
        sale.price_cents,
        sale.payout_cents,
        sale.bid_id,
        sale.buyer_lead_id,
        sale.created_at,
        sale.phone_hash,
        sale.email_hash,
        sale.redirect_url,
    )


class Sales(LedgerArea):
    @bounded
    async def record_sale(
        self, sale: SaleRow, finished_at: datetime, totals: PostTotals | None
    ) -> None:
        """Commit one sale, and with ``totals`` the post's final "sold" result in the same
        statement; raise SaleConflict if the slot is taken or the claim was given up."""
        row = await self.pool.fetchrow(
            _RECORD_SALE,
            *sale_values(sale),
            totals is not None,
            totals.price_cents if totals is not None else None,
            totals.payout_cents if totals is not None else None,
            finished_at,
        )
        if row is None or not row["sold"]:
            raise SaleConflict(sale.ping_id)

    @bounded
    async def finish_sold(self, ping_id: str, totals: PostTotals, finished_at: datetime) -> None:
        """Close a shared lead's post after its walk: sold, with the sums of its sales."""
        await self.pool.execute(
            _FINISH_SOLD, uuid.UUID(ping_id), totals.price_cents, totals.payout_cents, finished_at
        )

    @bounded
    async def finish_unsold(self, ping_id: str, reason: str, finished_at: datetime) -> bool:
        """Close an in-progress post as unsold; False if it was no longer in progress."""
        done = await self.pool.execute(_FINISH_UNSOLD, uuid.UUID(ping_id), reason, finished_at)
        return bool(done == "UPDATE 1")
