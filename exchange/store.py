"""The ledger in PostgreSQL: migrations, the money writes, and the reads behind the APIs.

Plain SQL with parameters. What must never break is enforced by the database itself:
``sales (ping_id, sale_seq)`` is unique, and a post is claimed with an insert that only
one caller can win. Non-money rows (pings, bid outcomes, post attempts) arrive through
the batch writer; the sale and the post result are written here, synchronously, before
the seller hears the answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import asyncpg
import orjson

from exchange.outcomes import PostStatus

MIGRATIONS_PACKAGE = "exchange.migrations"


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary jsonb (a version byte, then the JSON text): COPY needs a binary codec.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=10,
        max_inactive_connection_lifetime=60,
    )
    assert pool is not None
    return pool


def _migration_files() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text()))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; returns their names.

    An advisory lock serialises concurrent starters (several workers, several nodes).
    """
    applied: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(72150001)")
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in _migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        name,
                    )
                applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(72150001)")
    return applied


@dataclass(frozen=True, slots=True)
class PostResult:
    ping_id: str
    status: str  # in_progress, sold, unsold
    price_cents: int | None
    payout_cents: int | None
    reason: str | None
    claimed_at: datetime


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


class SaleConflict(Exception):
    """The sale slot was already taken: the lead is sold."""


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def ping(self) -> None:
        async with self.pool.acquire(timeout=1) as conn:
            await conn.fetchval("SELECT 1")

    # -- pings ---------------------------------------------------------------------------

    async def fetch_ping(self, ping_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT * FROM pings WHERE ping_id = $1", uuid.UUID(ping_id)
        )

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

    # -- posts and sales -----------------------------------------------------------------

    async def claim_post(self, ping_id: str, seller_id: str, now: datetime) -> PostResult | None:
        """Claim the right to post this ping. None: claimed by us. Else the existing claim."""
        pid = uuid.UUID(ping_id)
        async with self.pool.acquire() as conn:
            claimed = await conn.fetchval(
                "INSERT INTO posts (ping_id, seller_id, status, claimed_at)"
                " VALUES ($1, $2, 'in_progress', $3) ON CONFLICT DO NOTHING RETURNING 1",
                pid,
                seller_id,
                now,
            )
            if claimed:
                return None
            row = await conn.fetchrow("SELECT * FROM posts WHERE ping_id = $1", pid)
        assert row is not None
        return _post_result(row)

    async def fetch_post(self, ping_id: str) -> PostResult | None:
        row = await self.pool.fetchrow("SELECT * FROM posts WHERE ping_id = $1", uuid.UUID(ping_id))
        return _post_result(row) if row is not None else None

    async def record_sale(self, sale: SaleRow, finished_at: datetime) -> None:
        """Commit the sale and the post's result together, or raise SaleConflict."""
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    "INSERT INTO sales (ping_id, sale_seq, seller_id, buyer_id, vertical,"
                    " price_cents, payout_cents, bid_id, buyer_lead_id, created_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
                )
            except asyncpg.UniqueViolationError:
                raise SaleConflict(sale.ping_id) from None
            updated = await conn.execute(
                "UPDATE posts SET status = 'sold', price_cents = $2, payout_cents = $3,"
                " reason = NULL, finished_at = $4 WHERE ping_id = $1 AND status = 'in_progress'",
                uuid.UUID(sale.ping_id),
                sale.price_cents,
                sale.payout_cents,
                finished_at,
            )
            if updated != "UPDATE 1":
                # The claim was given up (declared interrupted) and the seller may have been
                # told "unsold": roll the sale back so the ledger matches what was said.
                raise SaleConflict(sale.ping_id)

    async def finish_unsold(self, ping_id: str, reason: str, finished_at: datetime) -> bool:
        """Close an in-progress post as unsold; False if it was no longer in progress."""
        done = await self.pool.execute(
            "UPDATE posts SET status = $2, reason = $3, finished_at = $4"
            " WHERE ping_id = $1 AND status = 'in_progress'",
            uuid.UUID(ping_id),
            PostStatus.UNSOLD.value,
            reason,
            finished_at,
        )
        return bool(done == "UPDATE 1")

    # -- operator reads ------------------------------------------------------------------

    async def auction_story(self, ping_id: str) -> dict[str, Any] | None:
        pid = uuid.UUID(ping_id)
        async with self.pool.acquire() as conn:
            ping = await conn.fetchrow("SELECT * FROM pings WHERE ping_id = $1", pid)
            if ping is None:
                return None
            bids = await conn.fetch(
                "SELECT buyer_id, outcome, price_cents, latency_us, rank, reason"
                " FROM bid_outcomes WHERE ping_id = $1"
                " ORDER BY rank NULLS LAST, buyer_id",
                pid,
            )
            attempts = await conn.fetch(
                "SELECT attempt, buyer_id, outcome, price_cents, latency_us, reason,"
                " buyer_lead_id, created_at FROM post_attempts WHERE ping_id = $1"
                " ORDER BY attempt",
                pid,
            )
            sales = await conn.fetch(
                "SELECT sale_seq, buyer_id, price_cents, payout_cents, bid_id,"
                " buyer_lead_id, created_at FROM sales WHERE ping_id = $1 ORDER BY sale_seq",
                pid,
            )
            post = await conn.fetchrow("SELECT * FROM posts WHERE ping_id = $1", pid)
        return {
            "ping": dict(ping),
            "bids": [dict(r) for r in bids],
            "attempts": [dict(r) for r in attempts],
            "sales": [dict(r) for r in sales],
            "post": dict(post) if post is not None else None,
        }

    async def buyer_report(self, since: datetime, until: datetime) -> Sequence[asyncpg.Record]:
        rows: Sequence[asyncpg.Record] = await self.pool.fetch(_BUYER_REPORT, since, until)
        return rows

    async def seller_report(self, since: datetime, until: datetime) -> Sequence[asyncpg.Record]:
        rows: Sequence[asyncpg.Record] = await self.pool.fetch(_SELLER_REPORT, since, until)
        return rows


def _post_result(row: asyncpg.Record) -> PostResult:
    return PostResult(
        ping_id=str(row["ping_id"]),
        status=row["status"],
        price_cents=row["price_cents"],
        payout_cents=row["payout_cents"],
        reason=row["reason"],
        claimed_at=row["claimed_at"],
    )


_BUYER_REPORT = """
WITH b AS (
    SELECT buyer_id,
           count(*) FILTER (WHERE outcome NOT IN ('filtered', 'capped', 'off_schedule',
                                                  'duplicate', 'seller_blocked')) AS pings,
           count(*) FILTER (WHERE outcome IN ('bid', 'below_floor')) AS bids,
           count(*) FILTER (WHERE rank = 1) AS wins,
           count(*) FILTER (WHERE outcome = 'timeout') AS timeouts,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_us)
               FILTER (WHERE latency_us IS NOT NULL AND latency_us > 0) AS p95_latency_us
    FROM bid_outcomes WHERE created_at >= $1 AND created_at < $2 GROUP BY buyer_id
), a AS (
    SELECT buyer_id, count(*) AS posts,
           count(*) FILTER (WHERE outcome = 'accepted') AS accepted
    FROM post_attempts WHERE created_at >= $1 AND created_at < $2 GROUP BY buyer_id
), s AS (
    SELECT buyer_id, count(*) AS sales, sum(price_cents) AS revenue_cents
    FROM sales WHERE created_at >= $1 AND created_at < $2 GROUP BY buyer_id
)
SELECT coalesce(b.buyer_id, a.buyer_id, s.buyer_id) AS buyer_id,
       coalesce(b.pings, 0) AS pings, coalesce(b.bids, 0) AS bids, coalesce(b.wins, 0) AS wins,
       coalesce(s.sales, 0) AS sales, coalesce(s.revenue_cents, 0) AS revenue_cents,
       coalesce(a.posts, 0) AS posts, coalesce(a.accepted, 0) AS accepted,
       coalesce(b.timeouts, 0) AS timeouts, b.p95_latency_us
FROM b FULL JOIN a ON a.buyer_id = b.buyer_id
       FULL JOIN s ON s.buyer_id = coalesce(b.buyer_id, a.buyer_id)
ORDER BY 1
"""

_SELLER_REPORT = """
WITH p AS (
    SELECT seller_id, count(*) AS pings, count(*) FILTER (WHERE status = 'bid') AS bids
    FROM pings WHERE created_at >= $1 AND created_at < $2 GROUP BY seller_id
), s AS (
    SELECT seller_id, count(*) AS sales, sum(price_cents) AS revenue_cents,
           sum(payout_cents) AS payout_cents
    FROM sales WHERE created_at >= $1 AND created_at < $2 GROUP BY seller_id
), o AS (
    SELECT seller_id, count(*) AS posts FROM posts
    WHERE claimed_at >= $1 AND claimed_at < $2 GROUP BY seller_id
)
SELECT coalesce(p.seller_id, s.seller_id, o.seller_id) AS seller_id,
       coalesce(p.pings, 0) AS pings, coalesce(p.bids, 0) AS bids,
       coalesce(o.posts, 0) AS posts, coalesce(s.sales, 0) AS sales,
       coalesce(s.revenue_cents, 0) AS revenue_cents,
       coalesce(s.payout_cents, 0) AS payout_cents
FROM p FULL JOIN s ON s.seller_id = p.seller_id
       FULL JOIN o ON o.seller_id = coalesce(p.seller_id, s.seller_id)
ORDER BY 1
"""
