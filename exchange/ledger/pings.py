"""Pings in the ledger: reading one back (a post served by another process than the
ping's, or after a restart), and binding a seller's external id to the first ping made
with it. Ping rows are written by the batch writer (exchange/ledger/batch.py).

``pings`` is partitioned by day on ``created_at`` (migration 0011), so a read by ping id
alone would look in every day's partition. A ping id is time-ordered (UUID version 7,
exchange/auction/context.py) and its rows are never recorded before the id was made, so
``recorded_since`` gives a time bound that leaves PostgreSQL the few newest partitions
to look in (any id of another version reads them all).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from exchange.ledger.bounded import LedgerArea, bounded
from exchange.ledger.rows import PingRow, column_list, from_record

_FETCH_PING = f"SELECT {column_list(PingRow)} FROM pings WHERE ping_id = $1 AND created_at >= $2"
# Slack under a ping id's own time: its rows' created_at is the exchange clock's reading
# just after the id was made, and a day covers any clock step in between.
_ID_TIME_SLACK = timedelta(days=1)
_EVER = datetime(1, 1, 1, tzinfo=UTC)


def recorded_since(ping_id: uuid.UUID) -> datetime:
    """A time no ledger row of ``ping_id`` (its ping, bid outcomes and post attempts) is
    older than: a day before the time in a version 7 id; for any other, the beginning."""
    if ping_id.version != 7:
        return _EVER
    return datetime.fromtimestamp((ping_id.int >> 80) / 1000, UTC) - _ID_TIME_SLACK


class Pings(LedgerArea):
    @bounded
    async def fetch_ping(self, ping_id: str) -> PingRow | None:
        key = uuid.UUID(ping_id)
        row = await self.pool.fetchrow(_FETCH_PING, key, recorded_since(key))
        return from_record(PingRow, row) if row is not None else None

    @bounded
    async def claim_external_id(
        self, seller_id: str, external_id: str, ping_id: str, now: datetime
    ) -> tuple[str, datetime]:
        """Bind ``external_id`` to ``ping_id`` at ``now`` unless already bound; returns the
        bound ping id and when it was bound. Its auction is recorded under that time
        (the rows' ``created_at``, part of their keys in the partitioned ledger), so an
        auction run again under the same id writes the very keys of the first and
        cannot record a second auction beside it."""
        owner = uuid.UUID(ping_id)
        async with self.pool.acquire() as conn:
            # Two statements, not one: after waiting on a concurrent insert of the same key,
            # the SELECT needs a fresh snapshot to see the winner's row.
            won = await conn.fetchval(
                "INSERT INTO external_ids (seller_id, external_id, ping_id, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING ping_id",
                seller_id,
                external_id,
                owner,
                now,
            )
            if won is not None:
                return ping_id, now
            bound = await conn.fetchrow(
                "SELECT ping_id, created_at FROM external_ids"
                " WHERE seller_id = $1 AND external_id = $2",
                seller_id,
                external_id,
            )
        return str(bound["ping_id"]), bound["created_at"]
