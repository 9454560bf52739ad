"""The in-memory ping cache gives back exactly the record it was given, until it expires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from exchange.auction import Bid
from exchange.pingcache import PingCache, PingRecord


def _record(ping_id: str, now: datetime, ttl_s: float = 120) -> PingRecord:
    tree = (
        Bid("b1", 1234, 100, 2, 5100, bid_id="x-1"),
        Bid("b2", 1000, 0, 0, 0, fixed_price=True, tier=1, weight=3),
    )
    return PingRecord(
        ping_id=ping_id,
        seller_id="s1",
        vertical="auto_insurance",
        external_id="ext-9",
        lead={"zip": "94107", "age": 41, "nested": {"a": [1, 2]}},
        tree=tree,
        price_cents=1234,
        payout_cents=1048,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
        tmax_ms=250,
    )


def test_a_cached_record_comes_back_equal_with_aware_datetimes() -> None:
    cache = PingCache()
    now = datetime(2026, 11, 23, 16, 0, 0, 123456, tzinfo=UTC)
    for ping_id, at in (("p1", now), ("p2", now.replace(microsecond=0))):
        record = _record(ping_id, at)
        cache.put(record)
        found = cache.get(ping_id, at)
        assert found == record
        assert found is not None and found.created_at.tzinfo is not None


def test_an_expired_record_is_gone_and_the_oldest_go_past_the_size_bound() -> None:
    now = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    cache = PingCache(max_entries=2)
    for ping_id in ("p1", "p2", "p3"):
        cache.put(_record(ping_id, now, ttl_s=10))
    assert cache.get("p1", now) is None
    assert cache.get("p3", now) is not None
    assert cache.get("p3", now + timedelta(seconds=11)) is None
    assert len(cache) == 0
