"""A lean HTTP/1.1 buyer transport on asyncio protocols and httptools.

This room exists for speed: the exchange fans every ping out to many buyers, and
aiohttp's client spends ~250-300 us of CPU per request where this one spends a small
fraction of that. It implements the `Transport` contract of exchange/transport/base.py and
nothing more: absolute http/https URLs, keep-alive pools per (buyer, scheme, host,
port), TLS, Content-Length / chunked / read-until-close bodies, a response size cap, a
per-request deadline, no redirects, no cookies, no proxies, no compression, no
pipelining.

Shape (after uvicorn's httptools_impl, client side): one `_Connection` protocol per
socket owns the httptools parser; the parser's callbacks fill a `_Call`, the state of
the one request in flight, kept apart from the connection's own state. A request is
started without a task of its own: `start` writes it on an idle connection at once and
returns a future the connection's callbacks resolve, and the connection puts itself back
in its `_HostPool` once a whole response was read and the server allowed keep-alive.
Deadlines are grouped: the requests of one auction share one deadline and so one timer.

Rooms: this module is the transport itself (start, send, opening connections, close,
and the per-buyer reuse policy below); connection.py holds the protocol, its parser
callbacks and the per-call state; pool.py the per-buyer keep-alive pools; deadlines.py
the grouped deadline timers; request.py URL parsing and request-head encoding;
response.py the response handed back. Outside exchange/transport/, only the names in
this module's `__all__` (and base.py) are used.

Late answers are drained, not cut off. At its deadline a request fails with
TransportTimeout at once, but its connection stays open for `drain_s` more (at most
`max_idle_per_host` connections per buyer and origin at a time): a buyer that answers
late answers on that socket, and the connection goes back to the pool instead of being
reopened for the next auction. A buyer that never answers costs the socket after
`drain_s`. A request cancelled by its caller, a failure or a malformed response aborts
the connection at once. A late answer is handed to the caller's `on_late` in the
contextvars context the request was sent in (the connection's own callbacks run in the
context of whichever request opened it), so what it logs names its own lead.

Answers nobody asked for. HTTP/1.1 pairs responses with requests by order alone: once a
request is on a connection, the next response on it is taken as its answer, and nothing
in the bytes tells a buyer's stray extra response to an earlier request from the real
answer. The exchange cannot detect that; it bounds it instead:

- Pools are per buyer, never shared by two buyers on one host and port: whatever a
  buyer writes can only ever be read as that buyer's own answer.
- Bytes no request asked for close the connection: bytes on an idle connection, and
  bytes after a complete response in the same read (a connection goes back to its pool
  only once the whole read was parsed, so a second response is never kept for the next
  request).
- A buyer whose connection did that gets no keep-alive reuse for `no_reuse_s` (10
  minutes by default): each of its requests goes on a fresh connection, closed after
  the answer, so nothing it wrote before can be read as a later answer. Each such
  connection is counted per buyer in `TransportStats.unsolicited`.

What is left: until its first stray bytes are seen, a buyer's stray response that lands
while its next request is on the connection is taken as that request's answer (the same
buyer's, never another's). The real answer then comes after it, normally on an idle
connection or in the same read, which ends the buyer's reuse; should another request
of that buyer already be on the connection by then, that one is answered one behind in
turn, until an answer meets an idle connection.

Retrying a POST on a stale connection. A server may close an idle keep-alive
connection at any moment, and its FIN can cross our request on the wire. When a
*reused* connection fails before a single byte of response arrived, we send the request
once more on a new connection. For a non-idempotent method this is the one failure we
treat as safe: by far its usual cause is the server's idle close racing our write, in
which case the server never read the request. The residual risk is a buyer that read
the request and then died without answering; the retry then delivers it twice, which
ping/post ids let a buyer deduplicate. Any failure after a response byte, any failure
on a fresh connection, and any deadline are never retried.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl

import structlog

from buyers.adapter import HttpRequest, HttpResponse
from exchange.transport.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    LateAnswer,
    TransportError,
    TransportStats,
    TransportTimeout,
)
from exchange.transport.connection import MAX_HEADER_BYTES, MAX_HEADER_COUNT, _Call, _Connection
from exchange.transport.deadlines import _Deadlines
from exchange.transport.pool import _HostPool
from exchange.transport.request import _ORIGIN, _UNUSABLE, _encode, _parse_target, _Target

__all__ = [
    "DEFAULT_DRAIN_S",
    "DEFAULT_NO_REUSE_S",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_COUNT",
    "H1Transport",
]

DEFAULT_DRAIN_S = 1.0
# How long a buyer whose connection sent bytes nobody asked for gets fresh connections only.
DEFAULT_NO_REUSE_S = 600.0
_MAX_CACHED_HEADS = 4096
_POOL_KEY = tuple[str, _ORIGIN]  # buyer id, origin
_HEAD_KEY = tuple[str, str, tuple[tuple[str, str], ...]]

log = structlog.get_logger("exchange.transport")


class H1Transport:
    """The protocol-level transport: httptools parsing over asyncio keep-alive sockets."""

    def __init__(
        self,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_idle_per_host: int = 64,
        idle_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        drain_s: float = DEFAULT_DRAIN_S,
        no_reuse_s: float = DEFAULT_NO_REUSE_S,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        self._max_idle_per_host = max_idle_per_host
        self._idle_timeout_s = idle_timeout_s
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._drain_s = drain_s
        self._no_reuse_s = no_reuse_s
        # Buyers whose connections sent bytes nobody asked for, until when (loop time)
        # they get fresh connections only.
        self._no_reuse_until: dict[str, float] = {}
        self._heads: dict[_HEAD_KEY, _Target] = {}
        self._pools: dict[_POOL_KEY, _HostPool[_Connection]] = {}
        self._connections: set[_Connection] = set()
        self._opening: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines = _Deadlines()
        self._closed = False
        self.stats = TransportStats()

    def start(
        self, request: HttpRequest, deadline: float, *, buyer: str
    ) -> asyncio.Future[HttpResponse]:
        """Send `request` now (on an idle connection of `buyer`'s, else once one is open)
        and return the future of its response; it fails with TransportTimeout at
        `deadline` (loop time) at the latest, and with TransportError for anything else.
        Never raises."""
        return self._begin(request, deadline, buyer).waiter

    async def send(
        self,
        request: HttpRequest,
        timeout_s: float,
        on_late: LateAnswer | None = None,
        *,
        buyer: str,
    ) -> HttpResponse:
        loop = asyncio.get_running_loop()
        call = self._begin(request, loop.time() + timeout_s, buyer)
        if on_late is not None:
            call.on_late = on_late
            call.context = contextvars.copy_context()
        try:
            return await call.waiter
        except asyncio.CancelledError:
            call.abandon()
            raise

    def _begin(self, request: HttpRequest, deadline: float, buyer: str) -> _Call:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[HttpResponse] = loop.create_future()
        try:
            if self._closed:
                raise TransportError("transport closed")
            target = self._target(request)
            payload = _encode(request, target)
        except TransportError as exc:
            waiter.set_exception(exc)
            return _Call(waiter, b"", _UNUSABLE, None, deadline)
        key = (buyer, target.origin)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _HostPool(
                loop, buyer, self._max_idle_per_host, self._idle_timeout_s
            )
        call = _Call(waiter, payload, target, pool, deadline)
        connection = pool.take() if self._reuses(buyer) else None
        if connection is not None and connection.begin(call):
            self.stats.requests_sent += 1
            self._deadlines.add(deadline, connection, call)
        else:
            self._open_for(call)
        return call

    def _reuses(self, buyer: str) -> bool:
        """May `buyer`'s connections be kept alive for its next requests?"""
        if self._closed:
            return False
        if not self._no_reuse_until:
            return True
        until = self._no_reuse_until.get(buyer)
        if until is None:
            return True
        assert self._loop is not None
        if self._loop.time() < until:
            return False
        del self._no_reuse_until[buyer]
        return True

    def _unsolicited(self, buyer: str) -> None:
        """A connection of `buyer` sent bytes no request asked for (and was dropped): from
        now on, for `no_reuse_s`, each of its requests goes on a fresh connection."""
        counts = self.stats.unsolicited
        counts[buyer] = counts.get(buyer, 0) + 1
        assert self._loop is not None
        if self._reuses(buyer):
            # Logged outside the connection's context, which is that of whichever request
            # opened it: the line must not name that request's lead.
            contextvars.Context().run(
                log.warning, "buyer_unsolicited_response", buyer=buyer, no_reuse_s=self._no_reuse_s
            )
        self._no_reuse_until[buyer] = self._loop.time() + self._no_reuse_s
        for (owner, _), pool in self._pools.items():
            if owner == buyer:
                pool.close()

    def _may_drain(self, call: _Call) -> bool:
        pool = call.pool
        if self._closed or self._drain_s <= 0 or pool is None:
            return False
        if pool.draining >= self._max_idle_per_host:
            return False
        pool.draining += 1
        return True

    def _retry_stale(self, call: _Call) -> None:
        self.stats.stale_retries += 1
        call.retried = True
        call.connection = None
        self._open_for(call)

    def _open_for(self, call: _Call) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._open(call))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _open(self, call: _Call) -> None:
        """Open a connection for `call` and send it there; the failure goes to its waiter."""
        loop = asyncio.get_running_loop()
        target = call.target

        pool = call.pool
        assert pool is not None

        def build() -> _Connection:
            return _Connection(self, pool)

        try:
            async with asyncio.timeout_at(call.deadline):
                _, connection = await loop.create_connection(
                    build,
                    target.host,
                    target.port,
                    ssl=self._ssl_context if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                )
        except TimeoutError:
            call.fail(TransportTimeout("deadline passed"))
            return
        except OSError as exc:
            call.fail(TransportError(type(exc).__name__))
            return
        self.stats.connections_opened += 1
        if self._closed:
            connection._drop()
            call.fail(TransportError("transport closed"))
            return
        self._connections.add(connection)
        if call.waiter.done():  # given up while connecting: keep the fresh socket
            connection.idle()
        elif connection.begin(call):
            self.stats.requests_sent += 1
            self._deadlines.add(call.deadline, connection, call)
        else:
            call.fail(TransportError("connection closed"))

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        for task in list(self._opening):
            task.cancel()
        for connection in list(self._connections):
            call = connection._call
            if call is not None:
                call.fail(TransportError("transport closed"))
            connection._drop()
        self._deadlines.close()
        # Let the transports run connection_lost before the loop may stop.
        await asyncio.sleep(0)

    def _target(self, request: HttpRequest) -> _Target:
        key = (request.url, request.method, request.fixed_headers)
        target = self._heads.get(key)
        if target is None:
            target = _parse_target(request)
            if len(self._heads) >= _MAX_CACHED_HEADS:
                # URLs come from buyer config; a flood of distinct ones means per-request
                # query strings, and a cleared cache costs only a re-parse.
                self._heads.clear()
            self._heads[key] = target
        return target
