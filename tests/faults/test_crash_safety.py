"""`lead-exchange serve` as a real process: killed with SIGKILL under load and restarted,
or stopped with SIGTERM.

kill -9: no money is lost or doubled - every "sold" a seller heard has its sale row, no
lead is sold twice, every post retried through the crash ends with the recorded result or
a fresh one - and the batched (non-money) rows it loses are only the last moments'.

SIGTERM: the process stops accepting, finishes the auctions and posts in flight, flushes
its batched rows, and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.faults import (
    ExchangeProcess,
    SellerTraffic,
    check_ledger,
    seller_loop,
)
from tests.support.harness import ADMIN_TOKEN, FULL_LEAD, PING_LEAD, config_text, realtime_buyer

SELLERS = 4
POST_DEADLINE_MS = 1000  # an interrupted post is given up post_deadline + 5 s after its claim
# A ping row commits before its answer (group commit), so no sale can outlive its ping
# row in a crash; the load test tolerates no such sale.
SALE_CAN_LOSE_ITS_PING_ROW = False


@pytest.fixture
async def buyers() -> AsyncIterator[BuyerSimulator]:
    specs = [
        SimulatedBuyerSpec("alpha", bid_cents=(1500, 3000), latency_ms=(2, 20),
                           post_latency_ms=(5, 40), reject_rate=0.2, seed=1),
        SimulatedBuyerSpec("beta", bid_cents=(1000, 2500), latency_ms=(2, 20),
                           post_latency_ms=(5, 40), seed=2),
        SimulatedBuyerSpec("gamma", bid_cents=(500, 2000), latency_ms=(2, 20),
                           post_latency_ms=(5, 40), no_bid_rate=0.3, seed=3),
    ]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        yield sim


def exchange_process(
    tmp_path: Path, sim: BuyerSimulator, database_url: str, **exchange: Any
) -> ExchangeProcess:
    config = tmp_path / "exchange.yaml"
    config.write_text(
        config_text(
            [realtime_buyer(sim, b) for b in sim.buyer_ids()],
            exchange={"tmax_ms": 300, "post_deadline_ms": POST_DEADLINE_MS, **exchange},
        )
    )
    return ExchangeProcess(
        config, database_url, tmp_path / "exchange.log", extra_args=["--log-level", "info"]
    )


async def ledger_rows(database_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        return {
            "ping_ids": {str(r["ping_id"]) for r in await conn.fetch("SELECT ping_id FROM pings")},
            "bid_outcomes": await conn.fetchval("SELECT count(*) FROM bid_outcomes"),
            "post_attempts": await conn.fetchval("SELECT count(*) FROM post_attempts"),
            "pings": await conn.fetchval("SELECT count(*) FROM pings"),
        }
    finally:
        await conn.close()


async def test_kill_9_under_load_loses_no_money(
    tmp_path: Path, buyers: BuyerSimulator, database_url: str
) -> None:
    process = exchange_process(tmp_path, buyers, database_url)
    stop = asyncio.Event()
    try:
        await process.start()
        async with aiohttp.ClientSession() as http:
            traffic = SellerTraffic(http, process.url, timeout_s=10)
            sellers = [
                asyncio.create_task(seller_loop(traffic, stop, f"s{i}", pause_s=0.005))
                for i in range(SELLERS)
            ]
            await asyncio.sleep(1.5)
            process.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await process.wait(5)
            await asyncio.sleep(0.3)
            await process.start()
            restarted_at = time.monotonic()
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*sellers)
    finally:
        process.kill()
    # Let the restarted process's last batch land, then read the ledger.
    await asyncio.sleep(0.2)
    rows = await ledger_rows(database_url)
    figures = await check_ledger(database_url, traffic.told())

    before = [a for a in traffic.answers if a.started + a.elapsed_s < killed_at]
    pinged = {a.body["ping_id"]: a for a in before if a.kind == "ping" and a.status == 200}
    lost = {p: a for p, a in pinged.items() if p not in rows["ping_ids"]}
    lost_window = max((killed_at - (a.started + a.elapsed_s) for a in lost.values()), default=0)
    posts = [a for a in traffic.answers if a.kind == "post" and a.status is not None]
    posted_lost = [a for a in posts if a.status == 404]
    direct = [a for a in traffic.answers if a.kind == "leads" and a.status is not None]
    no_answer = [a for a in traffic.answers if a.status is None]
    received_posts = sum(buyers.counters(b).posts for b in buyers.buyer_ids())
    print(
        f"\nkill -9 after {len(before)} answers; restart took "
        f"{restarted_at - killed_at:.2f} s; calls without answer (retried): {len(no_answer)}\n"
        f"pings answered before the kill: {len(pinged)}, their rows lost: {len(lost)} "
        f"(answered at most {lost_window * 1000:.0f} ms before the kill), bid_outcomes rows "
        f"lost with them: {3 * len(lost)}; post attempts buyers received {received_posts}, "
        f"rows {rows['post_attempts']} (lost {received_posts - rows['post_attempts']}); "
        f"posts answered 404 (ping lost): {len(posted_lost)}; direct posts retried through "
        f"the crash answered 409: {sum(a.status == 409 for a in direct)}\n{figures}"
    )
    assert figures.problems == ()
    assert figures.sold_answers > 0
    if SALE_CAN_LOSE_ITS_PING_ROW:
        assert figures.sales_nobody_was_told <= figures.sales_without_ping_row
    else:
        assert figures.sales_nobody_was_told == figures.sales_without_ping_row == 0
    assert figures.payout_told_cents == figures.payout_recorded_cents
    assert all(a.status in (200, 404) for a in posts), sorted({a.status for a in posts})
    # 409: a direct post whose first try died after binding its external_id (the known bug
    # of tests/faults/test_database_faults.py::test_direct_post_retried_after_a_database_error_...).
    assert all(a.status in (200, 409) for a in direct), sorted({a.status for a in direct})
    assert not [a for a in traffic.answers if a.status is not None and a.status >= 500
                and a.status != 503]  # fmt: skip
    # What a crash loses is bounded: only rows of the last batch interval(s) before it.
    assert lost_window < 0.5
    assert len(posted_lost) <= len(lost)


async def test_a_ping_answered_bid_can_be_posted_after_kill_9(
    tmp_path: Path, buyers: BuyerSimulator, database_url: str
) -> None:
    process = exchange_process(tmp_path, buyers, database_url)
    try:
        async with aiohttp.ClientSession() as http:
            traffic = SellerTraffic(http, process.url)
            for _ in range(3):  # one round may flush by chance; three never all do
                await process.start()
                ping = await traffic.call("ping", {"vertical": "auto_insurance", "lead": PING_LEAD})
                process.signal(signal.SIGKILL)
                await process.wait(5)
                assert ping.status == 200 and ping.body["status"] == "bid"
                await process.start()
                post = await traffic.call(
                    "post", {"ping_id": ping.body["ping_id"], "lead": FULL_LEAD}
                )
                assert post.status == 200, post.body
                process.signal(signal.SIGKILL)
                await process.wait(5)
    finally:
        process.kill()


async def test_a_sold_lead_keeps_its_auction_after_kill_9(
    tmp_path: Path, buyers: BuyerSimulator, database_url: str
) -> None:
    process = exchange_process(tmp_path, buyers, database_url)
    try:
        async with aiohttp.ClientSession() as http:
            traffic = SellerTraffic(http, process.url)
            for n in range(3):  # one round may flush by chance; three never all do
                await process.start()
                body = {"vertical": "auto_insurance", "lead": FULL_LEAD, "external_id": f"k-{n}"}
                sold = await traffic.call("leads", body)
                process.signal(signal.SIGKILL)
                await process.wait(5)
                assert sold.status == 200 and sold.body["status"] == "sold"
                await process.start()
                ping_id = sold.body["ping_id"]
                async with http.get(
                    f"{process.url}/v1/auctions/{ping_id}",
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                ) as response:
                    assert response.status == 200, await response.text()
                    assert (await response.json())["sale"] is not None
                again = await traffic.call("leads", body)
                assert (again.status, again.body) == (200, sold.body)
                process.signal(signal.SIGKILL)
                await process.wait(5)
    finally:
        process.kill()


async def test_sigterm_finishes_in_flight_work_and_flushes_every_row(
    tmp_path: Path, database_url: str
) -> None:
    specs = [
        SimulatedBuyerSpec("slow-a", bid_cents=(2000, 2000), latency_ms=(250, 250),
                           post_latency_ms=(400, 400)),
        SimulatedBuyerSpec("slow-b", bid_cents=(1500, 1500), latency_ms=(250, 250),
                           post_latency_ms=(400, 400)),
    ]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        process = exchange_process(tmp_path, sim, database_url, tmax_ms=600)
        try:
            await process.start()
            async with aiohttp.ClientSession() as warm:
                pinged = SellerTraffic(warm, process.url)
                ping = {"vertical": "auto_insurance", "lead": PING_LEAD}
                bids = [await pinged.call("ping", ping) for _ in range(4)]
            # Each call on its own connection, all in flight when SIGTERM arrives.
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as http:
                traffic = SellerTraffic(http, process.url)
                calls = [
                    *(traffic.call("ping", {"vertical": "auto_insurance", "lead": PING_LEAD})
                      for _ in range(6)),
                    *(traffic.call("leads", {"vertical": "auto_insurance", "lead": FULL_LEAD})
                      for _ in range(4)),
                    *(traffic.call("post", {"ping_id": b.body["ping_id"], "lead": FULL_LEAD})
                      for b in bids),
                ]  # fmt: skip
                in_flight = [asyncio.create_task(c) for c in calls]
                await asyncio.sleep(0.1)
                terminated_at = time.monotonic()
                process.signal(signal.SIGTERM)
                await asyncio.sleep(0.05)
                late = await traffic.call("ping", {"vertical": "auto_insurance",
                                                   "lead": PING_LEAD})  # fmt: skip
                answers = await asyncio.gather(*in_flight)
                code = await process.wait(15)
                exited_after = time.monotonic() - terminated_at
        finally:
            process.kill()
        received_posts = sum(sim.counters(b).posts for b in sim.buyer_ids())
    rows = await ledger_rows(database_url)
    auctions = 4 + sum(1 for a in answers if a.kind in ("ping", "leads") and a.status == 200)
    print(
        f"\nSIGTERM with {len(answers)} calls in flight: statuses "
        f"{sorted(a.status or 0 for a in answers)}, a new call after it: {late.status} "
        f"({late.error}); exit {code} after {exited_after:.2f} s; rows: pings {rows['pings']}"
        f"/{auctions}, bid_outcomes {rows['bid_outcomes']}/{2 * auctions}, post_attempts "
        f"{rows['post_attempts']}/{received_posts}"
    )
    assert [a.status for a in answers] == [200] * len(answers)
    assert late.status is None  # no longer accepting
    assert code == 0
    assert rows["pings"] == auctions
    assert rows["bid_outcomes"] == 2 * auctions
    assert rows["post_attempts"] == received_posts
