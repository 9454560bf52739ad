"""What the operator API reads: one auction's whole story, and the buyer and seller
reports over the hourly rollups (exchange/ledger/rollups.py), which can also be rebuilt
from the ledger rows here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from exchange.ledger.bounded import LedgerArea
from exchange.ledger.claims import PostResult, read_post
from exchange.ledger.pings import recorded_since
from exchange.ledger.rollups import REBUILD_SQL, ROLLUP_ARGS
from exchange.ledger.rows import (
    BidOutcomeRow,
    PingRow,
    PostAttemptRow,
    column_list,
    from_record,
)
from exchange.ledger.sales import SaleRow, sale_row


@dataclass(frozen=True, slots=True)
class AuctionStory:
    """Everything the ledger holds of one auction: bids best rank first, post attempts
    and sales in their order."""

    ping: PingRow
    bids: list[BidOutcomeRow]
    attempts: list[PostAttemptRow]
    sales: list[SaleRow]
    post: PostResult | None


@dataclass(frozen=True, slots=True)
class BuyerTotals:
    """One buyer's counts and money over a report's range."""

    buyer_id: str
    pings: int
    bids: int
    wins: int
    timeouts: int
    errors: int
    excluded: int
    posts: int
    accepted: int
    sales: int
    revenue_cents: int
    returns: int
    credit_cents: int
    breaches: int = 0  # rejects that broke a binding bid


@dataclass(frozen=True, slots=True)
class SellerTotals:
    """One seller's counts and money over a report's range."""

    seller_id: str
    pings: int
    bids: int
    posts: int
    sales: int
    revenue_cents: int
    payout_cents: int
    returns: int
    reversed_cents: int
    # Pings with a lead score, and the sum of their scores (exchange/core/scoring.py).
    scored: int = 0
    score_sum: int = 0


# ``$2`` (pings.recorded_since) spares a look in the day partitions older than the ping.
_STORY_PING = f"SELECT {column_list(PingRow)} FROM pings WHERE ping_id = $1 AND created_at >= $2"
_STORY_BIDS = (
    f"SELECT {column_list(BidOutcomeRow)} FROM bid_outcomes WHERE ping_id = $1"
    " AND created_at >= $2 ORDER BY rank NULLS LAST, buyer_id"
)
_STORY_ATTEMPTS = (
    f"SELECT {column_list(PostAttemptRow)} FROM post_attempts WHERE ping_id = $1"
    " AND created_at >= $2 ORDER BY attempt"
)
_STORY_SALES = "SELECT * FROM sales WHERE ping_id = $1 ORDER BY sale_seq"


class Reports(LedgerArea):
    async def auction_story(self, ping_id: str) -> AuctionStory | None:
        pid = uuid.UUID(ping_id)
        since = recorded_since(pid)
        async with self.pool.acquire() as conn:
            ping = await conn.fetchrow(_STORY_PING, pid, since)
            if ping is None:
                return None
            bids = await conn.fetch(_STORY_BIDS, pid, since)
            attempts = await conn.fetch(_STORY_ATTEMPTS, pid, since)
            sales = await conn.fetch(_STORY_SALES, pid)
            post = await read_post(conn, pid)
        return AuctionStory(
            ping=from_record(PingRow, ping),
            bids=[from_record(BidOutcomeRow, r) for r in bids],
            attempts=[from_record(PostAttemptRow, r) for r in attempts],
            sales=[sale_row(r) for r in sales],
            post=post,
        )

    async def buyer_report(self, since: datetime, until: datetime) -> list[BuyerTotals]:
        """Per-buyer totals; ``since`` and ``until`` must be whole hours (the rollups')."""
        return [BuyerTotals(**r) for r in await self.pool.fetch(_BUYER_REPORT, since, until)]

    async def buyer_latency_buckets(
        self, since: datetime, until: datetime
    ) -> dict[str, dict[int, int]]:
        """Per buyer, its ping latency histogram over the range (rollups.LATENCY_EDGES_US)."""
        found: dict[str, dict[int, int]] = {}
        for r in await self.pool.fetch(_BUYER_LATENCY, since, until):
            found.setdefault(r["buyer_id"], {})[r["bucket"]] = r["n"]
        return found

    async def seller_report(self, since: datetime, until: datetime) -> list[SellerTotals]:
        """Per-seller totals; ``since`` and ``until`` must be whole hours (the rollups')."""
        return [SellerTotals(**r) for r in await self.pool.fetch(_SELLER_REPORT, since, until)]

    async def scores_by_sub_id(
        self, since: datetime, until: datetime
    ) -> dict[tuple[str, str | None], tuple[int, int]]:
        """Per seller and sub-ID (None: pings that named none), how many pings in
        [since, until) were scored and the sum of their scores."""
        rows = await self.pool.fetch(_SCORES_BY_SUB_ID, since, until)
        return {(r["seller_id"], r["sub_id"]): (r["scored"], r["score_sum"]) for r in rows}

    async def rebuild_rollups(self) -> None:
        """Recompute every hourly rollup from the ledger rows (after a bulk load or a
        restore); the batch writer keeps them current otherwise."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "TRUNCATE buyer_hourly, buyer_latency_hourly, seller_hourly,"
                " buyer_acceptance_daily",
                timeout=3600,
            )
            for table, statement in REBUILD_SQL.items():
                await conn.execute(statement, *ROLLUP_ARGS.get(table, ()), timeout=3600)


_BUYER_REPORT = """
WITH h AS (
    SELECT buyer_id, sum(pings)::bigint AS pings, sum(bids)::bigint AS bids,
           sum(wins)::bigint AS wins, sum(timeouts)::bigint AS timeouts,
           sum(errors)::bigint AS errors, sum(excluded)::bigint AS excluded,
           sum(posts)::bigint AS posts, sum(accepted)::bigint AS accepted,
           sum(breaches)::bigint AS breaches
    FROM buyer_hourly WHERE hour >= $1 AND hour < $2 GROUP BY buyer_id
), s AS (
    SELECT buyer_id, count(*) AS sales, sum(price_cents)::bigint AS revenue_cents
    FROM sales WHERE created_at >= $1 AND created_at < $2 GROUP BY buyer_id
), r AS (
    SELECT buyer_id, count(*) AS returns, sum(credit_cents)::bigint AS credit_cents
    FROM returns WHERE created_at >= $1 AND created_at < $2 GROUP BY buyer_id
)
SELECT coalesce(h.buyer_id, s.buyer_id, r.buyer_id) AS buyer_id,
       coalesce(h.pings, 0) AS pings, coalesce(h.bids, 0) AS bids, coalesce(h.wins, 0) AS wins,
       coalesce(h.timeouts, 0) AS timeouts, coalesce(h.errors, 0) AS errors,
       coalesce(h.excluded, 0) AS excluded,
       coalesce(h.posts, 0) AS posts, coalesce(h.accepted, 0) AS accepted,
       coalesce(s.sales, 0) AS sales, coalesce(s.revenue_cents, 0) AS revenue_cents,
       coalesce(r.returns, 0) AS returns, coalesce(r.credit_cents, 0) AS credit_cents,
       coalesce(h.breaches, 0) AS breaches
FROM h FULL JOIN s ON s.buyer_id = h.buyer_id
       FULL JOIN r ON r.buyer_id = coalesce(h.buyer_id, s.buyer_id)
ORDER BY 1
"""

_SCORES_BY_SUB_ID = """
SELECT seller_id, sub_id, count(*) AS scored, sum(score)::bigint AS score_sum
FROM pings WHERE created_at >= $1 AND created_at < $2 AND score IS NOT NULL
GROUP BY seller_id, sub_id
"""

_BUYER_LATENCY = """
SELECT buyer_id, bucket, sum(n)::bigint AS n FROM buyer_latency_hourly
WHERE hour >= $1 AND hour < $2 GROUP BY buyer_id, bucket
"""

_SELLER_REPORT = """
WITH h AS (
    SELECT seller_id, sum(pings)::bigint AS pings, sum(bids)::bigint AS bids,
           sum(scored)::bigint AS scored, sum(score_sum)::bigint AS score_sum
    FROM seller_hourly WHERE hour >= $1 AND hour < $2 GROUP BY seller_id
), s AS (
    SELECT seller_id, count(*) AS sales, sum(price_cents)::bigint AS revenue_cents,
           sum(payout_cents)::bigint AS payout_cents
    FROM sales WHERE created_at >= $1 AND created_at < $2 GROUP BY seller_id
), o AS (
    SELECT seller_id, count(*) AS posts FROM posts
    WHERE claimed_at >= $1 AND claimed_at < $2 GROUP BY seller_id
), r AS (
    SELECT seller_id, count(*) AS returns, sum(payout_reversal_cents)::bigint AS reversed_cents
    FROM returns WHERE created_at >= $1 AND created_at < $2 GROUP BY seller_id
)
SELECT coalesce(h.seller_id, s.seller_id, o.seller_id, r.seller_id) AS seller_id,
       coalesce(h.pings, 0) AS pings, coalesce(h.bids, 0) AS bids,
       coalesce(o.posts, 0) AS posts, coalesce(s.sales, 0) AS sales,
       coalesce(s.revenue_cents, 0) AS revenue_cents,
       coalesce(s.payout_cents, 0) AS payout_cents,
       coalesce(r.returns, 0) AS returns, coalesce(r.reversed_cents, 0) AS reversed_cents,
       coalesce(h.scored, 0) AS scored, coalesce(h.score_sum, 0) AS score_sum
FROM h FULL JOIN s ON s.seller_id = h.seller_id
       FULL JOIN o ON o.seller_id = coalesce(h.seller_id, s.seller_id)
       FULL JOIN r ON r.seller_id = coalesce(h.seller_id, s.seller_id, o.seller_id)
ORDER BY 1
"""
