"""Pings in the ledger: reading one back (a post served by another process than the
ping's, or after a restart), and binding a seller's external id to the first ping made
with it. Ping rows are written by the batch writer (exchange/ledger/batch.py)."""

from __future__ import annotations

import uuid

from exchange.ledger.bounded import LedgerArea, bounded
from exchange.ledger.rows import PingRow, column_list, from_record

_FETCH_PING = f"SELECT {column_list(PingRow)} FROM pings WHERE ping_id = $1"


class Pings(LedgerArea):
    @bounded
    async def fetch_ping(self, ping_id: str) -> PingRow | None:
        row = await self.pool.fetchrow(_FETCH_PING, uuid.UUID(ping_id))
        return from_record(PingRow, row) if row is not None else None

    @bounded
    async def claim_external_id(self, seller_id: str, external_id: str, ping_id: str) -> str:
        """Bind ``external_id`` to ``ping_id`` unless already bound; returns the bound ping id."""
        owner = uuid.UUID(ping_id)
        async with self.pool.acquire() as conn:
            # Two statements, not one: after waiting on a concurrent insert of the same key,
            # the SELECT needs a fresh snapshot to see the winner's row.
            won = await conn.fetchval(
                "INSERT INTO external_ids (seller_id, external_id, ping_id) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING ping_id",
                seller_id,
                external_id,
                owner,
            )
            if won is not None:
                return ping_id
            bound = await conn.fetchval(
                "SELECT ping_id FROM external_ids WHERE seller_id = $1 AND external_id = $2",
                seller_id,
                external_id,
            )
        return str(bound)
