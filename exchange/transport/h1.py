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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NoReturn, cast
from urllib.parse import quote, urlsplit

import httptools
import structlog

from buyers.adapter import HttpRequest, HttpResponse
from exchange.transport.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    LateAnswer,
    TransportError,
    TransportStats,
    TransportTimeout,
)

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_COUNT = 100
DEFAULT_DRAIN_S = 1.0
# How long a buyer whose connection sent bytes nobody asked for gets fresh connections only.
DEFAULT_NO_REUSE_S = 600.0
_MAX_CACHED_HEADS = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Everything RFC 3986 allows unescaped in a path and query, plus "%" so that
# already-escaped URLs pass unchanged; spaces, controls and non-ASCII get escaped.
_URL_SAFE = "/?:@!$&'()*+,;=-._~%"
# The caller's headers cannot override the framing we write ourselves.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
_ORIGIN = tuple[str, str, int]  # scheme, host, port
_POOL_KEY = tuple[str, _ORIGIN]  # buyer id, origin
_HEAD_KEY = tuple[str, str, tuple[tuple[str, str], ...]]

log = structlog.get_logger("exchange.transport")


@dataclass(frozen=True, slots=True)
class _Target:
    """One URL, parsed once: where to connect, and the fixed part of the request head."""

    origin: _ORIGIN
    host: str
    port: int
    tls: bool
    # b"POST /path?q HTTP/1.1\r\nHost: h\r\n<fixed headers>Content-Length: "
    head: bytes


class _StaleConnection(TransportError):
    """A reused connection died before any response byte: safe to send again."""


class _Headers(Mapping[str, str]):
    """Response headers, decoded only if someone reads them (the JSON protocol does not)."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        if self._decoded is None:
            self._decoded = {
                name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self._raw
            }
        return self._decoded

    def __getitem__(self, name: str) -> str:
        return self._dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"_Headers({self._dict()!r})"


class _Call:
    """One request in flight: who waits for it, and what the parser has read of its answer."""

    __slots__ = (
        "body_bytes",
        "chunks",
        "connection",
        "context",
        "deadline",
        "draining",
        "group",
        "headers_complete",
        "keep_alive",
        "on_late",
        "payload",
        "pool",
        "raw_headers",
        "received",
        "rejection",
        "retried",
        "status",
        "target",
        "waiter",
    )

    def __init__(
        self,
        waiter: asyncio.Future[HttpResponse],
        payload: bytes,
        target: _Target,
        pool: _HostPool | None,
        deadline: float,
    ) -> None:
        self.waiter = waiter
        self.payload = payload
        self.target = target
        self.pool = pool
        self.deadline = deadline
        self.connection: _Connection | None = None
        self.retried = False
        self.draining = False
        self.on_late: LateAnswer | None = None
        self.context: contextvars.Context | None = None  # the sender's, for on_late
        self.group: _DeadlineGroup | None = None  # the deadline it waits for, if any
        self.reset()

    def reset(self) -> None:
        """Ready for a (new) response: on sending, and after an interim 1xx one."""
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_complete = False
        self.keep_alive = False
        self.chunks: list[bytes] = []
        self.body_bytes = 0
        self.received = 0  # every byte read for this request, head included
        self.rejection: TransportError | None = None

    def fail(self, exc: TransportError) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(exc)

    def abandon(self) -> None:
        """The caller gave up (cancelled): drop the connection carrying this request."""
        if self.connection is not None:
            self.connection.abort_call(self, "request cancelled")


class _Connection(asyncio.Protocol):
    """One keep-alive socket to one origin for one buyer; at most one request in flight."""

    def __init__(self, owner: H1Transport, pool: _HostPool) -> None:
        self._owner = owner
        self._pool = pool
        # Each holds the other (the parser calls this protocol's methods): connection_lost
        # lets go of it, and of the transport, so a dropped connection is freed at once
        # rather than left to the cyclic garbage collector (a pause on the event loop).
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._call: _Call | None = None
        # The call whose response this read completed: the connection is kept only once
        # the rest of the read turned out empty (data_received).
        self._answered: _Call | None = None
        self._reused = False
        self.requests_sent = 0
        self.closed = False
        self.idle_since = 0.0
        self.in_pool = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def eof_received(self) -> None:
        # The server is closing; returning None lets asyncio close our side too.
        return None

    def data_received(self, data: bytes) -> None:
        call = self._call
        if call is None:
            # Bytes nobody asked for (a stray extra response, a 408, junk) on an idle
            # connection: unusable.
            self._unsolicited()
            return
        call.received += len(data)
        parser = self._parser
        assert parser is not None  # no data after connection_lost
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            if self._answered is not None:
                # The answer was whole; what followed it in this read was not asked for.
                self._answered = None
                self._unsolicited()
            else:
                self._fail(call, call.rejection or TransportError("malformed response"))
            return
        answered = self._answered
        if answered is not None:
            self._answered = None
            if answered.keep_alive:
                self.idle()
            else:
                self.close()
        # httptools buffers a header line until it ends; bound that buffer too.
        elif self._call is call and not call.headers_complete and call.received > MAX_HEADER_BYTES:
            self._fail(call, TransportError("response headers too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._parser = self._transport = None
        self._owner._connections.discard(self)
        self._pool.discard(self)
        call = self._release_call()
        if call is None or call.waiter.done():
            return
        if exc is None and call.headers_complete and _ends_at_close(call):
            call.waiter.set_result(_response(call))
        elif call.received == 0 and self._reused and not call.retried:
            self._owner._retry_stale(call)
        else:
            reason = type(exc).__name__ if exc else "connection closed mid-response"
            call.waiter.set_exception(TransportError(reason))

    # httptools callbacks, filling the request's _Call

    def on_message_begin(self) -> None:
        if self._call is None:
            # A response after the one asked for, in the same read.
            raise TransportError("unsolicited bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        call = self._call
        if call is None:
            raise TransportError("unsolicited bytes")
        # Bounded when the head is complete (on_headers_complete), or, for a head still
        # incomplete, by data_received: at most one read's worth of headers piles up.
        call.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        call = self._call
        if call is None:
            raise TransportError("unsolicited bytes")
        headers = call.raw_headers
        if len(headers) > MAX_HEADER_COUNT:
            self._reject(call, "too many response headers")
        # Every byte read so far bounds the head's size: only a large read needs counting.
        if call.received > MAX_HEADER_BYTES and (
            sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES
        ):
            self._reject(call, "response headers too large")
        call.headers_complete = True
        parser = self._parser
        assert parser is not None  # called from inside feed_data
        call.status = parser.get_status_code()
        # Only meaningful inside a callback: llhttp resets it once the message ends.
        call.keep_alive = parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        call = self._call
        if call is None:
            raise TransportError("unsolicited bytes")
        call.body_bytes += len(body)
        if call.body_bytes > self._owner._max_response_bytes:
            self._reject(call, "response body too large")
        call.chunks.append(body)

    def on_message_complete(self) -> None:
        call = self._call
        if call is None:
            raise TransportError("unsolicited bytes")
        if 100 <= call.status < 200:
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
            call.reset()
            return
        late = call.draining
        if late:
            self._owner.stats.drained += 1
        self._release_call()
        self._answered = call  # kept or closed by data_received, after the rest of the read
        if not call.waiter.done():
            call.waiter.set_result(_response(call))
        elif late and call.on_late is not None:
            _hand_late_answer(call, call.on_late, _response(call))

    # used by H1Transport and _Call

    def begin(self, call: _Call) -> bool:
        """Write the call's request; False (nothing written) when the socket is closing."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        self._reused = self.requests_sent > 0
        self.requests_sent += 1
        self._call = call
        call.connection = self
        if call.retried:  # a stale connection's partial state, if any, is forgotten
            call.reset()
        transport.write(call.payload)
        return True

    def deadline_passed(self, call: _Call) -> None:
        """The call's deadline (or its drain's end) came: time the caller out, then keep
        listening for a late answer for a while, or give up on the socket."""
        if self._call is not call:
            return  # answered in time
        if call.draining:
            self._owner.stats.drain_expired += 1
            self._drop()
            return
        if not self._owner._may_drain(call):
            self._fail(call, TransportTimeout("deadline passed"))
            return
        call.draining = True
        call.fail(TransportTimeout("deadline passed"))
        self._owner._deadlines.add(call.deadline + self._owner._drain_s, self, call)

    def abort_call(self, call: _Call, reason: str) -> None:
        if self._call is call:
            self._fail(call, TransportError(reason))

    def close(self) -> None:
        """Close politely; for a connection with no request in flight."""
        if self._transport is not None:
            self._transport.close()

    def idle(self) -> None:
        """Nothing in flight and the server allows keep-alive: back to the pool, unless
        the transport is closing or the buyer has lost keep-alive reuse."""
        if self._owner._reuses(self._pool.buyer):
            self._pool.put(self)
        else:
            self.close()

    def _unsolicited(self) -> None:
        self._drop()
        self._owner._unsolicited(self._pool.buyer)

    def _release_call(self) -> _Call | None:
        """The connection no longer carries its call (answered, failed or dropped)."""
        call, self._call = self._call, None
        if call is not None:
            self._owner._deadlines.settled(call)
            if call.draining:
                call.draining = False
                self._pool.draining -= 1
        return call

    def _drop(self) -> None:
        self._release_call()
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, call: _Call, exc: TransportError) -> None:
        call.fail(exc)
        self._drop()

    def _reject(self, call: _Call, reason: str) -> NoReturn:
        # Raising inside a callback stops the parser; data_received reports the reason.
        call.rejection = TransportError(reason)
        raise call.rejection

    @property
    def usable(self) -> bool:
        return (
            not self.closed
            and self._call is None
            and self._transport is not None
            and (not self._transport.is_closing())
        )


def _hand_late_answer(call: _Call, on_late: LateAnswer, response: HttpResponse) -> None:
    """Run `on_late` in the context the request was sent in, not the connection's."""
    context = call.context
    if context is None:
        _run_late_answer(on_late, response)
    else:
        context.run(_run_late_answer, on_late, response)


def _run_late_answer(on_late: LateAnswer, response: HttpResponse) -> None:
    try:
        on_late(response)
    except Exception:  # the caller's bookkeeping must not break this connection
        log.exception("late_answer_handler_failed")


def _response(call: _Call) -> HttpResponse:
    chunks = call.chunks
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return HttpResponse(call.status, _Headers(call.raw_headers), body)


def _ends_at_close(call: _Call) -> bool:
    """A response with neither Content-Length nor chunking ends when the server closes."""
    names = {name.lower() for name, _ in call.raw_headers}
    return b"content-length" not in names and b"transfer-encoding" not in names


class _HostPool:
    """One buyer's idle keep-alive connections to one origin, oldest first.

    Taking and returning at the end keeps the list ordered by `idle_since`, so one
    `call_later` timer per pool, aimed at the oldest connection, expires them all.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, buyer: str, max_idle: int, idle_timeout_s: float
    ) -> None:
        self._loop = loop
        self.buyer = buyer
        self._max_idle = max_idle
        self._idle_timeout_s = idle_timeout_s
        self._idle: list[_Connection] = []
        self._timer: asyncio.TimerHandle | None = None
        self.draining = 0

    def take(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            connection.in_pool = False
            if connection.usable:
                return connection
            connection.close()
        return None

    def put(self, connection: _Connection) -> None:
        if len(self._idle) >= self._max_idle:
            connection.close()
            return
        connection.in_pool = True
        connection.idle_since = self._loop.time()
        self._idle.append(connection)
        if self._timer is None:
            self._timer = self._loop.call_later(self._idle_timeout_s, self._expire)

    def discard(self, connection: _Connection) -> None:
        if connection.in_pool:
            connection.in_pool = False
            self._idle.remove(connection)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.in_pool = False
            connection.close()

    def _expire(self) -> None:
        self._timer = None
        cutoff = self._loop.time() - self._idle_timeout_s
        while self._idle and self._idle[0].idle_since <= cutoff:
            connection = self._idle.pop(0)
            connection.in_pool = False
            connection.close()
        if self._idle:
            when = self._idle[0].idle_since + self._idle_timeout_s
            self._timer = self._loop.call_at(when, self._expire)


class _DeadlineGroup:
    """The requests sharing one deadline, its timer, and how many have not settled."""

    __slots__ = ("fired", "members", "open", "timer", "when")

    def __init__(self, when: float, timer: asyncio.TimerHandle) -> None:
        self.when = when
        self.timer = timer
        self.members: list[tuple[_Connection, _Call]] = []
        self.open = 0
        self.fired = False


class _Deadlines:
    """One timer per distinct deadline: an auction's requests to all its buyers share
    one, instead of one timer each. Once every request of a group has settled (as most
    do, long before the deadline) its timer is cancelled and the group let go."""

    def __init__(self) -> None:
        self._groups: dict[float, _DeadlineGroup] = {}

    def add(self, when: float, connection: _Connection, call: _Call) -> None:
        group = self._groups.get(when)
        if group is None:
            timer = asyncio.get_running_loop().call_at(when, self._fire, when)
            group = self._groups[when] = _DeadlineGroup(when, timer)
        group.members.append((connection, call))
        group.open += 1
        call.group = group

    def settled(self, call: _Call) -> None:
        """The call no longer needs its deadline (answered, failed or dropped)."""
        group = call.group
        if group is None:
            return
        call.group = None
        group.open -= 1
        if group.open or group.fired:
            return
        group.timer.cancel()
        del self._groups[group.when]

    def _fire(self, when: float) -> None:
        group = self._groups.pop(when)
        group.fired = True
        for connection, call in group.members:
            if call.group is group:
                call.group = None
            if connection._call is call:  # else answered in time
                connection.deadline_passed(call)

    def close(self) -> None:
        for group in self._groups.values():
            group.timer.cancel()
        self._groups.clear()


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
        self._pools: dict[_POOL_KEY, _HostPool] = {}
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


def _header_lines(headers: tuple[tuple[str, str], ...]) -> bytes:
    lines = [f"{name}: {value}\r\n" for name, value in headers if name.lower() not in _OWN_HEADERS]
    text = "".join(lines)
    # Exactly one CR and one LF per line, else a name or value carried its own line
    # break and would smuggle extra headers into the request.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise TransportError("line break in a request header")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise TransportError("request header not encodable") from None


def _parse_target(request: HttpRequest) -> _Target:
    try:
        parts = urlsplit(request.url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise TransportError("invalid url") from None
    if parts.scheme not in _DEFAULT_PORTS or not host:
        raise TransportError("url must be absolute http or https")
    default_port = _DEFAULT_PORTS[parts.scheme]
    port = port or default_port
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header = f"{host_header}:{port}"
    path = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        path = f"{path}?{quote(parts.query, safe=_URL_SAFE)}"
    try:
        line = f"{request.method} {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii")
    except UnicodeEncodeError:
        raise TransportError("request method or host name not ascii") from None
    head = line + _header_lines(request.fixed_headers) + b"Content-Length: "
    return _Target((parts.scheme, host, port), host, port, parts.scheme == "https", head)


_UNUSABLE = _Target(("", "", 0), "", 0, False, b"")


def _encode(request: HttpRequest, target: _Target) -> bytes:
    body = request.body
    return b"%s%d\r\n%s\r\n%s" % (target.head, len(body), _header_lines(request.headers), body)
