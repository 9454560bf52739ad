"""Micro-benchmark of the buyer transport: client CPU per request and requests/s, beside
aiohttp's client doing the same work (`AiohttpClient`, the comparison it was chosen by).

    python -m benchmarks.transport_micro [--requests N] [--concurrency C] [--repeat R]

A minimal keep-alive HTTP server (raw asyncio protocol on uvloop, one fixed 200 JSON
answer) runs in a separate process so that only the client's work lands on this
process's CPU clock. Each transport then sends N ping-shaped POSTs one at a time
("sequential") and from C concurrent workers ("concurrent"), on both event loops. Each
case runs R times and the median is shown: a loopback round trip on a small machine is
noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import aiohttp
import httptools
import uvloop

from buyers.adapter import HttpRequest, HttpResponse
from exchange.transport.h1 import H1Transport

ANSWER_BODY = b'{"bid":true,"price_cents":1250,"bid_id":"b-0123456789abcdef"}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(ANSWER_BODY),
    ANSWER_BODY,
)
PING_BODY = (
    b'{"ping_id":"p-0123456789abcdef","vertical":"auto_insurance","tmax_ms":250,'
    b'"floor_cents":300,"lead":{"zip":"94107","state":"CA","age":41,"homeowner":true,'
    b'"vehicles":2,"credit":"good","insured":true,"months_insured":36}}'
)
WARMUP_REQUESTS = 300
BUYER = "micro"


class Client(Protocol):
    async def send(self, request: HttpRequest, timeout_s: float, *, buyer: str) -> HttpResponse: ...

    async def close(self) -> None: ...


class AiohttpClient:
    """What a buyer request costs through one shared keep-alive aiohttp.ClientSession, set
    up as the exchange's transport once was: no connection limit, no decompression. It
    does only what the measurement needs (no size cap, no per-buyer pools)."""

    def __init__(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def send(self, request: HttpRequest, timeout_s: float, *, buyer: str) -> HttpResponse:
        async with asyncio.timeout(timeout_s):
            async with self._session.request(
                request.method,
                request.url,
                headers=request.all_headers,
                data=request.body,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return HttpResponse(response.status, dict(response.headers), body)

    async def close(self) -> None:
        await self._session.close()


class _BuyerServerProtocol(asyncio.Protocol):
    """Answers every complete request with ANSWER, keeping the connection open."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_message_complete(self) -> None:
        if self._transport is not None:
            self._transport.write(ANSWER)


def serve(port_out: Connection) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_BuyerServerProtocol, "127.0.0.1", 0, backlog=1024)
        port_out.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    uvloop.run(main())


@contextlib.contextmanager
def answering_server() -> Iterator[str]:
    """``serve`` in a process of its own, for as long as the block runs; yields its URL."""
    context = multiprocessing.get_context("spawn")
    port_in, port_out = context.Pipe(duplex=False)
    server = context.Process(target=serve, args=(port_out,), daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port_in.recv()}/ping"
    finally:
        server.terminate()
        server.join()


@dataclass(frozen=True)
class Result:
    transport: str
    loop: str
    mode: str
    requests: int
    cpu_us_per_request: float
    requests_per_s: float
    connections_opened: int | None


async def measure(
    make: Callable[[], Client], url: str, requests: int, concurrency: int
) -> tuple[float, float, int | None]:
    transport = make()
    request = HttpRequest(
        "POST",
        url,
        (
            ("Content-Type", "application/json"),
            ("X-Timestamp", "1718000000"),
            ("X-Signature", "5f2b9c0e7d6a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c"),
        ),
        PING_BODY,
    )

    async def worker(count: int) -> None:
        for _ in range(count):
            response = await transport.send(request, 2.0, buyer=BUYER)
            assert response.status == 200

    try:
        await worker(WARMUP_REQUESTS)
        per_worker = requests // concurrency
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
        sent = per_worker * concurrency
        opened = transport.stats.connections_opened if isinstance(transport, H1Transport) else None
        return cpu / sent * 1e6, sent / wall, opened
    finally:
        await transport.close()


Measurement = tuple[float, float, int | None]


def run_on(loop_name: str, coroutine: Coroutine[Any, Any, Measurement]) -> Measurement:
    return uvloop.run(coroutine) if loop_name == "uvloop" else asyncio.run(coroutine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with answering_server() as url:
        transports: dict[str, Callable[[], Client]] = {
            "aiohttp": AiohttpClient,
            "h1": H1Transport,
        }
        results = []
        for loop_name in ("asyncio", "uvloop"):
            for mode, concurrency in (("sequential", 1), ("concurrent", args.concurrency)):
                for name, make in transports.items():
                    runs = [
                        run_on(loop_name, measure(make, url, args.requests, concurrency))
                        for _ in range(args.repeat)
                    ]
                    cpu_us = statistics.median(run[0] for run in runs)
                    rate = statistics.median(run[1] for run in runs)
                    opened = runs[-1][2]
                    results.append(
                        Result(name, loop_name, mode, args.requests, cpu_us, rate, opened)
                    )
    print_table(results, args.concurrency)


def print_table(results: list[Result], concurrency: int) -> None:
    print(f"{'transport':<9} {'loop':<8} {'mode':<14} {'cpu us/req':>10} {'req/s':>9} {'conns':>6}")
    for r in results:
        mode = r.mode if r.mode == "sequential" else f"concurrent x{concurrency}"
        conns = "-" if r.connections_opened is None else str(r.connections_opened)
        print(
            f"{r.transport:<9} {r.loop:<8} {mode:<14} "
            f"{r.cpu_us_per_request:>10.1f} {r.requests_per_s:>9.0f} {conns:>6}"
        )


if __name__ == "__main__":
    main()
