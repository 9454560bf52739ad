"""The buyer transport: sends an adapter's HttpRequest and returns its HttpResponse.

The auction sees only this small interface; exchange/transport/h1.py implements it.
Every transport must: reuse keep-alive connections per buyer and origin, never one
buyer's connection for another buyer's request (an answer on a connection can only be
that buyer's), speak TLS, read chunked and content-length bodies, cap the response size,
honour a per-request deadline (and be cancellable), and never follow redirects (a 3xx
comes back as a response like any other). Failures raise TransportError; a deadline that
passes raises TransportTimeout. The auction turns both into outcomes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from buyers.adapter import HttpRequest, HttpResponse

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
# Called with a response that came after its request had timed out (the transport read it
# to keep the connection): what the buyer said, too late to count. It runs in the
# contextvars context of the call it answers, so its log lines name that call's lead.
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
    # Per buyer id: connections dropped for bytes no request asked for (a stray extra
    # response); exchange_buyer_unsolicited_responses_total.
    unsolicited: dict[str, int] = field(default_factory=dict)


class TransportError(Exception):
    """The request failed: connection refused or reset, bad HTTP, body too large."""


class TransportTimeout(TransportError):
    """The request's deadline passed before a whole response arrived."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request's fate: a response, or why there is none; and how long it took, in
    microseconds: the buyer's time as the transport measured it (``HttpResponse.elapsed_us``)
    for a response, else the time from sending to giving up (time.perf_counter_ns)."""

    response: HttpResponse | None
    timed_out: bool
    error: str | None
    latency_us: int


async def deliver(
    transport: Transport,
    request: HttpRequest,
    timeout_s: float,
    on_late: LateAnswer | None = None,
    *,
    buyer: str,
) -> Delivery:
    """Send one request, turning transport failures into values (buyer failures are
    outcomes, never exceptions that escape)."""
    started_ns = time.perf_counter_ns()
    response, timed_out, error = None, False, None
    try:
        response = await transport.send(request, timeout_s, on_late, buyer=buyer)
    except TransportTimeout:
        timed_out = True
    except TransportError as exc:
        error = str(exc) or "transport error"
    latency_us = response.elapsed_us if response is not None else None
    if latency_us is None:
        latency_us = -(-(time.perf_counter_ns() - started_ns) // 1000)
    return Delivery(response, timed_out, error, latency_us)


class Transport(Protocol):
    stats: TransportStats

    async def send(
        self,
        request: HttpRequest,
        timeout_s: float,
        on_late: LateAnswer | None = None,
        *,
        buyer: str,
    ) -> HttpResponse:
        """The response; TransportTimeout after `timeout_s`, TransportError on failure.
        Cancelling the call drops its connection. A transport that reads answers after
        the timeout (to keep the connection) hands them to `on_late`, in the contextvars
        context `send` was called in. `buyer` (its config id) picks the connections the
        request may go out on: only that buyer's."""
        ...

    def start(
        self, request: HttpRequest, deadline: float, *, buyer: str
    ) -> asyncio.Future[HttpResponse]:
        """Send without waiting: the future of the response, failed with TransportTimeout
        by `deadline` (event-loop time) at the latest and with TransportError on failure.
        Never raises. This is how an auction fans out to many buyers at once. `buyer`
        as for `send`."""
        ...

    async def close(self) -> None: ...
