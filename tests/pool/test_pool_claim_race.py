"""A pooled lead is sold once, whatever the race: 50 claims at once, spread over two
exchange processes sharing one ledger, make exactly one sale; every other claimer gets
409 (the ledger's conditional UPDATE decides, not either process's memory) and the cap
reservation it made is given back."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import asyncpg

from exchange.tools.simulator import BuyerSimulator
from tests.pool.pooling import buyer_key, pool_config, pull_buyer, pull_specs
from tests.support.faults import ExchangeProcess
from tests.support.harness import FULL_LEAD, SELLER_KEY

BUYERS = [f"puller-{n}" for n in range(10)]
CLAIMS_PER_BUYER = 5


async def test_fifty_concurrent_claims_on_two_processes_make_exactly_one_sale(
    tmp_path: Path, database_url: str
) -> None:
    async with BuyerSimulator(pull_specs(*BUYERS), record=False) as sim:
        config = tmp_path / "exchange.yaml"
        config.write_text(pool_config([pull_buyer(sim, b, caps={"daily": 5}) for b in BUYERS]))
        one = ExchangeProcess(config, database_url, tmp_path / "one.log")
        two = ExchangeProcess(config, database_url, tmp_path / "two.log")
        await one.start()
        await two.start()
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0)
            ) as http:
                async with http.post(
                    one.url + "/v1/leads",
                    json={"vertical": "auto_insurance", "lead": FULL_LEAD},
                    headers={"Authorization": f"Bearer {SELLER_KEY}"},
                ) as response:
                    posted = await response.json()
                assert posted["status"] == "unsold", posted
                lead_id = posted["ping_id"]

                async def claim(buyer_id: str, url: str) -> tuple[int, str, dict[str, object]]:
                    async with http.post(
                        f"{url}/v1/pool/{lead_id}/claim",
                        headers={"Authorization": f"Bearer {buyer_key(buyer_id)}"},
                    ) as response:
                        return response.status, buyer_id, await response.json()

                claims = [
                    claim(buyer_id, (one.url, two.url)[(i + n) % 2])
                    for i, buyer_id in enumerate(BUYERS)
                    for n in range(CLAIMS_PER_BUYER)
                ]
                answers = await asyncio.gather(*claims)
        finally:
            for process in (one, two):
                process.signal(signal.SIGTERM)
            for process in (one, two):
                try:
                    await process.wait(30)
                finally:
                    process.kill()

    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] + [409] * 49, [(s, b) for s, b, _ in answers]
    [(_, winner, body)] = [a for a in answers if a[0] == 200]
    assert body["lead"]["phone"] == "+14155552671"
    conn = await asyncpg.connect(database_url)
    try:
        sales = await conn.fetch("SELECT buyer_id, price_cents FROM sales")
        offer = await conn.fetchrow("SELECT claimed_by, pii FROM pool_offers")
        counters = await conn.fetch("SELECT buyer_id, sales FROM cap_counters")
    finally:
        await conn.close()
    assert [(r["buyer_id"], r["price_cents"]) for r in sales] == [(winner, 2000)]
    assert offer["claimed_by"] == winner and offer["pii"] is None
    # Every claimer reserved a sale under its cap; only the winner's stays counted.
    assert {r["buyer_id"]: r["sales"] for r in counters if r["sales"]} == {winner: 1}
