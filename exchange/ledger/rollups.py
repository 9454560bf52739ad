"""Hourly rollups of batched ledger rows: the SQL that adds a batch's rows to them, run by
the batch writer in the same statement that inserts the rows (exchange/ledger/batch.py), and
the bucket arithmetic the reports read them with.

The latency histogram uses log-spaced edges (x1.15), so a p95 read from it is within 15%
of the exact value; PostgreSQL's width_bucket over the same edges is ``latency_bucket``.
"""

from __future__ import annotations

import bisect
from datetime import datetime

from exchange.core.outcomes import (
    CALLED_OUTCOMES,
    PRICED_OUTCOMES,
    BidOutcome,
    PingStatus,
    PostOutcome,
)
from exchange.ledger.rows import ROW_TYPES, column_list, select_list
from exchange.ledger.words import sql_word, sql_words

# Upper edges in microseconds: 100 us .. ~60 s; the last bucket is open-ended.
LATENCY_EDGES_US: tuple[int, ...] = tuple(int(100 * 1.15**i) for i in range(96))

# What each ledger table's rows add to the hourly rollups, as the tail of one statement
# whose CTE ``new`` holds the rows: the batch writer's rows (INSERT_SQL) or every row
# there is (REBUILD_SQL), so the batches and a rebuild count by the same rules. The
# outcome words are the sets of exchange/core/outcomes.py, as in the ledger's CHECK
# constraints. Upserts run in key order, so two writers (two exchange processes) never
# deadlock on rollup rows. ``$1`` of the bid outcomes' tail is the latency bucket edges.
_CALLED = sql_words(CALLED_OUTCOMES)
_ROLLUP = {
    "pings": f"""
INSERT INTO seller_hourly AS h (seller_id, hour, pings, bids, scored, score_sum)
SELECT seller_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*), count(*) FILTER (WHERE status = {sql_word(PingStatus.BID)}),
       count(score), coalesce(sum(score), 0)
FROM new GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (seller_id, hour) DO UPDATE SET pings = h.pings + EXCLUDED.pings,
                                            bids = h.bids + EXCLUDED.bids,
                                            scored = h.scored + EXCLUDED.scored,
                                            score_sum = h.score_sum + EXCLUDED.score_sum
""",
    "bid_outcomes": f"""
, buyers AS (
    INSERT INTO buyer_hourly AS h (buyer_id, hour, pings, bids, wins, timeouts, errors,
                                   excluded)
    SELECT buyer_id, hour,
           count(*) FILTER (WHERE outcome IN ({_CALLED})),
           count(*) FILTER (WHERE outcome IN ({sql_words(PRICED_OUTCOMES)})),
           count(*) FILTER (WHERE rank = 1),
           count(*) FILTER (WHERE outcome = {sql_word(BidOutcome.TIMEOUT)}),
           count(*) FILTER (WHERE outcome = {sql_word(BidOutcome.ERROR)}),
           count(*) FILTER (WHERE outcome NOT IN ({_CALLED}))
    FROM new GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (buyer_id, hour) DO UPDATE SET
        pings = h.pings + EXCLUDED.pings, bids = h.bids + EXCLUDED.bids,
        wins = h.wins + EXCLUDED.wins, timeouts = h.timeouts + EXCLUDED.timeouts,
        errors = h.errors + EXCLUDED.errors, excluded = h.excluded + EXCLUDED.excluded
)
INSERT INTO buyer_latency_hourly AS h (buyer_id, hour, bucket, n)
SELECT buyer_id, hour, width_bucket(latency_us, $1::integer[]), count(*)
FROM new
WHERE latency_us > 0 AND outcome IN ({_CALLED})
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (buyer_id, hour, bucket) DO UPDATE SET n = h.n + EXCLUDED.n
""",
    # Also the rolling aggregate behind p(accept) (buyer_acceptance_daily, per vertical,
    # UTC day and buyer: exchange/ledger/acceptance.py reads it).
    "post_attempts": f"""
, buyers AS (
    INSERT INTO buyer_hourly AS h (buyer_id, hour, posts, accepted, breaches)
    SELECT buyer_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           count(*), count(*) FILTER (WHERE outcome = {sql_word(PostOutcome.ACCEPTED)}),
           count(*) FILTER (WHERE breach)
    FROM new WHERE outcome <> {sql_word(PostOutcome.SKIPPED)} GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (buyer_id, hour) DO UPDATE SET posts = h.posts + EXCLUDED.posts,
                                               accepted = h.accepted + EXCLUDED.accepted,
                                               breaches = h.breaches + EXCLUDED.breaches
)
INSERT INTO buyer_acceptance_daily AS a (vertical, day, buyer_id, posts, accepted, breaches)
SELECT vertical, (created_at AT TIME ZONE 'UTC')::date, buyer_id,
       count(*), count(*) FILTER (WHERE outcome = {sql_word(PostOutcome.ACCEPTED)}),
       count(*) FILTER (WHERE breach)
FROM new WHERE outcome <> {sql_word(PostOutcome.SKIPPED)} AND vertical IS NOT NULL
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (vertical, day, buyer_id) DO UPDATE SET posts = a.posts + EXCLUDED.posts,
                                                    accepted = a.accepted + EXCLUDED.accepted,
                                                    breaches = a.breaches + EXCLUDED.breaches
""",
}
# The rollups' own parameters, first in both statements; the batch's rows come after.
ROLLUP_ARGS: dict[str, tuple[object, ...]] = {"bid_outcomes": (list(LATENCY_EDGES_US),)}

# What of each table's rows its rollups read: the columns of ``new``.
_NEW = {
    "pings": "seller_id, status, created_at, score",
    "bid_outcomes": "buyer_id, outcome, latency_us, rank,"
    " date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour",
    "post_attempts": "buyer_id, outcome, created_at, vertical, breach",
}


def _inserted(table: str) -> str:
    """The batch writer's rows: one jsonb parameter, an array of the table's typed rows,
    each the array of its values in column order (exchange/ledger/rows.py; orjson writes
    times in microseconds). ``new`` holds the rows that were not there yet, so a batch
    retried after its commit was lost counts once."""
    row_type = ROW_TYPES[table]
    rows = f"${len(ROLLUP_ARGS.get(table, ())) + 1}::jsonb"
    return f"""
WITH new AS (
    INSERT INTO {table} ({column_list(row_type)})
    SELECT {select_list(row_type)}
    FROM jsonb_array_elements({rows}) AS r
    ON CONFLICT DO NOTHING
    RETURNING {_NEW[table]}
)"""


INSERT_SQL = {table: _inserted(table) + tail for table, tail in _ROLLUP.items()}
# Every row there is (rebuilding the rollups after they were emptied).
REBUILD_SQL = {
    table: f"WITH new AS (SELECT {_NEW[table]} FROM {table})" + tail
    for table, tail in _ROLLUP.items()
}


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
