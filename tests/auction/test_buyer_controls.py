"""Caps, duplicates, shared leads, tiers and returns against the real database."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from exchange.core.caps import CompiledCaps, period_start
from exchange.core.config import Caps
from exchange.core.ranking import Bid, arrange_tiers
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    SELLER_KEY,
    config_text,
    make_config,
    realtime_buyer,
    running_exchange,
)

DEDUPE_KEY = "dedupe-test-key-0123456789"


def spec(buyer_id: str, cents: int, **kw: Any) -> SimulatedBuyerSpec:
    return SimulatedBuyerSpec(buyer_id, secret=f"s-{buyer_id}".encode(), bid_cents=(cents, cents),
                              **kw)  # fmt: skip


def lead(n: int) -> dict[str, Any]:
    return {**FULL_LEAD, "phone": f"(415) 555-{1000 + n:04d}", "email": f"p{n}@example.com"}


async def fetch(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


# -- caps -----------------------------------------------------------------------------------


def test_cap_periods_start_at_the_buyers_local_boundaries() -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("America/New_York")
    now = datetime(2026, 11, 26, 3, 30, tzinfo=UTC)  # 22:30 on Wednesday the 25th in New York
    assert period_start("hour", now, zone) == datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    assert period_start("day", now, zone) == datetime(2026, 11, 25, 5, 0, tzinfo=UTC)
    assert period_start("week", now, zone) == datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    assert period_start("month", now, zone) == datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # EDT
    caps = CompiledCaps.from_config(Caps(daily=5, monthly_budget=100_00), "America/New_York")
    assert [w.limit.period for w in caps.windows(now)] == ["day", "month"]


@asynccontextmanager
async def exchange_process(config: str, database_url: str, tmp: Path) -> AsyncIterator[str]:
    """A second exchange as its own OS process, on the same database."""
    path = tmp / "exchange.yaml"
    path.write_text(config)
    with socket_port() as port:
        pass
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", "serve", "--config", str(path), "--port", str(port),
        "--database-url", database_url, "--log-level", "warning",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(url + "/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("second exchange did not start")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=20)


class socket_port:
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


async def test_caps_hold_exactly_under_concurrent_leads_from_two_processes(
    database_url: str, tmp_path: Path
) -> None:
    specs = [spec("capped", 5000, reject_rate=0.2, seed=3), spec("backfill", 1000)]
    async with BuyerSimulator(specs) as sim:
        buyers = [
            realtime_buyer(sim, "capped", caps={"daily": 37, "daily_budget": 5000.0},
                           timezone="America/New_York"),
            realtime_buyer(sim, "backfill"),
        ]  # fmt: skip
        text = config_text(buyers)
        config = make_config(buyers)
        async with running_exchange(config, database_url) as one, \
                exchange_process(text, database_url, tmp_path) as two_url:  # fmt: skip
            semaphore = asyncio.Semaphore(40)

            async def direct(n: int) -> tuple[int, Any]:
                url = one.url if n % 2 else two_url
                async with (
                    semaphore,
                    one.http.post(
                        url + "/v1/leads",
                        json={"vertical": "auto_insurance", "lead": lead(n)},
                        headers={"Authorization": f"Bearer {SELLER_KEY}"},
                    ) as response,
                ):
                    return response.status, await response.json()

            answers = await asyncio.gather(*(direct(n) for n in range(200)))
    assert {status for status, _ in answers} == {200}
    assert all(body["status"] == "sold" for _, body in answers)
    rows = await fetch(database_url, "SELECT buyer_id, count(*) AS n, sum(price_cents) AS spent"
                                     " FROM sales GROUP BY buyer_id")  # fmt: skip
    sold = {r["buyer_id"]: r["n"] for r in rows}
    # The daily count (37) binds before the budget ($5000 = 100 leads at $50).
    assert sold == {"capped": 37, "backfill": 163}, sold
    counters = await fetch(database_url, "SELECT period, sales, spent_cents FROM cap_counters")
    assert [(c["period"], c["sales"], c["spent_cents"]) for c in counters] == [("day", 37, 185000)]
    accepted = sim.counters("capped").accepted
    assert accepted == 37  # the buyer was never sent a lead it would have to be billed past cap


async def test_daily_budget_caps_spend(database_url: str) -> None:
    specs = [spec("pricey", 4000), spec("backfill", 1000)]
    async with BuyerSimulator(specs) as sim:
        buyers = [realtime_buyer(sim, "pricey", caps={"daily_budget": 100.0}),
                  realtime_buyer(sim, "backfill")]  # fmt: skip
        async with running_exchange(make_config(buyers), database_url) as ex:
            for n in range(5):
                _, body, _ = await ex.call(
                    "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": lead(n)}
                )
                assert body["status"] == "sold"
    rows = await fetch(database_url, "SELECT buyer_id FROM sales ORDER BY sale_id")
    assert [r["buyer_id"] for r in rows] == ["pricey", "pricey", "backfill", "backfill", "backfill"]


async def test_capped_buyer_is_not_pinged_and_shows_capped(database_url: str) -> None:
    specs = [spec("tiny", 3000), spec("other", 1000)]
    async with BuyerSimulator(specs) as sim:
        buyers = [realtime_buyer(sim, "tiny", caps={"hourly": 1}), realtime_buyer(sim, "other")]
        async with running_exchange(make_config(buyers), database_url) as ex:
            first = await ex.ping()
            assert (await ex.post(first["ping_id"]))["price"] == 25.5
            await asyncio.sleep(1.3)  # the cap view refreshes from the ledger every second
            second = await ex.ping()
            story = await ex.story(second["ping_id"])
            tiny = next(b for b in story["buyers"] if b["buyer"] == "tiny")
            assert tiny["outcome"] == "capped"
            assert "hourly cap of 1 leads reached" in tiny["reason"]
            assert sim.counters("tiny").pings == 1


# -- duplicates -----------------------------------------------------------------------------


async def test_buyer_is_not_offered_a_lead_it_already_bought(database_url: str) -> None:
    specs = [spec("remembers", 3000), spec("other", 1000)]
    async with BuyerSimulator(specs) as sim:
        buyers = [realtime_buyer(sim, "remembers", dedupe_days=30), realtime_buyer(sim, "other")]
        config = make_config(buyers, exchange={"dedupe_hash_key": DEDUPE_KEY})
        async with running_exchange(config, database_url) as ex:
            body = {"vertical": "auto_insurance", "lead": lead(1)}
            _, first, _ = await ex.call("POST", "/v1/leads", body)
            # Same person, differently written: the hash is of the normalised phone.
            again = {**lead(1), "phone": "+1 415 555 1001", "email": "other@example.com"}
            _, second, _ = await ex.call("POST", "/v1/leads", {**body, "lead": again})
            story = await ex.story(second["ping_id"])
            outcomes = {b["buyer"]: b["outcome"] for b in story["buyers"]}
            assert outcomes == {"remembers": "duplicate", "other": "bid"}
            assert first["price"] == 25.5 and second["price"] == 8.5
            # Through ping-post, the check happens at post time: the buyer is skipped.
            ping = await ex.ping()
            posted = await ex.post(ping["ping_id"], lead=again)
            assert posted["price"] == 8.5
            story = await ex.story(ping["ping_id"])
            assert [(a["buyer"], a["outcome"]) for a in story["post_attempts"]] == [
                ("remembers", "skipped"), ("other", "accepted")]  # fmt: skip
    hashes = await fetch(database_url, "SELECT phone_hash FROM sales")
    assert all(len(r["phone_hash"]) == 32 for r in hashes)


async def test_seller_sees_duplicate_when_the_vertical_sold_the_lead_recently(
    database_url: str,
) -> None:
    specs = [spec("a", 2000)]
    async with BuyerSimulator(specs) as sim:
        text = config_text([realtime_buyer(sim, "a")],
                           exchange={"dedupe_hash_key": DEDUPE_KEY})  # fmt: skip
        text = text.replace("auto_insurance:\n    fields:", "auto_insurance:\n    dedupe_days: 7\n"
                            "    fields:")  # fmt: skip
        assert "dedupe_days: 7" in text
        async with running_exchange(text, database_url) as ex:
            body = {"vertical": "auto_insurance", "lead": lead(5)}
            _, first, _ = await ex.call("POST", "/v1/leads", body)
            _, second, _ = await ex.call("POST", "/v1/leads", body)
            assert first["status"] == "sold"
            assert second == {"ping_id": second["ping_id"], "status": "unsold", "price": None,
                              "reason": "duplicate"}  # fmt: skip
            assert sim.counters("a").pings == 1


# -- shared leads ---------------------------------------------------------------------------


async def test_shared_lead_is_sold_to_exactly_n_buyers_each_at_its_bid(database_url: str) -> None:
    specs = [spec("b1", 4000), spec("b2", 3000, reject_rate=1.0), spec("b3", 2500),
             spec("b4", 2000), spec("b5", 1000)]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        text = config_text([realtime_buyer(sim, s.buyer_id) for s in specs])
        text = text.replace("auto_insurance:\n    fields:", "auto_insurance:\n    max_sales: 3\n"
                            "    fields:")  # fmt: skip
        async with running_exchange(text, database_url) as ex:
            answer = await ex.ping()
            assert answer["price"] == 80.75  # (40 + 30 + 25) x 0.85: the top three bids
            sold = await ex.post(answer["ping_id"])
            assert sold["status"] == "sold"
            assert sold["price"] == 72.25  # (40 + 25 + 20) x 0.85: b2 rejected
            assert sim.counters("b5").posts == 0
    rows = await fetch(database_url, "SELECT buyer_id, sale_seq, price_cents, payout_cents"
                                     " FROM sales ORDER BY sale_seq")  # fmt: skip
    assert [(r["buyer_id"], r["sale_seq"], r["price_cents"], r["payout_cents"]) for r in rows] == [
        ("b1", 1, 4000, 3400), ("b3", 2, 2500, 2125), ("b4", 3, 2000, 1700)]  # fmt: skip


# -- tiers ----------------------------------------------------------------------------------


def tiered(buyer_id: str, weight: int = 1) -> Bid:
    return Bid(buyer_id, 900, 0, 0, 0, fixed_price=True, tier=1, weight=weight)


def test_weighted_tier_split_is_within_two_points_over_ten_thousand_leads() -> None:
    tree = [tiered("a", 60), tiered("b", 20), tiered("c", 20)]
    rng = random.Random(20261123)
    firsts = Counter(arrange_tiers(tree, {1: "weighted"}, {}, rng)[0].buyer_id
                     for _ in range(10_000))  # fmt: skip
    shares = {b: n / 10_000 for b, n in firsts.items()}
    assert abs(shares["a"] - 0.60) <= 0.02
    assert abs(shares["b"] - 0.20) <= 0.02
    assert abs(shares["c"] - 0.20) <= 0.02


def test_realtime_bids_come_before_tiers_and_tiers_in_order() -> None:
    from exchange.core.ranking import build_tree

    realtime = Bid("rt", 500, 0, 0, 10)
    tier2 = Bid("t2", 5000, 0, 0, 0, fixed_price=True, tier=2)
    tier1 = Bid("t1", 100, 0, 0, 0, fixed_price=True, tier=1)
    untiered = Bid("fixed", 700, 0, 0, 0, fixed_price=True)
    tree = build_tree([tier2, realtime, tier1, untiered], ["company_size"], "p")
    assert [b.buyer_id for b in tree] == ["fixed", "rt", "t1", "t2"]


async def test_round_robin_tier_rotates_and_remembers_across_a_restart(
    database_url: str,
) -> None:
    specs = [spec(n, 1) for n in ("rr-a", "rr-b", "rr-c")]
    async with BuyerSimulator(specs) as sim:
        buyers = [{"id": s.buyer_id, "verticals": ["auto_insurance"], "price": 9.0, "tier": 1,
                   "post_url": sim.post_url(s.buyer_id), "secret": s.secret.decode()}
                  for s in specs]  # fmt: skip
        text = config_text(buyers).replace(
            "auto_insurance:\n    fields:",
            "auto_insurance:\n    tiers: {1: {distribution: round_robin}}\n    fields:",
        )
        winners = []
        for _ in range(2):  # two processes in turn: the rotation lives in the database
            async with running_exchange(text, database_url) as ex:
                for n in range(4):
                    _, body, _ = await ex.call(
                        "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": lead(n)}
                    )
                    story = await ex.story(body["ping_id"])
                    winners.append(story["sale"]["buyer"])
    assert winners == ["rr-a", "rr-b", "rr-c", "rr-a", "rr-b", "rr-c", "rr-a", "rr-b"]


# -- returns --------------------------------------------------------------------------------


async def test_buyer_returns_a_lead_and_the_ledger_credits_it(database_url: str) -> None:
    specs = [spec("returner", 3000)]
    async with BuyerSimulator(specs) as sim:
        buyers = [realtime_buyer(sim, "returner", return_api_key="returner-key-0123456789",
                                 return_window_days=7)]  # fmt: skip
        async with running_exchange(make_config(buyers), database_url) as ex:
            _, sold, _ = await ex.call(
                "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": lead(1)}
            )
            body = {"ping_id": sold["ping_id"], "reason": "disconnected number"}
            status, returned, _ = await ex.call("POST", "/v1/returns", body,
                                                key="returner-key-0123456789")  # fmt: skip
            assert status == 201, returned
            assert returned == {"ping_id": sold["ping_id"], "status": "returned", "credit": 30.0,
                                "seller_payout_reversed": 25.5}  # fmt: skip
            status, _, _ = await ex.call("POST", "/v1/returns", body,
                                             key="returner-key-0123456789")  # fmt: skip
            assert status == 409
            status, _, _ = await ex.call("POST", "/v1/returns", body, key=SELLER_KEY)
            assert status == 401
            _, other, _ = await ex.call(
                "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": lead(2)}
            )
            ex.ctx.clock.advance(timedelta(days=8))
            status, late, _ = await ex.call(
                "POST", "/v1/returns", {"ping_id": other["ping_id"], "reason": "late"},
                key="returner-key-0123456789",
            )  # fmt: skip
            assert status == 403, late
            ex.ctx.clock.reset()
            status, report, _ = await ex.call("GET", "/v1/reports/sellers", key=ADMIN_TOKEN)
            acme = next(r for r in report["sellers"] if r["seller"] == "acme-media")
            assert acme["sales"] == 2 and acme["returns"] == 1 and acme["return_rate"] == 0.5
            assert acme["payout"] == 51.0 and acme["net_payout"] == 25.5
            status, report, _ = await ex.call("GET", "/v1/reports/buyers", key=ADMIN_TOKEN)
            returner = report["buyers"][0]
            assert returner["returns"] == 1 and returner["net_revenue"] == 30.0
    rows = await fetch(database_url, "SELECT credit_cents, payout_reversal_cents, reason"
                                     " FROM returns")  # fmt: skip
    assert [tuple(r) for r in rows] == [(3000, 2550, "disconnected number")]


def test_priority_tier_keeps_rank_order() -> None:
    tree = [tiered("x"), tiered("y"), tiered("z")]
    order = arrange_tiers(tree, {1: "priority"}, {}, random.Random(1))
    assert [b.buyer_id for b in order] == ["x", "y", "z"]
