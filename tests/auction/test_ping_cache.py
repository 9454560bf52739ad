"""A ping's record comes back as it was made: from the in-memory cache until it expires,
and from the ledger's row after that."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from exchange.auction.lookup import _ping_from_ledger
from exchange.auction.pingcache import PingCache, PingRecord, ledger_tree, tree_from_ledger
from exchange.core.ranking import Bid
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import config_text, realtime_buyer, running_exchange


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


def test_the_ledger_tree_leaves_out_defaults_and_reads_back_equal() -> None:
    tree = _record("p1", datetime(2026, 11, 23, tzinfo=UTC)).tree
    entries = ledger_tree(tree)
    assert entries == [
        {"buyer_id": "b1", "price_cents": 1234, "company_size": 100, "priority": 2,
         "latency_us": 5100, "bid_id": "x-1"},
        {"buyer_id": "b2", "price_cents": 1000, "company_size": 0, "priority": 0,
         "latency_us": 0, "fixed_price": True, "tier": 1, "weight": 3},
    ]  # fmt: skip
    assert tree_from_ledger(entries) == tree
    # Rows written with every field, defaults included, read the same.
    full = [{"buyer_id": "b", "price_cents": 5, "company_size": 1, "priority": 0, "latency_us": 9,
             "bid_id": None, "fixed_price": False, "tier": None, "weight": 1}]  # fmt: skip
    assert tree_from_ledger(full) == (Bid("b", 5, 1, 0, 9),)


async def test_a_ping_read_back_from_the_ledger_has_the_tree_its_auction_ranked(
    database_url: str,
) -> None:
    specs = [SimulatedBuyerSpec("rt", secret=b"s-rt", bid_cents=(4000, 4000))]
    async with BuyerSimulator(specs) as sim:
        fixed = {"id": "fixed", "verticals": ["auto_insurance"], "price": 9.0, "tier": 1,
                 "weight": 3, "post_url": sim.post_url("rt"), "secret": "s-fixed"}  # fmt: skip
        text = config_text([realtime_buyer(sim, "rt"), fixed]).replace(
            "auto_insurance:\n    fields:",
            "auto_insurance:\n    tiers: {1: {distribution: weighted}}\n    fields:",
        )
        async with running_exchange(text, database_url) as ex:
            ping_id = (await ex.ping())["ping_id"]
            cached = ex.ctx.pings.get(ping_id, ex.ctx.clock.now())
            stored = await _ping_from_ledger(ex.ctx, ping_id)
            raw = await ex.ctx.store.pool.fetchval(
                "SELECT ping_tree FROM pings WHERE ping_id = $1", uuid.UUID(ping_id)
            )
    assert cached is not None and stored is not None
    assert [b.buyer_id for b in stored.tree] == ["rt", "fixed"]
    assert stored.tree == cached.tree
    assert stored.tree[1] == Bid("fixed", 900, 0, 0, 0, fixed_price=True, tier=1, weight=3)
    assert "tier" not in raw[0] and raw[1]["tier"] == 1
