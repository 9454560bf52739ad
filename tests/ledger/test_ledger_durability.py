"""Money commits to disk before it is acknowledged; batched ledger rows only to
PostgreSQL's memory (docs/reliability.md, "Durable, but not fsynced"). A ping's price
waits for its row's commit, but never past the seller's deadline."""

from __future__ import annotations

import time

import asyncpg

from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    PING_LEAD,
    config_text,
    make_config,
    realtime_buyer,
    running_exchange,
)

TMAX_MS = 300


async def test_money_commits_synchronously_and_batches_do_not(database_url: str) -> None:
    async with running_exchange(config_text([]), database_url) as ex:
        money = await ex.ctx.store.pool.fetchval("SHOW synchronous_commit")
        batches = await ex.ctx.writer._pool.fetchval("SHOW synchronous_commit")
    assert (money, batches) == ("on", "off")


async def test_a_ping_whose_row_cannot_commit_by_tmax_is_a_prompt_503_and_its_repeat_gets_the_price(
    database_url: str,
) -> None:
    """The ping row's statement is held up by a lock on the seller rollup it adds to:
    the seller hears 503 at tmax (not 100 ms later with a price), the row commits once
    the lock goes, and the same external_id then answers with the auction's price."""
    specs = [SimulatedBuyerSpec("steady", bid_cents=(2000, 2000), latency_ms=(1, 3))]
    async with BuyerSimulator(specs, record=False) as sim:
        config = make_config([realtime_buyer(sim, "steady")], exchange={"tmax_ms": TMAX_MS})
        async with running_exchange(config, database_url) as ex:
            first = await ex.ping()  # the same buyer, the same bid
            body = {"vertical": "auto_insurance", "lead": PING_LEAD, "external_id": "slow-1"}
            blocker = await asyncpg.connect(database_url)
            try:
                held = blocker.transaction()
                await held.start()
                # Reads go on; the ping row's rollup upsert waits.
                await blocker.execute("LOCK TABLE seller_hourly IN SHARE MODE")
                started = time.monotonic()
                status, refused, headers = await ex.call("POST", "/v1/ping", body)
                elapsed_s = time.monotonic() - started
                await held.rollback()
            finally:
                await blocker.close()
            repeat_status, repeated, _ = await ex.call("POST", "/v1/ping", body)
            ex.ctx.metrics.apply_pending()
            late = ex.ctx.metrics.registry.get_sample_value(
                "exchange_overload_refusals_total", {"reason": "ledger_late"}
            )
            recorded = await ex.ctx.store.pool.fetchrow(
                "SELECT ping_id::text, status FROM pings WHERE external_id = 'slow-1'"
            )
    assert status == 503, refused
    assert refused["error"]["code"] == "not_ready"
    assert "external_id" in refused["error"]["message"]
    assert headers.get("Retry-After")
    # Answered at its deadline: the old bound was tmax + 100 ms.
    assert TMAX_MS / 1000 <= elapsed_s < TMAX_MS / 1000 + 0.05, f"{elapsed_s * 1000:.0f} ms"
    assert late == 1
    assert repeat_status == 200, repeated
    assert (repeated["status"], repeated["price"]) == ("bid", first["price"])
    assert recorded is not None
    assert (recorded["ping_id"], recorded["status"]) == (repeated["ping_id"], "bid")
