"""Two leads of one person offered at the same time (two sellers' posts, two pool claims):
the duplicate windows hold against each other, not only against sales already made,
because each offer reserves the person first (exchange/ledger/reservations.py). Real
buyers on 127.0.0.1 (one answering its posts slowly, so both offers are under way at
once) and the real ledger."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.pool.pooling import buyer_key, direct_post, pool_config, pull_buyer, pull_specs
from tests.support.harness import (
    FULL_LEAD,
    config_text,
    make_config,
    realtime_buyer,
    running_exchange,
)

DEDUPE_KEY = "dedupe-test-key-0123456789"
SLOW_POST_MS = (400.0, 400.0)


def spec(buyer_id: str, cents: int, **kw: Any) -> SimulatedBuyerSpec:
    return SimulatedBuyerSpec(buyer_id, secret=f"s-{buyer_id}".encode(), bid_cents=(cents, cents),
                              **kw)  # fmt: skip


# One person, written two ways by two sellers: the same phone, different emails.
PERSON = {**FULL_LEAD, "phone": "(415) 555-3001", "email": "first@example.com"}
AGAIN = {**PERSON, "phone": "+1 415 555 3001", "email": "second@example.com"}


async def sales_by_buyer(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return [r["buyer_id"] for r in await conn.fetch("SELECT buyer_id FROM sales ORDER BY 1")]
    finally:
        await conn.close()


async def test_two_posts_of_one_person_at_once_sell_it_to_a_deduping_buyer_once(
    database_url: str,
) -> None:
    specs = [spec("remembers", 3000, post_latency_ms=SLOW_POST_MS), spec("other", 1000)]
    async with BuyerSimulator(specs) as sim:
        buyers = [realtime_buyer(sim, "remembers", dedupe_days=30), realtime_buyer(sim, "other")]
        config = make_config(buyers, exchange={"dedupe_hash_key": DEDUPE_KEY})
        async with running_exchange(config, database_url) as ex:
            first, second = await ex.ping(), await ex.ping()
            posted = await asyncio.gather(
                ex.post(first["ping_id"], lead=PERSON), ex.post(second["ping_id"], lead=AGAIN)
            )
            assert [p["status"] for p in posted] == ["sold", "sold"]
            assert await sales_by_buyer(database_url) == ["other", "remembers"]
            skipped = []
            for ping in (first, second):
                story = await ex.story(ping["ping_id"])
                skipped += [a["reason"] for a in story["post_attempts"]
                            if a["buyer"] == "remembers" and a["outcome"] == "skipped"]  # fmt: skip
            assert skipped == ["duplicate: the same person is being offered there by another lead"]
            assert sim.counters("remembers").posts == 1


async def test_two_posts_of_one_person_at_once_sell_it_once_in_a_deduping_vertical(
    database_url: str,
) -> None:
    specs = [spec("a", 2000, post_latency_ms=SLOW_POST_MS), spec("b", 1500)]
    async with BuyerSimulator(specs) as sim:
        text = config_text([realtime_buyer(sim, "a"), realtime_buyer(sim, "b")],
                           exchange={"dedupe_hash_key": DEDUPE_KEY})  # fmt: skip
        text = text.replace("auto_insurance:\n    fields:",
                            "auto_insurance:\n    dedupe_days: 7\n    fields:")  # fmt: skip
        async with running_exchange(text, database_url) as ex:
            first, second = await ex.ping(), await ex.ping()
            posted = await asyncio.gather(
                ex.post(first["ping_id"], lead=PERSON), ex.post(second["ping_id"], lead=AGAIN)
            )
            assert sorted((p["status"], p.get("reason")) for p in posted) == [
                ("sold", None), ("unsold", "duplicate")]  # fmt: skip
            assert await sales_by_buyer(database_url) == ["a"]
            # The second lead was never offered to anyone: no buyer saw its PII.
            assert sim.counters("a").posts + sim.counters("b").posts == 1


async def test_two_claims_of_one_persons_pooled_leads_at_once_buy_it_once(
    database_url: str,
) -> None:
    async with BuyerSimulator(pull_specs("puller")) as sim:
        text = pool_config([pull_buyer(sim, "puller", dedupe_days=30)],
                           exchange={"dedupe_hash_key": DEDUPE_KEY})  # fmt: skip
        async with running_exchange(text, database_url) as ex:
            leads = [(await direct_post(ex, lead))["ping_id"] for lead in (PERSON, AGAIN)]
            answers = await asyncio.gather(
                *(ex.call("POST", f"/v1/pool/{lead_id}/claim", key=buyer_key("puller"))
                  for lead_id in leads)
            )  # fmt: skip
            statuses = sorted(status for status, _, _ in answers)
            assert statuses == [200, 403], answers
            refused = next(body for status, body, _ in answers if status == 403)
            assert ": duplicate: the same person" in refused["error"]["message"]
            assert await sales_by_buyer(database_url) == ["puller"]
