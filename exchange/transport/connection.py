"""One keep-alive socket to one buyer's origin: the asyncio protocol, its httptools
parser, and the state of the one request in flight on it.

Two kinds of state, declared apart (after uvicorn's httptools_impl, client side):

- `_Call` is one request: who waits for its response, its deadline, and what the parser
  has read of its answer so far. It lives from being sent until it settles, and may
  move to a second connection once (the stale-connection retry, h1.py).
- `_Connection` is one socket: the parser, whether it was reused, whether it sits in its
  pool. It carries at most one `_Call` at a time (no pipelining), and decides, once a
  whole response was read, whether it goes back to its `_HostPool` or is closed.

The parser callbacks (`on_header`, `on_body`, `on_message_complete`) fill the current
`_Call`; a callback that finds none raises, since those are bytes nobody asked for.

The buyer's latency is measured here, where both ends are seen: `begin` stamps the call
with `time.perf_counter_ns()` once its request is written, and the response is stamped
with the time since then when its last byte is parsed (`HttpResponse.elapsed_us`). Neither
end waits for the event loop to come round to the caller, and the loop's own clock
(millisecond resolution, cached per iteration under uvloop) serves deadlines only.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import NoReturn, Protocol, cast

import httptools

from buyers.adapter import HttpResponse
from exchange.transport.base import LateAnswer, TransportError, TransportStats, TransportTimeout
from exchange.transport.deadlines import _DeadlineGroup, _Deadlines
from exchange.transport.pool import _HostPool
from exchange.transport.request import _Target
from exchange.transport.response import _ends_at_close, _hand_late_answer, _response

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_COUNT = 100


class _Owner(Protocol):
    """What a connection needs of the transport that opened it: h1.py's H1Transport,
    named here by what is used since h1.py imports this module, not the other way."""

    stats: TransportStats
    _connections: set[_Connection]
    _deadlines: _Deadlines
    _max_response_bytes: int
    _drain_s: float

    def _reuses(self, buyer: str) -> bool: ...

    def _unsolicited(self, buyer: str) -> None: ...

    def _may_drain(self, call: _Call) -> bool: ...

    def _retry_stale(self, call: _Call) -> None: ...


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
        "sent_ns",
        "status",
        "target",
        "waiter",
    )

    def __init__(
        self,
        waiter: asyncio.Future[HttpResponse],
        payload: bytes,
        target: _Target,
        pool: _HostPool[_Connection] | None,
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
        self.sent_ns = 0  # time.perf_counter_ns() once written (begin)
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

    def __init__(self, owner: _Owner, pool: _HostPool[_Connection]) -> None:
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
        if exc is None and call.headers_complete and _ends_at_close(call.raw_headers):
            call.waiter.set_result(_response(call, time.perf_counter_ns()))
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
        complete_ns = time.perf_counter_ns()
        late = call.draining
        if late:
            self._owner.stats.drained += 1
        self._release_call()
        self._answered = call  # kept or closed by data_received, after the rest of the read
        if not call.waiter.done():
            call.waiter.set_result(_response(call, complete_ns))
        elif late and call.on_late is not None:
            response = _response(call, complete_ns)
            _hand_late_answer(call.context, call.on_late, response)

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
        # After the write: the buyer's time starts once it can read the request (a stale
        # connection's retry starts it again, on the connection that answers).
        call.sent_ns = time.perf_counter_ns()
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
