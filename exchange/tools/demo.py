"""`lead-exchange demo`: the whole loop on one machine. An embedded PostgreSQL, simulated
buyers on loopback ports, the exchange, and sellers sending leads at a steady rate, with
a live summary line every second.

Most buyers speak our JSON; some speak the formats of real buyer APIs (form fields with
XML answers, XML, custom JSON: exchange/tools/dialects.py) and are configured as
``adapter: http`` buyers whose templates the simulator writes to match."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from exchange.app import AppOptions, create_app
from exchange.config import parse_config
from exchange.core.money import cents_to_dollars, parse_dollars
from exchange.core.outcomes import PostStatus
from exchange.server.embedded import EmbeddedPostgres
from exchange.telemetry.logs import configure_logging
from exchange.tools.dialects import OUR_JSON, Dialect
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec

SELLERS = [
    {"id": "acme-media", "api_key": "acme-demo-key-0123456789", "payout_share": 0.85, "floor": 2.0},
    {"id": "quote-forms-co", "api_key": "quote-demo-key-0123456789", "payout_share": 0.8,
     "floor": 5.0},
]  # fmt: skip
VERTICAL: dict[str, dict[str, dict[str, Any]]] = {
    "fields": {
        "first_name": {"type": "string", "pii": True, "required": True},
        "last_name": {"type": "string", "pii": True, "required": True},
        "email": {"type": "email", "pii": True, "required": True},
        "phone": {"type": "phone", "pii": True, "required": True},
        "zip": {"type": "zip", "required": True},
        "state": {"type": "state", "required": True},
        "age": {"type": "integer", "min": 16, "max": 120},
        "credit_rating": {"type": "enum", "values": ["excellent", "good", "fair", "poor"]},
    }
}
STATES = {"CA": "902", "TX": "750", "FL": "331", "NY": "100", "IL": "606", "WA": "981"}
PII_FIELDS = {name for name, spec in VERTICAL["fields"].items() if spec.get("pii")}
# Buyers (by position, in every group of eight) that speak another API than ours, with
# their credentials; the rest, at least half, speak our JSON and sign with a secret.
DIALECTS = {
    1: Dialect("form", api_key="boberdoo-demo-key"),
    3: Dialect("xml", api_key="crm-demo:crm-demo-password"),
    5: Dialect("custom_json", api_key="px-demo-api-key"),
}
OUT_OF_AREA = {3: ("CA", "TX", "FL", "NY")}  # the CRM buyer covers these states only


def buyer_specs(count: int) -> list[SimulatedBuyerSpec]:
    """A varied market: big and small bidders, slow ones, some that hang or reject, in
    our JSON and in other buyer APIs."""
    specs = []
    for n in range(count):
        rng = random.Random(n)
        low = rng.randrange(300, 2000)
        dialect = DIALECTS.get(n % 8)
        specs.append(
            SimulatedBuyerSpec(
                buyer_id=f"buyer-{n + 1}"
                if dialect is None
                else f"buyer-{n + 1}-{dialect.format.replace('_', '-')}",
                secret=b"" if dialect is not None else f"demo-secret-{n + 1}".encode(),
                bid_cents=(low, low + rng.randrange(500, 3000)),
                no_bid_rate=rng.choice([0.1, 0.2, 0.4]),
                latency_ms=(5, rng.choice([40, 80, 150, 400])),
                hang_rate=0.03 if n % 4 == 3 else 0.0,
                error_rate=0.01,
                reject_rate=rng.choice([0.05, 0.15, 0.3]),
                seed=n,
                dialect=dialect or OUR_JSON,
                states=OUT_OF_AREA.get(n % 8, ()),
            )
        )
    return specs


def demo_config(sim: BuyerSimulator, specs: list[SimulatedBuyerSpec]) -> str:
    buyers: list[dict[str, Any]] = []
    for n, spec in enumerate(specs):
        buyer: dict[str, Any] = {
            "id": spec.buyer_id,
            "company_size": [5000, 1200, 300, 40][n % 4],
            "priority": n % 5,
            "verticals": ["auto_insurance"],
            **sim.exchange_buyer(spec.buyer_id, VERTICAL["fields"], PII_FIELDS),
            "timeout_ms": 300,
        }
        if n % 3 == 1:
            buyer["filters"] = {"state": {"in": ["CA", "TX", "FL"]}}
        buyers.append(buyer)
    fixed = SimulatedBuyerSpec("backfill-fixed", secret=b"demo-secret-fixed", reject_rate=0.1)
    sim_fixed_url = sim.post_url(fixed.buyer_id)
    buyers.append(
        {"id": "backfill-fixed", "verticals": ["auto_insurance"], "price": 4.0,
         "post_url": sim_fixed_url, "secret": "demo-secret-fixed"}
    )  # fmt: skip
    doc = {
        "exchange": {"tmax_ms": 500, "admin_token": "demo-admin-token-0123456789"},
        "verticals": {"auto_insurance": VERTICAL},
        "sellers": SELLERS,
        "buyers": buyers,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def random_lead(rng: random.Random) -> dict[str, Any]:
    state = rng.choice(list(STATES))
    return {
        "first_name": rng.choice(["Ada", "Grace", "Alan", "Edsger", "Barbara"]),
        "last_name": rng.choice(["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov"]),
        "email": f"lead{rng.randrange(10**6)}@example.com",
        "phone": f"(415) 555-{rng.randrange(1000, 9999)}",
        "zip": STATES[state] + f"{rng.randrange(100):02d}",
        "state": state,
        "age": rng.randrange(18, 80),
        "credit_rating": rng.choice(["excellent", "good", "fair", "poor"]),
    }


@dataclass
class Tally:
    pings: int = 0
    bids: int = 0
    posts: int = 0
    sold: int = 0
    payout_cents: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def fill_rate(self) -> float:
        return self.sold / self.pings if self.pings else 0.0

    def add(self, other: Tally) -> None:
        for name in ("pings", "bids", "posts", "sold", "payout_cents", "errors"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies_ms.extend(other.latencies_ms)


def p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


async def one_lead(
    http: aiohttp.ClientSession, url: str, key: str, rng: random.Random, tally: Tally
) -> None:
    lead = random_lead(rng)
    headers = {"Authorization": f"Bearer {key}"}
    ping_lead = {k: v for k, v in lead.items() if k not in PII_FIELDS}
    started = time.perf_counter()
    async with http.post(f"{url}/v1/ping", json={"vertical": "auto_insurance", "lead": ping_lead},
                         headers=headers) as response:  # fmt: skip
        answer = await response.json()
    tally.latencies_ms.append((time.perf_counter() - started) * 1000)
    tally.pings += 1
    if response.status != 200:
        tally.errors += 1
        return
    if answer["status"] != "bid":
        return
    tally.bids += 1
    if rng.random() > 0.8:  # the seller found a better offer elsewhere
        return
    tally.posts += 1
    async with http.post(f"{url}/v1/post", json={"ping_id": answer["ping_id"], "lead": lead},
                         headers=headers) as response:  # fmt: skip
        result = await response.json()
    if response.status != 200:
        tally.errors += 1
    elif result["status"] == PostStatus.SOLD:
        tally.sold += 1
        tally.payout_cents += parse_dollars(result["price"])


async def traffic(url: str, rate: float, stop: asyncio.Event, window: Tally) -> None:
    rng = random.Random(42)
    tasks: set[asyncio.Task[None]] = set()
    interval = 1 / rate
    next_at = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            seller = rng.choice(SELLERS)
            task = asyncio.create_task(one_lead(http, url, str(seller["api_key"]), rng, window))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.perf_counter()))
        if tasks:
            await asyncio.wait(tasks, timeout=5)


def summary_line(elapsed: float, window: Tally, total: Tally) -> str:
    bid_rate = total.bids / total.pings if total.pings else 0.0
    return (
        f"t={elapsed:5.0f}s  pings/s={window.pings:5d}  bid rate={bid_rate:6.1%}  "
        f"fill rate={total.fill_rate:6.1%}  sold={total.sold:6d}  "
        f"seller payouts=${cents_to_dollars(total.payout_cents):,}  "
        f"p95 ping={p95(window.latencies_ms):6.1f} ms  errors={total.errors}"
    )


def buyer_lines(sim: BuyerSimulator) -> list[str]:
    """What each simulated buyer saw and did, as the buyers themselves counted it."""
    lines = [f"{'buyer':<24} {'format':<12} {'pings':>7} {'bids':>7} {'posts':>6} {'accepted':>8}"]
    for buyer_id in sim.buyer_ids():
        c = sim.counters(buyer_id)
        lines.append(
            f"{buyer_id:<24} {sim.spec(buyer_id).dialect.format:<12} "
            f"{c.pings:>7} {c.bids:>7} {c.posts:>6} {c.accepted:>8}"
        )
    return lines


def final_line(elapsed: float, total: Tally) -> str:
    return (
        f"final: {elapsed:.0f}s  {total.pings / elapsed:.1f} pings/s on average  "
        f"pings={total.pings}  sold={total.sold}  fill rate={total.fill_rate:.1%}  "
        f"seller payouts=${cents_to_dollars(total.payout_cents):,}  "
        f"p95 ping={p95(total.latencies_ms):.1f} ms  errors={total.errors}"
    )


async def run_demo(args: argparse.Namespace) -> int:
    configure_logging(json=False, level="warning")
    data_dir = Path(args.data_dir)
    embedded = EmbeddedPostgres(data_dir)
    database_url = embedded.start()
    specs = buyer_specs(args.buyers)
    try:
        async with BuyerSimulator(
            [*specs, SimulatedBuyerSpec("backfill-fixed", secret=b"demo-secret-fixed",
                                        reject_rate=0.1)],
            record=False,
        ) as sim:  # fmt: skip
            loaded = parse_config(demo_config(sim, specs), "<demo>", env={})
            app = create_app(loaded, AppOptions(database_url=database_url))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", args.port).start()
            url = f"http://127.0.0.1:{args.port}"
            print(f"exchange on {url} (database in {data_dir}), {len(specs) + 1} simulated "
                  f"buyers, {args.rate:g} leads/s; Ctrl-C to stop")  # fmt: skip
            print(f"try: curl -s {url}/metrics | grep exchange_sales")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            if args.duration:
                loop.call_later(args.duration, stop.set)
            window, total = Tally(), Tally()
            generator = asyncio.create_task(traffic(url, args.rate, stop, window))
            started = time.perf_counter()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                total.add(window)
                print(summary_line(time.perf_counter() - started, window, total), flush=True)
                window.__init__()  # type: ignore[misc]
            await generator
            total.add(window)
            elapsed = time.perf_counter() - started
            print(final_line(elapsed, total))
            print("\n".join(buyer_lines(sim)))
            await runner.cleanup()
    finally:
        embedded.stop()
    return 0
