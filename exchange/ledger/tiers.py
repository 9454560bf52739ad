"""Round-robin tiers in the ledger: the last winner of each tier, shared by every
exchange process."""

from __future__ import annotations

from datetime import datetime

from exchange.ledger.bounded import LedgerArea, bounded


class Tiers(LedgerArea):
    @bounded
    async def last_winners(self, vertical: str) -> dict[int, str]:
        rows = await self.pool.fetch(
            "SELECT tier, last_buyer_id FROM tier_state WHERE vertical = $1", vertical
        )
        return {r["tier"]: r["last_buyer_id"] for r in rows}

    @bounded
    async def set_last_winner(self, vertical: str, tier: int, buyer_id: str, at: datetime) -> None:
        await self.pool.execute(
            "INSERT INTO tier_state (vertical, tier, last_buyer_id, updated_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (vertical, tier) DO UPDATE"
            " SET last_buyer_id = EXCLUDED.last_buyer_id, updated_at = EXCLUDED.updated_at",
            vertical,
            tier,
            buyer_id,
            at,
        )
