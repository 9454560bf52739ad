"""Returns in the ledger: a buyer's sale found for its return, and the return itself
(the buyer's credit and the seller's payout reversal), at most once per sale."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from exchange.ledger.bounded import LedgerArea, bounded
from exchange.ledger.sales import SaleRow, sale_row


@dataclass(frozen=True, slots=True)
class RecordedSale:
    """A sale as the ledger holds it, and its return when it has one."""

    sale_id: int
    sale: SaleRow
    return_id: int | None = None
    returned_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReturnRow:
    """One return as the ledger holds it (the auction record shows each)."""

    buyer_id: str
    credit_cents: int
    payout_reversal_cents: int
    reason: str
    created_at: datetime


class Returns(LedgerArea):
    @bounded
    async def sale_for_return(self, ping_id: str, buyer_id: str) -> RecordedSale | None:
        row = await self.pool.fetchrow(
            "SELECT s.*, r.return_id, r.created_at AS returned_at FROM sales s"
            " LEFT JOIN returns r ON r.sale_id = s.sale_id"
            " WHERE s.ping_id = $1 AND s.buyer_id = $2",
            uuid.UUID(ping_id),
            buyer_id,
        )
        if row is None:
            return None
        return RecordedSale(row["sale_id"], sale_row(row), row["return_id"], row["returned_at"])

    @bounded
    async def record_return(self, found: RecordedSale, reason: str, at: datetime) -> bool:
        """Record the credit and the payout reversal; False if already returned."""
        sale = found.sale
        done = await self.pool.fetchval(
            "INSERT INTO returns (sale_id, ping_id, buyer_id, seller_id, vertical, credit_cents,"
            " payout_reversal_cents, reason, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (sale_id) DO NOTHING RETURNING return_id",
            found.sale_id,
            uuid.UUID(sale.ping_id),
            sale.buyer_id,
            sale.seller_id,
            sale.vertical,
            sale.price_cents,
            sale.payout_cents,
            reason,
            at,
        )
        return done is not None

    async def returns_of(self, ping_id: str) -> list[ReturnRow]:
        """Every return of the lead's sales, oldest first."""
        rows = await self.pool.fetch(
            "SELECT buyer_id, credit_cents, payout_reversal_cents, reason, created_at"
            " FROM returns WHERE ping_id = $1 ORDER BY created_at, return_id",
            uuid.UUID(ping_id),
        )
        return [ReturnRow(**r) for r in rows]
