"""Buyers' caps in the ledger: a sale reserved in every cap window at once, or in none
(the ledger's ``reserve_cap_windows``, migration 0005), released when the buyer declines,
and the counts the auction's screening starts from."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from exchange.core.caps import CapWindow
from exchange.ledger.bounded import LedgerArea, bounded


class Caps(LedgerArea):
    @bounded
    async def reserve_caps(
        self, buyer_id: str, windows: Sequence[CapWindow], price_cents: int
    ) -> str | None:
        """Count one sale at ``price_cents`` in every window, atomically and only if no
        limit breaks; returns None when reserved, else the cap that is reached. One
        round trip (the ledger's ``reserve_cap_windows``, migration 0005)."""
        limits = [w.limit for w in windows]
        reached = await self.pool.fetchval(
            "SELECT reserve_cap_windows($1, $2::text[], $3::timestamptz[], $4::integer[],"
            " $5::bigint[], $6)",
            buyer_id,
            [limit.period for limit in limits],
            [w.start for w in windows],
            [limit.max_count for limit in limits],
            [limit.max_spend_cents for limit in limits],
            price_cents,
        )
        return f"{limits[reached - 1].describe()} reached" if reached else None

    @bounded
    async def release_caps(
        self, buyer_id: str, windows: Sequence[CapWindow], price_cents: int
    ) -> None:
        """Take back a reserved sale from every window, in one statement."""
        await self.pool.execute(
            "UPDATE cap_counters c SET sales = c.sales - 1, spent_cents = c.spent_cents - $4"
            " FROM unnest($2::text[], $3::timestamptz[]) AS w (period, period_start)"
            " WHERE c.buyer_id = $1 AND c.period = w.period AND c.period_start = w.period_start",
            buyer_id,
            [w.limit.period for w in windows],
            [w.start for w in windows],
            price_cents,
        )

    async def cap_counts(self, since: datetime) -> dict[tuple[str, str, datetime], tuple[int, int]]:
        """Sales and spend per (buyer, period, window start), for windows from ``since``."""
        rows = await self.pool.fetch(
            "SELECT buyer_id, period, period_start, sales, spent_cents FROM cap_counters"
            " WHERE period_start >= $1",
            since,
        )
        return {
            (r["buyer_id"], r["period"], r["period_start"]): (r["sales"], r["spent_cents"])
            for r in rows
        }
