"""The two baselines the exchange is measured against, as one small server.

    python -m benchmarks.baseline --client aiohttp|minimal|h1transport --port P --buyers FILE

An aiohttp server on uvloop with one route, ``POST /v1/ping``: parse the seller's JSON,
fan the ping out to every buyer at once, wait until all answered or the deadline
(tmax less 2 ms) passed, take the highest bid, answer. Nothing else: no auth, no
validation, no signing, no ledger, no metrics, no logs.

- ``aiohttp``: baseline (a), what a Python developer would write: one shared
  keep-alive ``aiohttp.ClientSession`` (connection limit off, as a fan-out needs).
- ``minimal``: baseline (b), the ceiling: benchmarks.minimal_client.
- ``h1transport``: the same server on the exchange's own ``H1Transport``, which tells
  the transport's cost apart from the rest of the exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import uvloop
from aiohttp import web

ANSWER_MARGIN_S = 0.002
BidCall = Callable[[str, bytes, float], Awaitable[tuple[int, bytes]]]


def _client(kind: str) -> tuple[BidCall, Callable[[], Awaitable[None]]]:
    """(post(url, body, timeout_s) -> (status, body), close)."""
    if kind == "aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        headers = {"Content-Type": "application/json"}

        async def post_aiohttp(url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
            async with session.post(url, data=body, headers=headers) as response:
                return response.status, await response.read()

        return post_aiohttp, session.close
    if kind == "minimal":
        from benchmarks.minimal_client import MinimalClient

        client = MinimalClient()

        async def post_minimal(url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
            return await client.post(url, body)

        async def close_minimal() -> None:
            client.close()

        return post_minimal, close_minimal
    if kind == "h1transport":
        from buyers.adapter import HttpRequest
        from exchange.transport.h1 import H1Transport

        transport = H1Transport()
        content_type = (("Content-Type", "application/json"),)

        async def post_h1(url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
            request = HttpRequest("POST", url, content_type, body)
            # One buyer per URL here, so each buyer's connections are its own, as in the
            # exchange.
            response = await transport.send(request, timeout_s, buyer=url)
            return response.status, response.body

        return post_h1, transport.close
    raise ValueError(f"unknown client {kind!r}")


def _bid_of(answer: tuple[int, bytes]) -> float:
    status, body = answer
    if status != 200:
        return 0.0
    bid = orjson.loads(body).get("bid")
    return float(bid) if isinstance(bid, int | float) else 0.0


def build_app(ping_urls: list[str], kind: str, tmax_ms: int) -> web.Application:
    serial = itertools.count()
    app = web.Application()
    calls: list[BidCall] = []

    async def client_context(app: web.Application) -> AsyncIterator[None]:
        # Built inside the running loop, as aiohttp's session requires.
        post, close = _client(kind)
        calls.append(post)
        yield
        await close()

    async def ping(request: web.Request) -> web.Response:
        seller = orjson.loads(await request.read())
        ping_id = f"p-{next(serial)}"
        tmax_s = min(seller.get("tmax_ms", tmax_ms), tmax_ms) / 1000
        timeout_s = tmax_s - ANSWER_MARGIN_S
        payload = orjson.dumps(
            {"ping_id": ping_id, "vertical": seller["vertical"], "tmax_ms": int(tmax_s * 1000),
             "floor": 1.0, "lead": seller["lead"]}
        )  # fmt: skip
        post = calls[0]
        tasks = [asyncio.ensure_future(post(url, payload, timeout_s)) for url in ping_urls]
        done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        best = 0.0
        for task in done:
            if task.exception() is None:
                best = max(best, _bid_of(task.result()))
        answer = {"ping_id": ping_id, "status": "bid" if best else "no_bid", "price": best or None}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.cleanup_ctx.append(client_context)
    app.add_routes([web.post("/v1/ping", ping), web.get("/healthz", healthz)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--client", choices=("aiohttp", "minimal", "h1transport"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--buyers", required=True, help="JSON file: a list of ping URLs")
    parser.add_argument("--tmax-ms", type=int, default=250)
    args = parser.parse_args()
    with open(args.buyers, "rb") as file:
        ping_urls = orjson.loads(file.read())
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # as `lead-exchange serve` does
    app = build_app(ping_urls, args.client, args.tmax_ms)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
