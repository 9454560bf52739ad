"""Duplicate leads in the ledger: the recent sales of a person, found by the keyed hashes
of their phone and email (exchange.core.dedupe decides what counts as a duplicate)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from exchange.core.dedupe import PastSale
from exchange.ledger.bounded import LedgerArea, bounded


class Duplicates(LedgerArea):
    @bounded
    async def recent_buyers_of(self, hashes: Sequence[bytes], since: datetime) -> list[PastSale]:
        """Sales since ``since`` of a lead with any of these contact hashes."""
        if not hashes:
            return []
        rows = await self.pool.fetch(
            "SELECT buyer_id, vertical, created_at FROM sales"
            " WHERE (phone_hash = ANY($1::bytea[]) OR email_hash = ANY($1::bytea[]))"
            " AND created_at >= $2",
            list(hashes),
            since,
        )
        return [PastSale(r["buyer_id"], r["vertical"], r["created_at"]) for r in rows]
