"""Hourly rollups of batched ledger rows, computed here and written by the batch writer in
the same transaction as the rows themselves (exchange/batch.py).

Pure code: rows in, upserts out. The latency histogram uses log-spaced edges (x1.15), so a
p95 read from it is within 15% of the exact value.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from exchange.outcomes import BidOutcome, PostOutcome

# Upper edges in microseconds: 100 us .. ~60 s; the last bucket is open-ended.
LATENCY_EDGES_US: tuple[int, ...] = tuple(int(100 * 1.15**i) for i in range(96))

_CALLED = {BidOutcome.BID, BidOutcome.NO_BID, BidOutcome.TIMEOUT, BidOutcome.ERROR,
           BidOutcome.BELOW_FLOOR}  # fmt: skip
_CALLED_WORDS = frozenset(o.value for o in _CALLED)
_BID_WORDS = frozenset({BidOutcome.BID.value, BidOutcome.BELOW_FLOOR.value})

BUYER_UPSERT = """
INSERT INTO buyer_hourly AS h (buyer_id, hour, pings, bids, wins, timeouts, errors, excluded,
                               posts, accepted)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (buyer_id, hour) DO UPDATE SET
    pings = h.pings + EXCLUDED.pings, bids = h.bids + EXCLUDED.bids,
    wins = h.wins + EXCLUDED.wins, timeouts = h.timeouts + EXCLUDED.timeouts,
    errors = h.errors + EXCLUDED.errors, excluded = h.excluded + EXCLUDED.excluded,
    posts = h.posts + EXCLUDED.posts, accepted = h.accepted + EXCLUDED.accepted
"""
LATENCY_UPSERT = """
INSERT INTO buyer_latency_hourly AS h (buyer_id, hour, bucket, n) VALUES ($1, $2, $3, $4)
ON CONFLICT (buyer_id, hour, bucket) DO UPDATE SET n = h.n + EXCLUDED.n
"""
SELLER_UPSERT = """
INSERT INTO seller_hourly AS h (seller_id, hour, pings, bids) VALUES ($1, $2, $3, $4)
ON CONFLICT (seller_id, hour) DO UPDATE SET pings = h.pings + EXCLUDED.pings,
                                            bids = h.bids + EXCLUDED.bids
"""


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


class _Hours(dict[datetime, datetime]):
    """hour_of, remembered: a batch's rows share a handful of timestamps per ping."""

    def __missing__(self, at: datetime) -> datetime:
        hour = self[at] = hour_of(at)
        return hour


def latency_bucket(latency_us: int) -> int:
    return bisect.bisect_right(LATENCY_EDGES_US, latency_us)


def upserts(table: str, rows: Iterable[Sequence[Any]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The (statement, argument rows) that add ``rows`` of ``table`` to the rollups."""
    if table == "bid_outcomes":
        return _bid_outcomes(rows)
    if table == "post_attempts":
        return _post_attempts(rows)
    if table == "pings":
        return _pings(rows)
    return []


def _bid_outcomes(rows: Iterable[Sequence[Any]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    sums: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0] * 8)
    latency: dict[tuple[str, datetime, int], int] = defaultdict(int)
    hours = _Hours()
    for _ping, buyer, outcome, _price, latency_us, rank, _reason, at in rows:
        key = (buyer, hours[at])
        s = sums[key]
        if outcome in _CALLED_WORDS:
            s[0] += 1
            if latency_us:
                latency[(buyer, key[1], latency_bucket(latency_us))] += 1
        else:
            s[5] += 1
        s[1] += outcome in _BID_WORDS
        s[2] += rank == 1
        s[3] += outcome == BidOutcome.TIMEOUT.value
        s[4] += outcome == BidOutcome.ERROR.value
    return [
        (BUYER_UPSERT, [(b, h, *v) for (b, h), v in sums.items()]),
        (LATENCY_UPSERT, [(b, h, k, n) for (b, h, k), n in latency.items()]),
    ]


def _post_attempts(rows: Iterable[Sequence[Any]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    sums: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        buyer, outcome, at = row[2], row[3], row[8]
        if outcome == PostOutcome.SKIPPED.value:
            continue
        s = sums[(buyer, hour_of(at))]
        s[0] += 1
        s[1] += outcome == PostOutcome.ACCEPTED.value
    return [(BUYER_UPSERT, [(b, h, 0, 0, 0, 0, 0, 0, p, a) for (b, h), (p, a) in sums.items()])]


def _pings(rows: Iterable[Sequence[Any]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    sums: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        seller, status, at = row[1], row[7], row[11]
        s = sums[(seller, hour_of(at))]
        s[0] += 1
        s[1] += status == "bid"
    return [(SELLER_UPSERT, [(s, h, p, b) for (s, h), (p, b) in sums.items()])]


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
