"""The buyer simulator, over real loopback HTTP with an aiohttp client."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from buyers.adapter import BuyerEndpoint, HttpResponse, PingOffer, PostOffer
from buyers.json_adapter import JsonAdapter
from exchange.core.outcomes import BidOutcome, PostOutcome
from exchange.tools.simulator import (
    BuyerSimulator,
    SimulatedBuyerSpec,
    load_specs,
    spec_from_mapping,
)

REPO = Path(__file__).resolve().parents[2]

SECRET = b"sim-secret"
PING = PingOffer("p-1", "auto_insurance", 500, 100, {"state": "CA", "zip": "90210"})
POST = PostOffer(
    "p-1", "bid-1", 1250, "auto_insurance", {"state": "CA", "zip": "90210", "email": "a@b.co"}
)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _adapter(sim: BuyerSimulator, buyer_id: str, secret: bytes = SECRET) -> JsonAdapter:
    endpoint = BuyerEndpoint(buyer_id, sim.ping_url(buyer_id), sim.post_url(buyer_id), secret)
    return JsonAdapter(endpoint)


async def _send(
    client: aiohttp.ClientSession,
    adapter: JsonAdapter,
    offer: PingOffer | PostOffer,
    timeout_s: float = 5.0,
) -> HttpResponse:
    if isinstance(offer, PingOffer):
        request = adapter.ping_request(offer, int(time.time()))
    else:
        request = adapter.post_request(offer, int(time.time()))
    async with client.request(
        request.method,
        request.url,
        headers=list(request.all_headers),
        data=request.body,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        allow_redirects=False,
    ) as response:
        body = await response.read()
        headers = {name.lower(): value for name, value in response.headers.items()}
        return HttpResponse(response.status, headers, body)


async def test_bids_fall_within_the_configured_cents_range(
    client: aiohttp.ClientSession,
) -> None:
    spec = SimulatedBuyerSpec("b1", SECRET, bid_cents=(700, 725), seed=1)
    async with BuyerSimulator([spec]) as sim:
        adapter = _adapter(sim, "b1")
        replies = [adapter.read_bid(await _send(client, adapter, PING)) for _ in range(30)]
        assert {reply.outcome for reply in replies} == {BidOutcome.BID}
        prices = {reply.price_cents for reply in replies}
        assert all(price is not None and 700 <= price <= 725 for price in prices)
        assert len(prices) > 1
        assert len({reply.bid_id for reply in replies}) == 30
        counters = sim.counters("b1")
        assert (counters.pings, counters.bids) == (30, 30)


async def test_a_fixed_bid_range_bids_that_price(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1", bid_cents=(1999, 1999))]) as sim:
        adapter = _adapter(sim, "b1")
        reply = adapter.read_bid(await _send(client, adapter, PING))
        assert reply.price_cents == 1999


async def test_no_bid_rate_one_answers_204(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1", no_bid_rate=1.0)]) as sim:
        response = await _send(client, _adapter(sim, "b1"), PING)
        assert response.status == 204
        assert sim.counters("b1").no_bids == 1


async def test_a_hanging_buyer_outlasts_a_short_client_timeout(
    client: aiohttp.ClientSession,
) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1", hang_rate=1.0)]) as sim:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await _send(client, _adapter(sim, "b1"), PING, timeout_s=0.2)
        assert time.monotonic() - started < 1.0
        assert sim.counters("b1").hangs == 1


async def test_a_buyer_with_states_bids_only_on_leads_in_them(
    client: aiohttp.ClientSession,
) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1", states=("TX", "FL"))]) as sim:
        adapter = _adapter(sim, "b1")
        assert (await _send(client, adapter, PING)).status == 204  # a Californian lead
        texan = PingOffer("p-2", "auto_insurance", 500, 100, {"state": "TX", "zip": "75001"})
        assert adapter.read_bid(await _send(client, adapter, texan)).outcome is BidOutcome.BID
        counters = sim.counters("b1")
        assert (counters.pings, counters.no_bids, counters.bids) == (2, 1, 1)


async def test_latency_delays_the_answer(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1", latency_ms=(120, 120))]) as sim:
        started = time.monotonic()
        await _send(client, _adapter(sim, "b1"), PING)
        assert time.monotonic() - started >= 0.12


async def test_error_rate_one_answers_500(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1", error_rate=1.0)]) as sim:
        adapter = _adapter(sim, "b1")
        reply = adapter.read_bid(await _send(client, adapter, PING))
        assert (reply.outcome, reply.reason) == (BidOutcome.ERROR, "http 500")


async def test_posts_are_accepted_or_rejected_per_spec(client: aiohttp.ClientSession) -> None:
    specs = [SimulatedBuyerSpec("yes"), SimulatedBuyerSpec("no", reject_rate=1.0)]
    async with BuyerSimulator(specs) as sim:
        accepting, rejecting = _adapter(sim, "yes"), _adapter(sim, "no")
        accepted = accepting.read_post(await _send(client, accepting, POST))
        rejected = rejecting.read_post(await _send(client, rejecting, POST))
        assert accepted.outcome is PostOutcome.ACCEPTED
        assert accepted.buyer_lead_id
        assert (rejected.outcome, rejected.reason) == (PostOutcome.REJECTED, "simulated reject")
        assert sim.counters("yes").accepted == 1
        assert (sim.counters("no").posts, sim.counters("no").rejected) == (1, 1)


async def test_post_errors_answer_500(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1", post_error_rate=1.0)]) as sim:
        adapter = _adapter(sim, "b1")
        reply = adapter.read_post(await _send(client, adapter, POST))
        assert (reply.outcome, reply.reason) == (PostOutcome.ERROR, "http 500")


async def test_a_bad_or_missing_signature_gets_401(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1", SECRET)]) as sim:
        wrong = await _send(client, _adapter(sim, "b1", secret=b"wrong"), PING)
        assert wrong.status == 401
        async with client.post(sim.ping_url("b1"), data=b'{"ping_id": "x"}') as unsigned:
            assert unsigned.status == 401
        right = await _send(client, _adapter(sim, "b1"), PING)
        assert right.status == 200
        counters = sim.counters("b1")
        assert (counters.unauthorized, counters.bids) == (2, 1)


async def test_set_spec_changes_behaviour_at_runtime(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1")]) as sim:
        adapter = _adapter(sim, "b1")
        assert (await _send(client, adapter, PING)).status == 200
        sim.set_spec("b1", SimulatedBuyerSpec("b1", hang_rate=1.0))
        with pytest.raises(asyncio.TimeoutError):
            await _send(client, adapter, PING, timeout_s=0.2)
        sim.set_spec("b1", SimulatedBuyerSpec("b1", no_bid_rate=1.0))
        assert (await _send(client, adapter, PING)).status == 204
        with pytest.raises(ValueError, match="not 'b1'"):
            sim.set_spec("b1", SimulatedBuyerSpec("other"))


async def test_stop_returns_promptly_with_hanging_requests_in_flight(
    client: aiohttp.ClientSession,
) -> None:
    specs = [SimulatedBuyerSpec("b1", hang_rate=1.0), SimulatedBuyerSpec("b2", post_hang_rate=1.0)]
    sim = BuyerSimulator(specs)
    await sim.start()
    pending = [
        asyncio.create_task(_send(client, _adapter(sim, "b1"), PING, timeout_s=30)),
        asyncio.create_task(_send(client, _adapter(sim, "b2"), POST, timeout_s=30)),
    ]
    for _ in range(500):  # both requests are hanging inside the servers
        if sim.counters("b1").hangs + sim.counters("b2").hangs == 2:
            break
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - started < 0.5
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(result, aiohttp.ClientError) for result in results)
    assert sim.counters("b1").pings == 1  # still readable after stop


async def test_received_requests_are_recorded_for_inspection(
    client: aiohttp.ClientSession,
) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1", SECRET)]) as sim:
        adapter = _adapter(sim, "b1")
        await _send(client, adapter, PING)
        await _send(client, adapter, POST)
        ping, post = sim.received("b1")
        assert ping.path == "/ping"
        assert ping.body["lead"] == {"state": "CA", "zip": "90210"}
        assert "email" not in ping.body["lead"]
        assert post.path == "/post"
        assert post.body["lead"]["email"] == "a@b.co"
        assert post.headers["Content-Type"] == "application/json"
        assert orjson.loads(post.raw) == post.body
        sim.clear("b1")
        assert sim.received("b1") == []
        assert sim.counters("b1").pings == 0


async def test_recording_can_be_turned_off(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1")], record=False) as sim:
        await _send(client, _adapter(sim, "b1"), PING)
        assert sim.received("b1") == []
        assert sim.counters("b1").pings == 1


def _three_free_ports() -> int:
    """A base port with the next two free too, below the ephemeral range (32768+), where
    outgoing connections of other tests cannot take them meanwhile."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(20000, 30000)
        socks = []
        try:
            for offset in range(3):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no three consecutive free ports")


async def test_each_buyer_has_its_own_port_and_base_port_is_honoured() -> None:
    specs = [SimulatedBuyerSpec("a"), SimulatedBuyerSpec("b"), SimulatedBuyerSpec("c")]
    async with BuyerSimulator(specs) as free:
        assert len({free.port(buyer_id) for buyer_id in "abc"}) == 3
    base = _three_free_ports()
    async with BuyerSimulator(specs, base_port=base) as fixed:
        assert [fixed.port(buyer_id) for buyer_id in "abc"] == [base, base + 1, base + 2]
        assert fixed.ping_url("b") == f"http://127.0.0.1:{base + 1}/ping"


async def test_same_seed_gives_the_same_bids(client: aiohttp.ClientSession) -> None:
    async def prices() -> list[int | None]:
        async with BuyerSimulator([SimulatedBuyerSpec("b1", no_bid_rate=0.3, seed=7)]) as sim:
            adapter = _adapter(sim, "b1")
            return [
                adapter.read_bid(await _send(client, adapter, PING)).price_cents for _ in range(20)
            ]

    assert await prices() == await prices()


async def test_unknown_paths_and_methods_are_refused(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([SimulatedBuyerSpec("b1")]) as sim:
        async with client.get(sim.ping_url("b1")) as wrong_method:
            assert wrong_method.status == 405
        async with client.post(sim.ping_url("b1").replace("/ping", "/bid"), data=b"{}") as lost:
            assert lost.status == 404
        async with client.post(sim.ping_url("b1"), data=b"not json") as garbled:
            assert garbled.status == 400


def test_specs_refuse_bad_ranges_and_rates() -> None:
    with pytest.raises(ValueError, match="bid_cents"):
        SimulatedBuyerSpec("b1", bid_cents=(900, 100))
    with pytest.raises(ValueError, match="hang_rate"):
        SimulatedBuyerSpec("b1", hang_rate=1.5)
    with pytest.raises(ValueError, match="unknown key 'bid'"):
        spec_from_mapping("b1", {"bid": 5})


def test_yaml_config_lists_specs_by_buyer_id(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(
        "defaults: {latency_ms: [5, 20]}\n"
        "buyers:\n"
        "  big-insurer: {secret: s3cret, bid_cents: [1000, 1500], reject_rate: 0.1}\n"
        "  picky: {no_bid_rate: 0.9}\n"
    )
    specs = load_specs(config, count=3)
    by_id: dict[str, Any] = {spec.buyer_id: spec for spec in specs}
    assert list(by_id) == ["big-insurer", "picky", "sim-buyer-3"]
    assert by_id["big-insurer"].secret == b"s3cret"
    assert by_id["big-insurer"].bid_cents == (1000, 1500)
    assert by_id["picky"].latency_ms == (5, 20)
    assert by_id["sim-buyer-3"].latency_ms == (5, 20)


async def test_cli_prints_each_buyer_and_stops_on_sigterm(client: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exchange.tools.simulator",
        "--buyers",
        "2",
        "--base-port",
        "0",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            lines = [(await process.stdout.readline()).decode() for _ in range(2)]
        assert [line.split()[0] for line in lines] == ["sim-buyer-1", "sim-buyer-2"]
        ping_url = lines[1].split()[1].removeprefix("ping=")
        async with client.post(ping_url, data=b'{"ping_id": "p"}') as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
