"""The seller report per sub-ID (SPEC section 11, ``GET /v1/reports/sellers?by=sub_id``):
per seller and traffic source, the seller report's figures.

The SQL is the database function ``seller_sub_id_report`` (migration 0022), so the API
and any SQL reader (a dashboard's PostgreSQL data source) read the same totals, and a
read-only role needs EXECUTE on that function alone. Sub-IDs are
unbounded, so these figures come from the ledger, never from metric labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from exchange.ledger.bounded import LedgerArea

SUB_ID_REPORT_SQL = "SELECT * FROM seller_sub_id_report($1, $2)"


@dataclass(frozen=True, slots=True)
class SubIdTotals:
    """One seller's counts and money from one sub-ID (None: pings that named none)."""

    seller_id: str
    sub_id: str | None
    pings: int
    bids: int
    posts: int
    sales: int
    revenue_cents: int
    payout_cents: int
    returns: int
    reversed_cents: int


class SubIds(LedgerArea):
    async def seller_sub_id_report(self, since: datetime, until: datetime) -> list[SubIdTotals]:
        """Per seller and sub-ID, ordered by seller then sub-ID (none first)."""
        rows = await self.pool.fetch(SUB_ID_REPORT_SQL, since, until)
        return [SubIdTotals(**r) for r in rows]
