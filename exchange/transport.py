"""The buyer transport: sends an adapter's HttpRequest and returns its HttpResponse.

The auction sees only this small interface, so the implementation can be swapped by
measurement. Every transport must: reuse keep-alive connections per buyer host, speak
TLS, read chunked and content-length bodies, cap the response size, honour a
per-request deadline (and be cancellable), and never follow redirects (a 3xx comes
back as a response like any other). Failures raise TransportError; a deadline that
passes raises TransportTimeout. The auction turns both into outcomes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from buyers.adapter import HttpRequest, HttpResponse

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
# Called with a response that came after its request had timed out (the transport read it
# to keep the connection): what the buyer said, too late to count.
LateAnswer = Callable[[HttpResponse], None]


@dataclass(slots=True)
class TransportStats:
    """What a transport has done, counted as it goes: the connection reuse operators see
    as exchange_buyer_connections_total, and the benchmark reads."""

    requests_sent: int = 0
    connections_opened: int = 0
    stale_retries: int = 0  # h1: sent again on a new connection after a stale one failed
    drained: int = 0  # h1: late answers read to the end, so their connection was kept
    drain_expired: int = 0  # h1: late answers that never came: the connection was dropped


class TransportError(Exception):
    """The request failed: connection refused or reset, bad HTTP, body too large."""


class TransportTimeout(TransportError):
    """The request's deadline passed before a whole response arrived."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request's fate: a response, or why there is none; and how long it took."""

    response: HttpResponse | None
    timed_out: bool
    error: str | None
    latency_us: int


async def deliver(
    transport: Transport,
    request: HttpRequest,
    timeout_s: float,
    on_late: LateAnswer | None = None,
) -> Delivery:
    """Send one request, turning transport failures into values (buyer failures are
    outcomes, never exceptions that escape)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    response, timed_out, error = None, False, None
    try:
        response = await transport.send(request, timeout_s, on_late)
    except TransportTimeout:
        timed_out = True
    except TransportError as exc:
        error = str(exc) or "transport error"
    return Delivery(response, timed_out, error, int((loop.time() - started) * 1e6))


class Transport(Protocol):
    stats: TransportStats

    async def send(
        self, request: HttpRequest, timeout_s: float, on_late: LateAnswer | None = None
    ) -> HttpResponse:
        """The response; TransportTimeout after `timeout_s`, TransportError on failure.
        Cancelling the call drops its connection. A transport that reads answers after
        the timeout (to keep the connection) hands them to `on_late`."""
        ...

    def start(self, request: HttpRequest, deadline: float) -> asyncio.Future[HttpResponse]:
        """Send without waiting: the future of the response, failed with TransportTimeout
        by `deadline` (event-loop time) at the latest and with TransportError on failure.
        Never raises. This is how an auction fans out to many buyers at once."""
        ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """The reference transport: one shared keep-alive aiohttp.ClientSession."""

    def __init__(
        self,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        limit_per_host: int = 256,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        self._started: set[asyncio.Task[HttpResponse]] = set()
        self.stats = TransportStats()
        self._connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=limit_per_host, keepalive_timeout=30, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            trace_configs=[self._tracing()],
        )

    def _tracing(self) -> aiohttp.TraceConfig:
        """aiohttp's request tracing, counting requests and the connections it opened
        for them (every other request went out on a kept-alive one)."""
        stats = self.stats

        async def request_started(*_: object) -> None:
            stats.requests_sent += 1

        async def connection_opened(*_: object) -> None:
            stats.connections_opened += 1

        tracing = aiohttp.TraceConfig()
        tracing.on_request_start.append(request_started)
        tracing.on_connection_create_end.append(connection_opened)
        return tracing

    def start(self, request: HttpRequest, deadline: float) -> asyncio.Future[HttpResponse]:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self.send(request, deadline - loop.time()))
        self._started.add(task)
        task.add_done_callback(self._started.discard)
        return task

    async def send(
        self, request: HttpRequest, timeout_s: float, on_late: LateAnswer | None = None
    ) -> HttpResponse:
        # A timed-out request's connection is dropped here: `on_late` is never called.
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.request(
                    request.method,
                    request.url,
                    headers=request.all_headers,
                    data=request.body,
                    allow_redirects=False,
                ) as response:
                    declared = response.content_length
                    if declared is not None and declared > self._max_response_bytes:
                        raise TransportError("response body too large")
                    body = await self._read_capped(response.content)
                    headers = {k.lower(): v for k, v in response.headers.items()}
                    return HttpResponse(response.status, headers, body)
        except TimeoutError:
            raise TransportTimeout("deadline passed") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise TransportError(type(exc).__name__) from None

    async def _read_capped(self, stream: aiohttp.StreamReader) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := await stream.readany():
            size += len(chunk)
            if size > self._max_response_bytes:
                raise TransportError("response body too large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        for task in list(self._started):
            task.cancel()
        await self._session.close()
