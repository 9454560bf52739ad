"""The demo's sellers: leads sent to the exchange at a steady rate, from a process of their
own, timed as a seller would time them, with the client's own share kept apart.

    python -m exchange.tools.demo_sellers --url URL --rate R

Open loop: lead i is due at ``start + i / rate`` whatever the exchange does. Each ping is
timed three ways: ``ping`` from when it was due to its answer (what a seller sees),
``wait`` from due to the request leaving this client (time spent here: a late event
loop, a full connection pool), and ``wire`` from leaving to the answer. When ``wait``
grows, this client is the bottleneck, not the exchange. 80% of the leads that get a bid
are posted.

Every second one JSON line on standard output: that second's counts and latency tallies
(exchange/tools/demo_latency.py) and the auctions it finished (``recent``); the last one
has ``"final": true``. Stops on SIGTERM or when standard input closes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson

from exchange.core.money import parse_dollars
from exchange.server.supervisor import install_uvloop
from exchange.tools.demo_latency import LatencyTally
from exchange.tools.demo_market import (
    PII_FIELDS,
    POOL_MIN_PRICE,
    PULL_BUYER_KEY,
    SELLERS,
    TMAX_MS,
    VERTICAL_NAME,
    random_lead,
)
from exchange.tools.demo_processes import stop_when_parent_goes

POST_SHARE = 0.8  # of the leads that got a bid; the others found a better offer elsewhere
# Of the posts of sellers in the pool, those that ask a payout of at least POOL_MIN_PRICE.
MIN_PRICE_SHARE = 0.2
PULL_EVERY_S = 1.0  # the pull buyer's client lists the pool and claims its oldest offer
LATE_SLACK_MS = 5.0
RECENT = 8


@dataclass
class Window:
    """What happened in one second."""

    asked: int = 0  # leads due
    sent: int = 0  # pings that left this client
    answered: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    failed: int = 0  # no answer at all (connection refused or lost)
    bids: int = 0
    no_bids: int = 0
    posts: int = 0
    sold: int = 0
    unsold: int = 0
    payout_cents: int = 0
    pool_claims: int = 0  # offers the pull buyer claimed
    pool_paid_cents: int = 0
    queued: int = 0  # requests that waited for a free connection
    ping: LatencyTally = field(default_factory=LatencyTally)
    wait: LatencyTally = field(default_factory=LatencyTally)
    wire: LatencyTally = field(default_factory=LatencyTally)
    post: LatencyTally = field(default_factory=LatencyTally)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))

    def to_json(self, elapsed_s: float, in_flight: int, final: bool) -> bytes:
        late_ms = TMAX_MS + LATE_SLACK_MS
        return orjson.dumps(
            {
                "elapsed_s": elapsed_s,
                "asked": self.asked,
                "sent": self.sent,
                "answered": self.answered,
                "codes": self.codes,
                "failed": self.failed,
                "bids": self.bids,
                "no_bids": self.no_bids,
                "posts": self.posts,
                "sold": self.sold,
                "unsold": self.unsold,
                "payout_cents": self.payout_cents,
                "pool_claims": self.pool_claims,
                "pool_paid_cents": self.pool_paid_cents,
                "queued": self.queued,
                "in_flight": in_flight,
                "late": self.ping.above(late_ms),
                "late_wire": self.wire.above(late_ms),
                "ping": self.ping.to_json(),
                "wait": self.wait.to_json(),
                "wire": self.wire.to_json(),
                "post": self.post.to_json(),
                "recent": list(self.recent),
                "final": final,
            }
        )


class Sellers:
    """The traffic and its current window."""

    def __init__(self, url: str, rate: float, seed: int) -> None:
        self.url = url
        self.rate = rate
        self.rng = random.Random(seed)
        self.window = Window()
        self.in_flight = 0

    def _trace(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def sent(_: Any, ctx: SimpleNamespace, __: Any) -> None:
            holder = ctx.trace_request_ctx
            if isinstance(holder, dict) and "sent" in holder:
                holder["sent"] = time.perf_counter()
                self.window.sent += 1

        async def queued(*_: Any) -> None:
            self.window.queued += 1

        trace.on_request_headers_sent.append(sent)
        trace.on_connection_queued_start.append(queued)
        return trace

    async def run(self, stop: asyncio.Event, connections: int) -> None:
        tasks: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(limit=connections)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, trace_configs=[self._trace()]
        ) as http:
            interval = 1 / self.rate
            due = time.perf_counter()
            while not stop.is_set():
                self.window.asked += 1
                task = asyncio.create_task(self.one_lead(http, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                due += interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, due - time.perf_counter()))
            if tasks:
                await asyncio.wait(tasks, timeout=TMAX_MS / 1000 + 3)

    async def one_lead(self, http: aiohttp.ClientSession, due: float) -> None:
        self.in_flight += 1
        try:
            await self._one_lead(http, due)
        finally:
            self.in_flight -= 1

    async def _one_lead(self, http: aiohttp.ClientSession, due: float) -> None:
        rng = self.rng
        seller = rng.choice(SELLERS)
        lead = random_lead(rng)
        headers = {"Authorization": f"Bearer {seller['api_key']}"}
        ping = {
            "vertical": VERTICAL_NAME,
            "lead": {k: v for k, v in lead.items() if k not in PII_FIELDS},
        }
        holder: dict[str, float | None] = {"sent": None}
        story: dict[str, Any] = {"seller": seller["id"], "at": time.strftime("%H:%M:%S")}
        try:
            async with http.post(
                f"{self.url}/v1/ping", json=ping, headers=headers, trace_request_ctx=holder
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            self.window.failed += 1
            return
        answered = time.perf_counter()
        window = self.window  # a new second may have begun meanwhile
        sent = holder["sent"] or due
        window.answered += 1
        window.codes[str(status)] = window.codes.get(str(status), 0) + 1
        window.ping.add((answered - due) * 1000)
        window.wait.add(max(0.0, sent - due) * 1000)
        window.wire.add((answered - sent) * 1000)
        story["ms"] = round((answered - due) * 1000, 1)
        answer = orjson.loads(body) if status == 200 else {}
        story.update(
            ping_id=answer.get("ping_id"),
            status=answer.get("status", str(status)),
            price=answer.get("price"),
        )
        if answer.get("status") != "bid":
            window.no_bids += status == 200
            window.recent.append(story)
            return
        window.bids += 1
        if rng.random() >= POST_SHARE:
            story["post"] = "not posted"
            window.recent.append(story)
            return
        post: dict[str, Any] = {"ping_id": answer["ping_id"], "lead": lead}
        if seller.get("pool") and rng.random() < MIN_PRICE_SHARE:
            post["min_price"] = POOL_MIN_PRICE
        await self._post(http, headers, post, story)

    async def _post(
        self,
        http: aiohttp.ClientSession,
        headers: dict[str, str],
        post: dict[str, Any],
        story: dict[str, Any],
    ) -> None:
        started = time.perf_counter()
        try:
            async with http.post(f"{self.url}/v1/post", json=post, headers=headers) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            self.window.failed += 1
            return
        window = self.window
        window.posts += 1
        window.post.add((time.perf_counter() - started) * 1000)
        result = orjson.loads(body) if status == 200 else {}
        if result.get("status") == "sold":
            window.sold += 1
            window.payout_cents += parse_dollars(result["price"])
            story.update(post="sold", paid=result["price"])
        else:
            window.unsold += 1
            story.update(post="unsold", reason=result.get("reason") or f"HTTP {status}")
        window.recent.append(story)

    async def pull(self, stop: asyncio.Event) -> None:
        """The pull buyer's client: every PULL_EVERY_S, list the pool with the buyer's own
        key and claim the oldest offer (a cherry pick: it sees the non-PII fields)."""
        headers = {"Authorization": f"Bearer {PULL_BUYER_KEY}"}
        pool = f"{self.url}/v1/pool?vertical={VERTICAL_NAME}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), PULL_EVERY_S)
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(pool, headers=headers) as response:
                        offers = (await response.json()).get("offers", [])
                    if not offers:
                        continue
                    claim = f"{self.url}/v1/pool/{offers[-1]['lead_id']}/claim"
                    async with http.post(claim, headers=headers) as response:
                        if response.status == 200:
                            won = await response.json()
                            self.window.pool_claims += 1
                            self.window.pool_paid_cents += parse_dollars(won["price"])

    def flush(self, elapsed_s: float, final: bool = False) -> None:
        line = self.window.to_json(elapsed_s, self.in_flight, final)
        self.window = Window()
        sys.stdout.buffer.write(line + b"\n")
        sys.stdout.flush()


async def run(url: str, rate: float, connections: int, seed: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sellers = Sellers(url, rate, seed)
    async with stop_when_parent_goes(stop):
        traffic = asyncio.create_task(sellers.run(stop, connections))
        puller = asyncio.create_task(sellers.pull(stop))
        last = time.perf_counter()
        while not traffic.done():
            await asyncio.wait([traffic], timeout=max(0.0, last + 1.0 - time.perf_counter()))
            now = time.perf_counter()
            if not traffic.done():
                sellers.flush(now - last)
                last = now
        await puller
        sellers.flush(time.perf_counter() - last, final=True)
        traffic.result()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exchange.tools.demo_sellers")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=50.0, help="leads per second")
    parser.add_argument("--connections", type=int, default=256, help="the client's pool")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    install_uvloop()
    asyncio.run(run(args.url, args.rate, args.connections, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
