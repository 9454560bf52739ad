"""Hourly rollups of batched ledger rows: the SQL that adds a batch's rows to them, run by
the batch writer in the same statement that inserts the rows (exchange/ledger/batch.py), and
the bucket arithmetic the reports read them with.

The latency histogram uses log-spaced edges (x1.15), so a p95 read from it is within 15%
of the exact value; PostgreSQL's width_bucket over the same edges is ``latency_bucket``.
"""

from __future__ import annotations

import bisect
from datetime import datetime

# Upper edges in microseconds: 100 us .. ~60 s; the last bucket is open-ended.
LATENCY_EDGES_US: tuple[int, ...] = tuple(int(100 * 1.15**i) for i in range(96))

# What each ledger table's rows add to the hourly rollups, as the tail of one statement
# whose CTE ``new`` holds the rows: the batch writer's rows (INSERT_SQL) or every row
# there is (REBUILD_SQL), so the batches and a rebuild count by the same rules. The
# outcome words are those of exchange/core/outcomes.py, as in the ledger's CHECK constraints.
# Upserts run in key order, so two writers (two exchange processes) never deadlock on
# rollup rows. ``$1`` of the bid outcomes' tail is the latency bucket edges.
_ROLLUP = {
    "pings": """
INSERT INTO seller_hourly AS h (seller_id, hour, pings, bids)
SELECT seller_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*), count(*) FILTER (WHERE status = 'bid')
FROM new GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (seller_id, hour) DO UPDATE SET pings = h.pings + EXCLUDED.pings,
                                            bids = h.bids + EXCLUDED.bids
""",
    "bid_outcomes": """
, buyers AS (
    INSERT INTO buyer_hourly AS h (buyer_id, hour, pings, bids, wins, timeouts, errors,
                                   excluded)
    SELECT buyer_id, hour,
           count(*) FILTER (WHERE outcome IN ('bid', 'no_bid', 'timeout', 'error',
                                              'below_floor')),
           count(*) FILTER (WHERE outcome IN ('bid', 'below_floor')),
           count(*) FILTER (WHERE rank = 1),
           count(*) FILTER (WHERE outcome = 'timeout'),
           count(*) FILTER (WHERE outcome = 'error'),
           count(*) FILTER (WHERE outcome NOT IN ('bid', 'no_bid', 'timeout', 'error',
                                                  'below_floor'))
    FROM new GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (buyer_id, hour) DO UPDATE SET
        pings = h.pings + EXCLUDED.pings, bids = h.bids + EXCLUDED.bids,
        wins = h.wins + EXCLUDED.wins, timeouts = h.timeouts + EXCLUDED.timeouts,
        errors = h.errors + EXCLUDED.errors, excluded = h.excluded + EXCLUDED.excluded
)
INSERT INTO buyer_latency_hourly AS h (buyer_id, hour, bucket, n)
SELECT buyer_id, hour, width_bucket(latency_us, $1::integer[]), count(*)
FROM new
WHERE latency_us > 0 AND outcome IN ('bid', 'no_bid', 'timeout', 'error', 'below_floor')
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (buyer_id, hour, bucket) DO UPDATE SET n = h.n + EXCLUDED.n
""",
    "post_attempts": """
INSERT INTO buyer_hourly AS h (buyer_id, hour, posts, accepted)
SELECT buyer_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*), count(*) FILTER (WHERE outcome = 'accepted')
FROM new WHERE outcome <> 'skipped' GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (buyer_id, hour) DO UPDATE SET posts = h.posts + EXCLUDED.posts,
                                           accepted = h.accepted + EXCLUDED.accepted
""",
}
# The rollups' own parameters, first in both statements; the batch's rows come after.
ROLLUP_ARGS: dict[str, tuple[object, ...]] = {"bid_outcomes": (list(LATENCY_EDGES_US),)}

# The batch writer's rows: one jsonb parameter, an array of rows each an array of column
# values (orjson writes it in microseconds). ``new`` holds the rows that were not there
# yet, so a batch retried after its commit was lost counts once.
_INSERTED = {
    "pings": """
WITH new AS (
    INSERT INTO pings (ping_id, seller_id, vertical, external_id, mode, tmax_ms, lead, status,
                       price_cents, payout_cents, ping_tree, created_at, expires_at,
                       duration_us, overhead_us)
    SELECT (r->>0)::uuid, r->>1, r->>2, r->>3, r->>4, (r->>5)::integer, r->6, r->>7,
           (r->>8)::bigint, (r->>9)::bigint, r->10, (r->>11)::timestamptz,
           (r->>12)::timestamptz, (r->>13)::integer, (r->>14)::integer
    FROM jsonb_array_elements($1::jsonb) AS r
    ON CONFLICT DO NOTHING
    RETURNING seller_id, status, created_at
)""",
    "bid_outcomes": """
WITH new AS (
    INSERT INTO bid_outcomes (ping_id, buyer_id, outcome, price_cents, latency_us, rank,
                              reason, created_at)
    SELECT (r->>0)::uuid, r->>1, r->>2, (r->>3)::bigint, (r->>4)::integer,
           (r->>5)::integer, r->>6, (r->>7)::timestamptz
    FROM jsonb_array_elements($2::jsonb) AS r
    ON CONFLICT DO NOTHING
    RETURNING buyer_id, outcome, latency_us, rank,
              date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour
)""",
    "post_attempts": """
WITH new AS (
    INSERT INTO post_attempts (ping_id, attempt, buyer_id, outcome, price_cents, latency_us,
                               reason, buyer_lead_id, created_at)
    SELECT (r->>0)::uuid, (r->>1)::integer, r->>2, r->>3, (r->>4)::bigint,
           (r->>5)::integer, r->>6, r->>7, (r->>8)::timestamptz
    FROM jsonb_array_elements($1::jsonb) AS r
    ON CONFLICT DO NOTHING
    RETURNING buyer_id, outcome, created_at
)""",
}
# Every row there is (rebuilding the rollups after they were emptied).
_ALL = {
    "pings": "WITH new AS (SELECT seller_id, status, created_at FROM pings)",
    "bid_outcomes": """
WITH new AS (
    SELECT buyer_id, outcome, latency_us, rank,
           date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour
    FROM bid_outcomes
)""",
    "post_attempts": "WITH new AS (SELECT buyer_id, outcome, created_at FROM post_attempts)",
}
INSERT_SQL = {table: _INSERTED[table] + tail for table, tail in _ROLLUP.items()}
REBUILD_SQL = {table: _ALL[table] + tail for table, tail in _ROLLUP.items()}


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def latency_bucket(latency_us: int) -> int:
    return bisect.bisect_right(LATENCY_EDGES_US, latency_us)


def percentile_us(buckets: dict[int, int], share: float) -> int | None:
    """The upper edge of the bucket holding the ``share`` quantile."""
    total = sum(buckets.values())
    if not total:
        return None
    needed = share * total
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen >= needed:
            edges = LATENCY_EDGES_US
            return edges[bucket] if bucket < len(edges) else edges[-1]
    return LATENCY_EDGES_US[-1]
