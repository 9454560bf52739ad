"""Ping, rank, post, fall back: the auction end to end against real buyers and a real
database."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from exchange.auction.pinging import kept_back_s
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    FULL_LEAD,
    make_config,
    realtime_buyer,
    running_exchange,
    until_a_statement_waits_on_a_lock,
)


def spec(buyer_id: str, cents: int, **kw: object) -> SimulatedBuyerSpec:
    return SimulatedBuyerSpec(
        buyer_id, secret=b"s3cret-" + buyer_id.encode(), bid_cents=(cents, cents), **kw
    )  # type: ignore[arg-type]


async def test_highest_bid_wins_and_seller_is_paid_its_share(database_url: str) -> None:
    specs = [spec("low", 1000), spec("high", 2500), spec("mid", 1800)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, s.buyer_id) for s in specs])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            assert answer["status"] == "bid"
            assert answer["price"] == 21.25  # 25.00 x 0.85
            sold = await ex.post(answer["ping_id"])
            assert sold == {"ping_id": answer["ping_id"], "status": "sold", "price": 21.25}
            story = await ex.story(answer["ping_id"])
            assert story["sale"]["buyer"] == "high"
            assert story["sale"]["price"] == 25.0
            assert story["sale"]["payout"] == 21.25
            ranks = {b["buyer"]: b["rank"] for b in story["buyers"]}
            assert ranks == {"high": 1, "mid": 2, "low": 3}
            assert sim.counters("high").accepted == 1
            assert sim.counters("mid").posts == 0


async def test_equal_bids_go_to_larger_company_then_higher_priority(database_url: str) -> None:
    specs = [spec("small", 2000), spec("big", 2000), spec("big-urgent", 2000)]
    async with BuyerSimulator(specs) as sim:
        config = make_config(
            [
                realtime_buyer(sim, "small", company_size=10, priority=99),
                realtime_buyer(sim, "big", company_size=5000, priority=1),
                realtime_buyer(sim, "big-urgent", company_size=5000, priority=7),
            ]
        )
        async with running_exchange(config, database_url) as ex:
            for _ in range(3):
                answer = await ex.ping()
                story = await ex.story(answer["ping_id"])
                ranks = {b["buyer"]: b["rank"] for b in story["buyers"]}
                assert ranks == {"big-urgent": 1, "big": 2, "small": 3}


async def test_deadline_holds_when_a_buyer_hangs(database_url: str) -> None:
    specs = [spec("hangs", 3000, hang_rate=1.0), spec("quick", 1500)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, s.buyer_id) for s in specs],
                             exchange={"tmax_ms": 200})  # fmt: skip
        async with running_exchange(config, database_url) as ex:
            loop = asyncio.get_running_loop()
            # What the auction will keep back from tmax for ranking, its commit and the
            # loop's lag (docs/auction.md, "Deadline"): it stops waiting on buyers that
            # much before tmax, by design. (A fresh database's first commits are slow.)
            ctx = ex.ctx
            kept = kept_back_s(0.2, ctx.commit_time.value(loop.time()), ctx.lag.recent_s)
            started = time.perf_counter()
            answer = await ex.ping()
            elapsed = time.perf_counter() - started
            assert answer["status"] == "bid"
            assert answer["price"] == 12.75
            # The answer left by tmax, not before the buyers' cut-off; the slack covers
            # the loopback round trip.
            assert 0.2 - kept - 0.01 <= elapsed < 0.2 + 0.05
            story = await ex.story(answer["ping_id"])
            outcomes = {b["buyer"]: b["outcome"] for b in story["buyers"]}
            assert outcomes == {"hangs": "timeout", "quick": "bid"}


async def test_time_before_the_auction_counts_against_tmax(database_url: str) -> None:
    """Binding the ping's external_id waits 150 ms on a lock; a buyer answering after
    200 ms then misses the 300 ms deadline, which counts from the request, not from the
    start of the fan-out (that would answer after 350 ms, with its bid)."""
    specs = [spec("steady", 2000, latency_ms=(200, 200)), spec("quick", 1500)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, s.buyer_id) for s in specs],
                             exchange={"tmax_ms": 300})  # fmt: skip
        async with running_exchange(config, database_url) as ex:
            await ex.ping()  # connections and statements warm
            blocker = await asyncpg.connect(database_url)
            watcher = await asyncpg.connect(database_url)
            try:
                held = blocker.transaction()
                await held.start()
                await blocker.execute("LOCK TABLE external_ids IN SHARE MODE")
                loop = asyncio.get_running_loop()
                started = loop.time()
                ping = asyncio.ensure_future(ex.ping(external_id="held-150ms"))
                await until_a_statement_waits_on_a_lock(
                    watcher, "the external_id binding", tries=1000
                )
                await asyncio.sleep(0.15)  # the binding's wait, inside the ping's tmax
                await held.rollback()
                answer = await ping
                elapsed = loop.time() - started
            finally:
                await blocker.close()
                await watcher.close()
            story = await ex.story(answer["ping_id"])
    outcomes = {b["buyer"]: b["outcome"] for b in story["buyers"]}
    assert outcomes == {"steady": "timeout", "quick": "bid"}
    assert answer["price"] == 12.75
    assert elapsed < 0.3 + 0.04, f"{elapsed * 1000:.0f} ms"


async def test_a_ping_may_ask_for_a_shorter_deadline(database_url: str) -> None:
    specs = [spec("slow", 3000, latency_ms=(150, 150)), spec("quick", 1500)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, s.buyer_id) for s in specs])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping(tmax_ms=60)
            assert answer["price"] == 12.75
            story = await ex.story(answer["ping_id"])
            assert story["tmax_ms"] == 60
            assert {b["buyer"]: b["outcome"] for b in story["buyers"]}["slow"] == "timeout"


async def test_buyer_timeout_ms_cuts_a_slow_buyer_before_tmax(database_url: str) -> None:
    specs = [spec("slow", 3000, latency_ms=(600, 600)), spec("quick", 1500)]
    async with BuyerSimulator(specs) as sim:
        config = make_config(
            [realtime_buyer(sim, "slow", timeout_ms=50), realtime_buyer(sim, "quick")]
        )
        async with running_exchange(config, database_url) as ex:
            loop = asyncio.get_running_loop()
            started = loop.time()
            answer = await ex.ping()
            assert loop.time() - started < 0.4  # waited neither for the buyer nor for tmax
            story = await ex.story(answer["ping_id"])
            slow = next(b for b in story["buyers"] if b["buyer"] == "slow")
            assert slow["outcome"] == "timeout"
            assert 45 <= slow["latency_ms"] < 100


async def test_post_falls_back_through_reject_error_and_timeout(database_url: str) -> None:
    specs = [
        spec("rejects", 4000, reject_rate=1.0),
        spec("errors", 3500, post_error_rate=1.0),
        spec("hangs", 3000, post_hang_rate=1.0),
        spec("accepts", 2000),
    ]
    async with BuyerSimulator(specs) as sim:
        buyers = [realtime_buyer(sim, s.buyer_id) for s in specs]
        buyers[2]["post_timeout_ms"] = 100
        config = make_config(buyers)
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            assert answer["price"] == 34.0  # the top bid's payout is what the ping promises
            sold = await ex.post(answer["ping_id"])
            assert sold["status"] == "sold"
            assert sold["price"] == 17.0  # 20.00 x 0.85: the buyer that accepted
            story = await ex.story(answer["ping_id"])
            attempts = [(a["buyer"], a["outcome"]) for a in story["post_attempts"]]
            assert attempts == [
                ("rejects", "rejected"),
                ("errors", "error"),
                ("hangs", "timeout"),
                ("accepts", "accepted"),
            ]
            assert story["post_attempts"][0]["reason"] == "simulated reject"
            assert story["sale"]["buyer"] == "accepts"


async def test_post_is_unsold_when_every_buyer_declines(database_url: str) -> None:
    specs = [spec("a", 4000, reject_rate=1.0), spec("b", 3000, reject_rate=1.0)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, s.buyer_id) for s in specs])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            result = await ex.post(answer["ping_id"])
            assert result == {"ping_id": answer["ping_id"], "status": "unsold", "price": None,
                              "reason": "all_buyers_declined"}  # fmt: skip
            story = await ex.story(answer["ping_id"])
            assert story["sale"] is None
            assert story["post"]["status"] == "unsold"


async def test_fixed_price_buyer_bids_without_a_call_and_catches_fallback(
    database_url: str,
) -> None:
    specs = [spec("realtime", 3000, reject_rate=1.0)]
    async with BuyerSimulator([*specs, spec("fixed", 1)]) as sim:
        fixed = {"id": "fixed", "verticals": ["auto_insurance"], "price": 12.5,
                 "post_url": sim.post_url("fixed"), "secret": "s3cret-fixed"}  # fmt: skip
        config = make_config([realtime_buyer(sim, "realtime"), fixed])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            assert sim.counters("fixed").pings == 0
            sold = await ex.post(answer["ping_id"])
            assert sold["status"] == "sold"
            assert sold["price"] == 10.62  # 12.50 x 0.85 = 10.625, rounded down
            story = await ex.story(answer["ping_id"])
            fixed_row = next(b for b in story["buyers"] if b["buyer"] == "fixed")
            assert fixed_row == {"buyer": "fixed", "outcome": "bid", "bid": 12.5,
                                 "latency_ms": 0.0, "rank": 2, "reason": "fixed price",
                                 "p_accept": 0.8, "expected_value": 10.0}  # fmt: skip
            assert story["sale"] == {**story["sale"], "buyer": "fixed", "price": 12.5,
                                     "payout": 10.62}  # fmt: skip


async def test_bids_under_the_seller_floor_are_dropped(database_url: str) -> None:
    specs = [spec("cheap", 150), spec("fair", 900)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, s.buyer_id) for s in specs])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            story = await ex.story(answer["ping_id"])
            outcomes = {b["buyer"]: b["outcome"] for b in story["buyers"]}
            assert outcomes == {"cheap": "below_floor", "fair": "bid"}
            assert answer["price"] == 7.65


async def test_no_bid_when_no_buyer_bids_and_post_is_unsold(database_url: str) -> None:
    specs = [spec("passes", 1000, no_bid_rate=1.0)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, "passes")])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            assert answer["status"] == "no_bid"
            assert answer["price"] is None
            result = await ex.post(answer["ping_id"])
            assert result["status"] == "unsold"
            assert result["reason"] == "no_bids"


async def test_min_price_skips_buyers_whose_payout_is_too_low(database_url: str) -> None:
    specs = [spec("top", 3000, reject_rate=1.0), spec("second", 1000)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, s.buyer_id) for s in specs])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            result = await ex.post(answer["ping_id"], min_price=9.00)
            assert result["status"] == "unsold"
            assert result["reason"] == "all_buyers_declined"
            assert sim.counters("second").posts == 0  # 10.00 x 0.85 = 8.50 < 9.00


async def test_direct_post_pings_and_sells_in_one_call(database_url: str) -> None:
    specs = [spec("a", 2200), spec("b", 1900)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, s.buyer_id) for s in specs])
        async with running_exchange(config, database_url) as ex:
            status, body, _ = await ex.call(
                "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": FULL_LEAD}
            )
            assert status == 200, body
            assert body["status"] == "sold"
            assert body["price"] == 18.7
            ping_bodies = [r.body for r in sim.received("a") if r.path == "/ping"]
            assert ping_bodies and all("phone" not in b["lead"] for b in ping_bodies)
            story = await ex.story(body["ping_id"])
            assert story["mode"] == "direct"


async def test_filters_schedules_and_seller_lists_exclude_buyers_with_a_reason(
    database_url: str,
) -> None:
    names = ["texas-only", "closed", "denies-acme", "open"]
    specs = [spec(n, 2000) for n in names]
    async with BuyerSimulator(specs) as sim:
        config = make_config(
            [
                realtime_buyer(sim, "texas-only", filters={"state": {"in": ["TX"]}}),
                realtime_buyer(sim, "closed", schedule={"timezone": "UTC", "days": ["mon"],
                                                        "start": "00:00", "end": "00:01"}),
                realtime_buyer(sim, "denies-acme", sellers_deny=["acme-media"]),
                realtime_buyer(sim, "open",
                               filters={"age": {"gte": 25}, "zip": {"prefix": ["902"]}}),
            ]
        )  # fmt: skip
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            story = await ex.story(answer["ping_id"])
            rows = {b["buyer"]: b for b in story["buyers"]}
            assert rows["texas-only"]["outcome"] == "filtered"
            assert "state" in rows["texas-only"]["reason"]
            assert rows["closed"]["outcome"] == "off_schedule"
            assert rows["denies-acme"]["outcome"] == "seller_blocked"
            assert rows["open"]["outcome"] == "bid"
            assert sim.counters("texas-only").pings == 0
            assert sim.counters("denies-acme").pings == 0
