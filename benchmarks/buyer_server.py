"""Lean loopback buyers for the benchmark: canned answers over keep-alive HTTP/1.1.

    python -m benchmarks.buyer_server --scenario FILE

The aiohttp-based simulator in buyers/ is the reference for behaviour, but at tens of
thousands of requests per second it costs more CPU than the exchange it is meant to
load (the benchmark measures both; see docs/benchmarks.md). This one is an
``asyncio.Protocol`` per connection on uvloop, with ``httptools`` finding where each
request ends; every answer is a precomputed byte string. Each buyer has one port for
pings and another for posts, so no URL needs parsing. Latency is a timer, not a sleeping
task; a hanging request is simply never answered (the client gives up and closes).

The scenario file is JSON: ``{"modes": {"normal": [behaviour...], "faulty": [...]}}``,
one behaviour per buyer (benchmarks.scenario.BuyerBehaviour as a dict).

Control on stdin, one command a line, each answered by one JSON line on stdout:
``stats`` (counters since start, this process's CPU seconds) and ``mode NAME``. The
first stdout line lists the ports. EOF on stdin stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import sys
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvloop

from benchmarks.scenario import BuyerBehaviour, behaviours_from_json

_TABLE_SIZE = 4096  # pre-drawn answers per buyer, used in a cycle
_JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
NO_BID = b"HTTP/1.1 204 No Content\r\n\r\n"
ERROR = b'HTTP/1.1 500 Internal Server Error\r\nContent-Length: 17\r\n\r\n{"error":"boom!"}'


def _json_answer(payload: dict[str, Any]) -> bytes:
    body = orjson.dumps(payload)
    return _JSON_HEAD % len(body) + body


@dataclass(slots=True)
class Counters:
    connections: int = 0
    requests: int = 0
    pings: int = 0
    posts: int = 0
    hangs: int = 0


class _Endpoint:
    """One buyer's ping or post port: a cycle of pre-drawn (delay, answer) pairs.

    ``answer`` None means hang. Tables are drawn per mode at start, so switching mode
    costs nothing on the hot path.
    """

    def __init__(self, tables: dict[str, list[tuple[float, bytes | None]]], counters: Counters):
        self._tables = tables
        self._table = tables["normal"]
        self._index = 0
        self.counters = counters

    def set_mode(self, mode: str) -> None:
        self._table = self._tables[mode]

    def next_answer(self) -> tuple[float, bytes | None]:
        self._index = (self._index + 1) % _TABLE_SIZE
        return self._table[self._index]


def _ping_table(behaviour: BuyerBehaviour, rng: random.Random) -> list[tuple[float, bytes | None]]:
    bids = [
        _json_answer({"bid": cents / 100, "bid_id": f"b{n}"})
        for n, cents in enumerate(rng.randint(*behaviour.bid_cents) for _ in range(64))
    ]
    table: list[tuple[float, bytes | None]] = []
    for _ in range(_TABLE_SIZE):
        delay = rng.uniform(*behaviour.latency_ms) / 1000
        roll = rng.random()
        answer: bytes | None
        if roll < behaviour.hang_rate:
            answer = None
        elif roll < behaviour.hang_rate + behaviour.error_rate:
            answer = ERROR
        elif roll < behaviour.hang_rate + behaviour.error_rate + behaviour.no_bid_rate:
            answer = NO_BID
        else:
            answer = rng.choice(bids)
        table.append((delay, answer))
    return table


def _post_table(behaviour: BuyerBehaviour, rng: random.Random) -> list[tuple[float, bytes | None]]:
    accept = [_json_answer({"accepted": True, "buyer_lead_id": f"L{n}"}) for n in range(16)]
    reject = _json_answer({"accepted": False, "reason": "simulated reject"})
    return [
        (
            rng.uniform(*behaviour.post_latency_ms) / 1000,
            reject if rng.random() < behaviour.reject_rate else rng.choice(accept),
        )
        for _ in range(_TABLE_SIZE)
    ]


class _BuyerProtocol(asyncio.Protocol):
    """One keep-alive connection. Requests are answered in order of their timers, which
    is fine for clients that never pipeline (none of the ones measured here do)."""

    __slots__ = ("_endpoint", "_loop", "_parser", "_timers", "_transport")

    def __init__(self, endpoint: _Endpoint, loop: asyncio.AbstractEventLoop) -> None:
        self._endpoint = endpoint
        self._loop = loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._timers: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._endpoint.counters.connections += 1

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_message_complete(self) -> None:
        counters = self._endpoint.counters
        counters.requests += 1
        delay, answer = self._endpoint.next_answer()
        if answer is None:
            counters.hangs += 1
            return
        if delay <= 0:
            self._answer(answer)
            return
        timers = self._timers
        if len(timers) > 8:
            # Keep only the timers still to fire: a fired one is not "cancelled", and
            # keeping those made this list (and its scan) grow with every request.
            now = self._loop.time()
            self._timers = timers = [t for t in timers if not t.cancelled() and t.when() > now]
        timers.append(self._loop.call_later(delay, self._answer, answer))

    def _answer(self, answer: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        self._transport = None


class BuyerServer:
    def __init__(self, modes: dict[str, list[BuyerBehaviour]], seed: int = 11) -> None:
        rng = random.Random(seed)
        count = len(modes["normal"])
        self.ping_counters = Counters()
        self.post_counters = Counters()
        self.ping_endpoints = [
            _Endpoint({m: _ping_table(b[i], rng) for m, b in modes.items()}, self.ping_counters)
            for i in range(count)
        ]
        self.post_endpoints = [
            _Endpoint({m: _post_table(b[i], rng) for m, b in modes.items()}, self.post_counters)
            for i in range(count)
        ]
        self.ping_ports: list[int] = []
        self.post_ports: list[int] = []
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self, host: str = "127.0.0.1") -> None:
        loop = asyncio.get_running_loop()
        for endpoints, ports in (
            (self.ping_endpoints, self.ping_ports),
            (self.post_endpoints, self.post_ports),
        ):
            for endpoint in endpoints:
                server = await loop.create_server(
                    functools.partial(_BuyerProtocol, endpoint, loop), host, 0, backlog=4096
                )
                self._servers.append(server)
                ports.append(server.sockets[0].getsockname()[1])

    def set_mode(self, mode: str) -> None:
        for endpoint in (*self.ping_endpoints, *self.post_endpoints):
            endpoint.set_mode(mode)

    def stats(self) -> dict[str, Any]:
        times = os.times()
        return {
            "cpu_s": times.user + times.system,
            "ping": _counters(self.ping_counters),
            "post": _counters(self.post_counters),
        }

    async def close(self) -> None:
        for server in self._servers:
            server.close()


def _counters(counters: Counters) -> dict[str, int]:
    return {
        "connections": counters.connections,
        "requests": counters.requests,
        "hangs": counters.hangs,
    }


async def _serve(modes: dict[str, list[BuyerBehaviour]]) -> None:
    server = BuyerServer(modes)
    await server.start()
    out = sys.stdout
    ports = {"ping_ports": server.ping_ports, "post_ports": server.post_ports}
    out.write(orjson.dumps(ports).decode() + "\n")
    out.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode().strip():
            command, _, argument = line.partition(" ")
            if command == "stats":
                answer: dict[str, Any] = server.stats()
            elif command == "mode" and argument in ("normal", "faulty"):
                server.set_mode(argument)
                answer = {"mode": argument}
            else:
                answer = {"error": f"unknown command {line!r}"}
            out.write(orjson.dumps(answer).decode() + "\n")
            out.flush()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Lean loopback buyers for the benchmark.")
    parser.add_argument("--scenario", required=True, help="JSON file of behaviours per mode")
    args = parser.parse_args()
    with open(args.scenario, "rb") as file:
        document = orjson.loads(file.read())
    modes = {name: behaviours_from_json(items) for name, items in document["modes"].items()}
    uvloop.run(_serve(modes))


if __name__ == "__main__":
    main()
