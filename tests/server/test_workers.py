"""`lead-exchange serve --workers 2`: two processes on one port, one ledger, one /metrics
that sums what every worker recorded, whichever worker a scrape reaches; a worker that
dies is replaced, and workers that cannot start stop the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exchange.server.supervisor import RESTART_LIMIT
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.faults import ExchangeProcess, free_port
from tests.support.harness import FULL_LEAD, PING_LEAD, SELLER_KEY, config_text, realtime_buyer

PINGS = 40


@pytest.fixture
async def buyers() -> AsyncIterator[BuyerSimulator]:
    specs = [
        SimulatedBuyerSpec("alpha", bid_cents=(1500, 3000), latency_ms=(1, 5), seed=1),
        SimulatedBuyerSpec("beta", bid_cents=(1000, 2500), latency_ms=(1, 5), seed=2),
    ]
    async with BuyerSimulator(specs, record=False) as sim:
        yield sim


@pytest.fixture
async def workers(
    tmp_path: Path, buyers: BuyerSimulator, database_url: str
) -> AsyncIterator[ExchangeProcess]:
    """`serve --workers 2` with the two buyers, started; stopped at the end if it runs."""
    exchange = _two_workers(
        tmp_path, database_url, [realtime_buyer(buyers, b) for b in buyers.buyer_ids()]
    )
    await exchange.start()
    try:
        yield exchange
    finally:
        await _stop(exchange)


def _two_workers(
    tmp_path: Path, database_url: str, buyers: list[dict[str, object]]
) -> ExchangeProcess:
    config = tmp_path / "exchange.yaml"
    config.write_text(config_text(buyers))
    return ExchangeProcess(
        config, database_url, tmp_path / "exchange.log", extra_args=["--workers", "2"]
    )


async def _stop(exchange: ExchangeProcess) -> int:
    exchange.signal(signal.SIGTERM)
    try:
        return await exchange.wait(30)
    finally:
        exchange.kill()


async def _post_retrying_refused_connects(
    http: aiohttp.ClientSession, url: str, post: dict[str, object]
) -> tuple[int, object]:
    """The seller's retry, as a seller's client makes it: a connection refused while the
    supervisor replaces the killed worker (seen once in a few dozen runs on a loaded
    machine, the SYN landing as the listening sockets change) is tried again."""
    for attempt in range(3):
        try:
            async with http.post(url + "/v1/post", json=post) as response:
                return response.status, await response.json()
        except aiohttp.ClientConnectorError:
            if attempt == 2:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


def _seller() -> aiohttp.ClientSession:
    """A seller's client with a connection per request, so that the kernel spreads the
    requests over both workers."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        headers={"Authorization": f"Bearer {SELLER_KEY}"},
    )


def _ping(http: aiohttp.ClientSession, url: str) -> Any:
    return http.post(url + "/v1/ping", json={"vertical": "auto_insurance", "lead": PING_LEAD})


def _counted(text: str, counter: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == counter:
            return sum(s.value for s in family.samples if s.name == counter + "_total")
    return 0.0


async def test_every_workers_metrics_add_up_on_each_scrape(workers: ExchangeProcess) -> None:
    async with _seller() as http:
        for _ in range(PINGS):
            async with _ping(http, workers.url) as response:
                assert response.status == 200, await response.text()
        # Workers hand their counts over at least every second; then every scrape,
        # whichever worker answers it, has them all.
        give_up = time.monotonic() + 10
        counted: list[float] = []
        while time.monotonic() < give_up:
            async with http.get(workers.url + "/metrics") as response:
                assert response.status == 200
                counted.append(_counted(await response.text(), "exchange_pings"))
            if counted[-5:] == [PINGS] * 5:
                break
            await asyncio.sleep(0.2)
    assert counted[-5:] == [PINGS] * 5, (counted, workers.log_tail())


def _events(log_path: Path, event: str) -> list[dict[str, object]]:
    # Workers share the log file: a record and its line break are two writes, so two
    # workers' records can meet on one line. Every record on a line is read.
    decoder = json.JSONDecoder()
    found = []
    for line in log_path.read_text().splitlines():
        at = 0
        while line.startswith("{", at):
            record, at = decoder.raw_decode(line, at)
            if record.get("event") == event:
                found.append(record)
    return found


async def _wait_for(log_path: Path, event: str, count: int, timeout_s: float = 30.0) -> list[int]:
    """The pids of the first ``count`` such events, once there are that many."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        records = _events(log_path, event)
        if len(records) >= count:
            return [int(str(r["pid"])) for r in records[:count]]
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} {event} within {timeout_s} s")


async def _ping_until_answered(url: str, timeout_s: float = 30.0) -> int:
    give_up = time.monotonic() + timeout_s
    async with _seller() as http:
        while time.monotonic() < give_up:
            try:
                async with _ping(http, url) as response:
                    if response.status == 200:
                        return 200
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    return 0


async def test_a_killed_worker_is_replaced_and_the_replacements_serve(
    workers: ExchangeProcess,
) -> None:
    log = workers.log_path
    first, second = await _wait_for(log, "worker_started", 2)
    os.kill(first, signal.SIGKILL)
    *_, replacement = await _wait_for(log, "worker_started", 3)
    # With the second original gone too, only replacements can answer.
    os.kill(second, signal.SIGKILL)
    *_, other_replacement = await _wait_for(log, "worker_started", 4)
    answered = await _ping_until_answered(workers.url)
    exited = {int(str(r["pid"])) for r in _events(log, "worker_exited")}
    async with _seller() as http, http.get(workers.url + "/metrics") as response:
        restarts = _counted(await response.text(), "exchange_worker_restarts")
    code = await _stop(workers)
    assert answered == 200, workers.log_tail()
    assert exited == {first, second}
    assert restarts == 2  # counted by the supervisor, shown by the workers
    assert len({first, second, replacement, other_replacement}) == 4
    assert code == 0, workers.log_tail()


async def test_workers_that_cannot_start_stop_the_server(tmp_path: Path) -> None:
    """No database to reach: each worker exits at start; after RESTART_LIMIT replacements
    in a row the server gives up with exit code 1 instead of restarting forever."""
    buyer = {"id": "b1", "verticals": ["auto_insurance"], "ping_url": "http://127.0.0.1:9/ping",
             "post_url": "http://127.0.0.1:9/post", "secret": "s" * 32}  # fmt: skip
    nowhere = f"postgresql://exchange@127.0.0.1:{free_port()}/ledger"
    exchange = _two_workers(tmp_path, nowhere, [buyer])
    exchange.launch()
    try:
        code = await exchange.wait(60)
    finally:
        exchange.kill()
    assert code == 1, exchange.log_tail()
    assert len(_events(exchange.log_path, "workers_keep_exiting")) == 1
    assert len(_events(exchange.log_path, "worker_started")) == 2 + RESTART_LIMIT


async def test_a_killed_workers_post_claims_are_closed_at_once(
    tmp_path: Path, database_url: str
) -> None:
    """A worker killed while it walks a post leaves the post's claim in progress. Its
    supervisor closes that claim as soon as it sees the worker gone, so the seller's retry
    answers at once instead of after the claim ages out (post_deadline_ms + 5 s, 20 s
    here)."""
    specs = [
        SimulatedBuyerSpec(
            "slow-poster", bid_cents=(2000, 2000), latency_ms=(1, 3), post_latency_ms=(5000, 5000)
        )
    ]
    async with BuyerSimulator(specs, record=False) as sim:
        exchange = _two_workers(tmp_path, database_url, [realtime_buyer(sim, "slow-poster")])
        log = exchange.log_path
        await exchange.start()
        ledger = await asyncpg.connect(database_url)
        try:
            await _wait_for(log, "worker_started", 2)
            pid_of = {str(r["owner"]): int(str(r["pid"])) for r in _events(log, "worker_started")}
            async with _seller() as http:
                async with _ping(http, exchange.url) as response:
                    ping_id = (await response.json())["ping_id"]
                post = {"ping_id": ping_id, "lead": FULL_LEAD}
                walking = asyncio.ensure_future(http.post(exchange.url + "/v1/post", json=post))
                claimed_by = None
                for _ in range(200):
                    claimed_by = await ledger.fetchval(
                        "SELECT claimed_by FROM posts WHERE ping_id = $1", uuid.UUID(ping_id)
                    )
                    if claimed_by is not None:
                        break
                    await asyncio.sleep(0.02)
                assert claimed_by in pid_of
                os.kill(pid_of[claimed_by], signal.SIGKILL)
                with contextlib.suppress(aiohttp.ClientError):
                    (await walking).release()
                status = "in_progress"
                give_up = time.monotonic() + 5
                while status == "in_progress" and time.monotonic() < give_up:
                    await asyncio.sleep(0.1)
                    status = await ledger.fetchval(
                        "SELECT status FROM posts WHERE ping_id = $1", uuid.UUID(ping_id)
                    )
                retried = await _post_retrying_refused_connects(http, exchange.url, post)
        finally:
            await ledger.close()
            await _stop(exchange)
    assert status == "unsold", exchange.log_tail()
    assert retried[0] == 200 and retried[1]["status"] == "unsold", retried
    assert retried[1]["reason"] == "post_interrupted"
    assert len(_events(log, "worker_claims_closed")) == 1
