"""The buyer-transport candidates side by side, as an auction uses them: fan-outs of N
concurrent keep-alive POSTs to one loopback server, on uvloop.

    python -m benchmarks.client_candidates [--fan-out N] [--rounds R]

Measures the least the hardware allows (benchmarks.minimal_client), the exchange's
``H1Transport``, aiohttp's ``ClientSession``, and, when installed, ``pyreqwest`` (Rust,
hyper; `pip install pyreqwest`) and ``curl-cffi`` (libcurl; `pip install curl-cffi`).
CPU is this process's, all threads included (pyreqwest runs its own runtime thread),
per request. The server (benchmarks.transport_micro's fixed-answer protocol) runs in a
process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable

import uvloop

from benchmarks.transport_micro import answering_server

BODY = (
    b'{"ping_id":"p-0123456789abcdef","vertical":"auto_insurance","tmax_ms":250,'
    b'"floor":3.0,"lead":{"zip":"94107","state":"CA","age":41}}'
)
HEADERS = {
    "Content-Type": "application/json",
    "X-Exchange-Timestamp": "1700000000",
    "X-Exchange-Signature": "sha256=" + "ab" * 32,
}
WARMUP_ROUNDS = 100
Post = Callable[[], Awaitable[bytes]]
Close = Callable[[], Awaitable[object]]


async def _nothing() -> None:
    return None


def _candidates(url: str) -> dict[str, Callable[[], tuple[Post, Close]] | None]:
    def minimal() -> tuple[Post, Close]:
        from benchmarks.minimal_client import MinimalClient

        client = MinimalClient()

        async def post() -> bytes:
            return (await client.post(url, BODY))[1]

        return post, _nothing

    def h1() -> tuple[Post, Close]:
        from buyers.adapter import HttpRequest
        from exchange.transport.h1 import H1Transport

        transport = H1Transport()
        headers = tuple(HEADERS.items())

        async def post() -> bytes:
            request = HttpRequest("POST", url, headers, BODY)
            return (await transport.send(request, 1.0, buyer="candidate")).body

        return post, transport.close

    def aiohttp_session() -> tuple[Post, Close]:
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def post() -> bytes:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                return await response.read()

        return post, session.close

    def pyreqwest() -> tuple[Post, Close]:
        from pyreqwest.client import ClientBuilder

        client = ClientBuilder().http1_only().build()

        async def post() -> bytes:
            request = client.post(url).headers(HEADERS).body_bytes(BODY).build()
            response = await request.send()
            return bytes(await response.bytes())

        return post, client.close

    def curl_cffi() -> tuple[Post, Close]:
        from curl_cffi.requests import AsyncSession

        session = AsyncSession(max_clients=64)

        async def post() -> bytes:
            return bytes((await session.post(url, data=BODY, headers=HEADERS)).content)

        return post, session.close

    def installed(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    return {
        "minimal (ceiling)": minimal,
        "h1 (exchange)": h1,
        "aiohttp": aiohttp_session,
        "pyreqwest": pyreqwest if installed("pyreqwest") else None,
        "curl-cffi": curl_cffi if installed("curl_cffi") else None,
    }


async def _measure(
    make: Callable[[], tuple[Post, Close]], fan_out: int, rounds: int
) -> tuple[float, float]:
    post, close = make()
    for _ in range(WARMUP_ROUNDS):
        await asyncio.gather(*(post() for _ in range(fan_out)))
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(post() for _ in range(fan_out)))
    cpu_us = (time.process_time() - cpu) / rounds / fan_out * 1e6
    wall_us = (time.perf_counter() - wall) / rounds * 1e6
    await close()
    return cpu_us, wall_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fan-out", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with answering_server() as url:
        print(f"{'client':<18} {'CPU us / request':>16} {'wall us / fan-out':>18}")
        for name, make in _candidates(url).items():
            if make is None:
                print(f"{name:<18} {'not installed':>16}")
                continue
            cpu_us, wall_us = uvloop.run(_measure(make, args.fan_out, args.rounds))
            print(f"{name:<18} {cpu_us:>16.1f} {wall_us:>18.0f}")


if __name__ == "__main__":
    main()
