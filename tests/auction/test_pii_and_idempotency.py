"""PII stays out of pings and the ledger; a lead is sold at most once whatever the retries;
a sale outlives the process that made it."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson

from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    FULL_LEAD,
    PII,
    PING_LEAD,
    make_config,
    realtime_buyer,
    running_exchange,
)

PII_VALUES = [v.encode() for v in PII.values()] + [b"4155552671", b"ada.lovelace@example.com"]


async def test_pii_sent_in_a_ping_never_reaches_buyers_or_the_ledger(database_url: str) -> None:
    specs = [SimulatedBuyerSpec("a", bid_cents=(2000, 2000)),
             SimulatedBuyerSpec("b", bid_cents=(1000, 1000))]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, s.buyer_id) for s in specs])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping(lead=FULL_LEAD)  # a careless seller pings with PII
            await ex.post(answer["ping_id"])
            await ex.ctx.writer.flush()
        for buyer in ("a", "b"):
            for request in sim.received(buyer):
                if request.path == "/ping":
                    assert set(request.body["lead"]) == set(PING_LEAD)
                    assert not any(v in request.raw for v in PII_VALUES)
        post = next(r for r in sim.received("a") if r.path == "/post")
        assert post.body["lead"]["phone"] == "+14155552671"
        assert post.body["lead"]["email"] == "ada.lovelace@example.com"
    conn = await asyncpg.connect(database_url)
    try:
        for table in ("pings", "bid_outcomes", "post_attempts", "posts", "sales"):
            rows = await conn.fetch(f"SELECT * FROM {table}")
            dump = orjson.dumps([dict(r) for r in rows], default=str)
            assert not any(v in dump for v in PII_VALUES), table
    finally:
        await conn.close()


async def test_five_concurrent_posts_of_one_ping_sell_it_once(database_url: str) -> None:
    specs = [SimulatedBuyerSpec("slow", bid_cents=(2000, 2000), post_latency_ms=(100, 100))]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, "slow")])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            results = await asyncio.gather(*(ex.post(answer["ping_id"]) for _ in range(5)))
            assert all(r == results[0] for r in results)
            assert results[0]["status"] == "sold"
            assert sim.counters("slow").posts == 1
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM sales") == 1
    finally:
        await conn.close()


async def test_concurrent_posts_through_two_exchanges_sharing_a_database_sell_once(
    database_url: str,
) -> None:
    specs = [SimulatedBuyerSpec("slow", bid_cents=(2000, 2000), post_latency_ms=(100, 100))]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, "slow")])
        async with running_exchange(config, database_url) as one, \
                running_exchange(config, database_url) as two:  # fmt: skip
            answer = await one.ping()
            await one.ctx.writer.flush()
            results = await asyncio.gather(
                *(node.post(answer["ping_id"]) for node in (one, two, one, two, two))
            )
            assert all(r == results[0] for r in results), results
            assert results[0]["status"] == "sold"
            assert sim.counters("slow").posts == 1


async def test_repeated_external_id_returns_the_first_result(database_url: str) -> None:
    specs = [SimulatedBuyerSpec("a", bid_cents=(500, 3000), seed=7)]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, "a")])
        async with running_exchange(config, database_url) as ex:
            first = await ex.ping(external_id="form-123")
            again = await asyncio.gather(*(ex.ping(external_id="form-123") for _ in range(3)))
            assert all(a == first for a in again)
            assert sim.counters("a").pings == 1
            body = {"vertical": "auto_insurance", "lead": FULL_LEAD, "external_id": "lead-9"}
            answers = await asyncio.gather(*(ex.call("POST", "/v1/leads", body) for _ in range(5)))
            assert {a[0] for a in answers} == {200}
            assert all(a[1] == answers[0][1] for a in answers)
            assert answers[0][1]["status"] == "sold"
            assert sim.counters("a").posts == 1


async def test_a_sale_survives_a_restart_of_the_exchange(database_url: str) -> None:
    specs = [SimulatedBuyerSpec("a", bid_cents=(2000, 2000))]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, "a")])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            sold = await ex.post(answer["ping_id"])
        # A new process: empty memory, same database.
        async with running_exchange(config, database_url) as ex:
            again = await ex.post(answer["ping_id"])
            assert again == sold
            story = await ex.story(answer["ping_id"])
            assert story["sale"]["buyer"] == "a"
            assert story["sale"]["price"] == 20.0
        assert sim.counters("a").posts == 1


async def test_a_ping_can_be_posted_after_a_restart(database_url: str) -> None:
    specs = [SimulatedBuyerSpec("a", bid_cents=(2000, 2000))]
    async with BuyerSimulator(specs) as sim:
        config = make_config([realtime_buyer(sim, "a")])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
        async with running_exchange(config, database_url) as ex:
            assert (await ex.post(answer["ping_id"]))["status"] == "sold"
