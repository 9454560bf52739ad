"""A lean HTTP/1.1 buyer transport on asyncio protocols and httptools.

This room exists for speed: the exchange fans every ping out to many buyers, and
aiohttp's client spends ~250-300 us of CPU per request where this one spends a small
fraction of that. It implements the same `Transport` contract as `AiohttpTransport`
(see exchange/transport.py) and nothing more: absolute http/https URLs, keep-alive
pools per (scheme, host, port), TLS, Content-Length / chunked / read-until-close
bodies, a response size cap, a per-request deadline, no redirects, no cookies, no
proxies, no compression, no pipelining.

Shape (after uvicorn's httptools_impl, client side): one `_Connection` protocol per
socket owns the httptools parser; the parser's callbacks fill a `_Response`, the state
of the one request in flight, kept apart from the connection's own state. A connection
goes back to its `_HostPool` only after a whole response was read, the server allowed
keep-alive and nothing went wrong; any failure, deadline or cancellation aborts it.

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
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, cast
from urllib.parse import quote, urlsplit

import httptools

from buyers.adapter import HttpRequest, HttpResponse
from exchange.transport import DEFAULT_MAX_RESPONSE_BYTES, TransportError, TransportTimeout

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_COUNT = 100
_MAX_CACHED_URLS = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Everything RFC 3986 allows unescaped in a path and query, plus "%" so that
# already-escaped URLs pass unchanged; spaces, controls and non-ASCII get escaped.
_URL_SAFE = "/?:@!$&'()*+,;=-._~%"
# The caller's headers cannot override the framing we write ourselves.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
_POOL_KEY = tuple[str, str, int]


@dataclass(slots=True)
class TransportStats:
    """Counters a benchmark reads to see connection reuse."""

    connections_opened: int = 0
    requests_sent: int = 0
    stale_retries: int = 0


@dataclass(frozen=True, slots=True)
class _Target:
    """One URL, parsed once: where to connect and the fixed middle of the request head."""

    pool_key: _POOL_KEY
    host: str
    port: int
    tls: bool
    # b" /path?q HTTP/1.1\r\nHost: h\r\nContent-Length: " -- the method goes before it.
    head: bytes


class _StaleConnection(TransportError):
    """A reused connection died before any response byte: safe to send again."""


class _Response:
    """Per-request state: what the parser has read of the one response in flight."""

    __slots__ = (
        "body_bytes",
        "chunks",
        "head_bytes",
        "header_count",
        "headers",
        "headers_complete",
        "keep_alive",
        "received",
        "rejection",
        "status",
    )

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.header_count = 0
        self.head_bytes = 0
        self.headers_complete = False
        self.keep_alive = False
        self.chunks: list[bytes] = []
        self.body_bytes = 0
        self.received = 0  # every byte read for this request, head included
        self.rejection: TransportError | None = None

    def to_http_response(self) -> HttpResponse:
        return HttpResponse(self.status, self.headers, b"".join(self.chunks))


class _Connection(asyncio.Protocol):
    """One keep-alive socket to one origin; at most one request in flight."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_response_bytes: int,
        on_lost: Callable[[_Connection], None],
    ) -> None:
        self._loop = loop
        self._max_response_bytes = max_response_bytes
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._response: _Response | None = None
        self._reused = False
        self.requests_sent = 0
        self.closed = False
        self.reusable = False
        self.pool: _HostPool | None = None
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def eof_received(self) -> None:
        # The server is closing; returning None lets asyncio close our side too.
        self.reusable = False

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:
            # Bytes nobody asked for (a 408, junk after a response): unusable.
            self.abort("unsolicited bytes")
            return
        response.received += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail(response.rejection or TransportError("malformed response"))
            return
        # httptools buffers a header line until it ends; bound that buffer too.
        if (
            self._response is response
            and not response.headers_complete
            and response.received > MAX_HEADER_BYTES
        ):
            self._fail(TransportError("response headers too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._on_lost(self)
        if self.pool is not None:
            self.pool.discard(self)
        response, waiter = self._response, self._waiter
        self._response = self._waiter = None
        if response is None or waiter is None or waiter.done():
            return
        if exc is None and response.headers_complete and _ends_at_close(response):
            waiter.set_result(response.to_http_response())
        elif response.received == 0 and self._reused:
            waiter.set_exception(_StaleConnection("stale keep-alive connection"))
        else:
            reason = type(exc).__name__ if exc else "connection closed mid-response"
            waiter.set_exception(TransportError(reason))

    # httptools callbacks, filling the request's _Response

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self._response
        assert response is not None
        response.header_count += 1
        response.head_bytes += len(name) + len(value)
        if response.header_count > MAX_HEADER_COUNT:
            self._reject(response, "too many response headers")
        if response.head_bytes > MAX_HEADER_BYTES:
            self._reject(response, "response headers too large")
        response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        response.headers_complete = True
        response.status = self._parser.get_status_code()
        # Only meaningful inside a callback: llhttp resets it once the message ends.
        response.keep_alive = self._parser.should_keep_alive()
        declared = response.headers.get("content-length")
        if declared is not None and int(declared) > self._max_response_bytes:
            self._reject(response, "response body too large")

    def on_body(self, body: bytes) -> None:
        response = self._response
        assert response is not None
        response.body_bytes += len(body)
        if response.body_bytes > self._max_response_bytes:
            self._reject(response, "response body too large")
        response.chunks.append(body)

    def on_message_complete(self) -> None:
        response, waiter = self._response, self._waiter
        assert response is not None and waiter is not None
        if 100 <= response.status < 200:
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
            response.headers = {}
            response.header_count = response.head_bytes = 0
            response.headers_complete = False
            return
        self._response = self._waiter = None
        self.reusable = response.keep_alive
        if not waiter.done():
            waiter.set_result(response.to_http_response())
        if not response.keep_alive:
            self.close()

    # used by H1Transport

    async def exchange(self, payload: bytes, deadline: float) -> HttpResponse:
        """Write one request and read its whole response before `deadline`.

        Any exception (including cancellation) leaves this connection aborted.
        """
        transport = self._transport
        assert transport is not None and self._waiter is None
        self._reused = self.requests_sent > 0
        if transport.is_closing():
            raise _StaleConnection("closed") if self._reused else TransportError("closed")
        self.requests_sent += 1
        self.reusable = False
        self._response = _Response()
        waiter: asyncio.Future[HttpResponse] = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_at(deadline, self._on_deadline)
        try:
            transport.write(payload)
            return await waiter
        except BaseException:
            self.abort("request failed")
            raise
        finally:
            timer.cancel()

    def close(self) -> None:
        """Close politely; for a connection with no request in flight."""
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def abort(self, reason: str) -> None:
        """Drop the socket now; a request still waiting fails with `reason`."""
        self._fail(TransportError(reason))

    def _on_deadline(self) -> None:
        self._fail(TransportTimeout("deadline passed"))

    def _fail(self, exc: TransportError) -> None:
        waiter = self._waiter
        self._response = self._waiter = None
        self.reusable = False
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()

    def _reject(self, response: _Response, reason: str) -> NoReturn:
        # Raising inside a callback stops the parser; data_received reports the reason.
        response.rejection = TransportError(reason)
        raise response.rejection


def _ends_at_close(response: _Response) -> bool:
    """A response with neither Content-Length nor chunking ends when the server closes."""
    return "content-length" not in response.headers and (
        "transfer-encoding" not in response.headers
    )


class _HostPool:
    """Idle keep-alive connections to one origin, oldest first.

    Taking and returning at the end keeps the list ordered by `idle_since`, so one
    `call_later` timer per pool, aimed at the oldest connection, expires them all.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, max_idle: int, idle_timeout_s: float
    ) -> None:
        self._loop = loop
        self._max_idle = max_idle
        self._idle_timeout_s = idle_timeout_s
        self._idle: list[_Connection] = []
        self._timer: asyncio.TimerHandle | None = None

    def take(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            connection.pool = None
            if connection.reusable and not connection.closed:
                return connection
            connection.close()
        return None

    def put(self, connection: _Connection) -> None:
        if len(self._idle) >= self._max_idle:
            connection.close()
            return
        connection.pool = self
        connection.idle_since = self._loop.time()
        self._idle.append(connection)
        if self._timer is None:
            self._timer = self._loop.call_later(self._idle_timeout_s, self._expire)

    def discard(self, connection: _Connection) -> None:
        connection.pool = None
        if connection in self._idle:
            self._idle.remove(connection)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.pool = None
            connection.close()

    def _expire(self) -> None:
        self._timer = None
        cutoff = self._loop.time() - self._idle_timeout_s
        while self._idle and self._idle[0].idle_since <= cutoff:
            connection = self._idle.pop(0)
            connection.pool = None
            connection.close()
        if self._idle:
            when = self._idle[0].idle_since + self._idle_timeout_s
            self._timer = self._loop.call_at(when, self._expire)


class H1Transport:
    """The protocol-level transport: httptools parsing over asyncio keep-alive sockets."""

    def __init__(
        self,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_idle_per_host: int = 64,
        idle_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        self._max_idle_per_host = max_idle_per_host
        self._idle_timeout_s = idle_timeout_s
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._targets: dict[str, _Target] = {}
        self._pools: dict[_POOL_KEY, _HostPool] = {}
        self._connections: set[_Connection] = set()
        self._closed = False
        self.stats = TransportStats()

    async def send(self, request: HttpRequest, timeout_s: float) -> HttpResponse:
        if self._closed:
            raise TransportError("transport closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        target = self._target(request.url)
        payload = _encode(request, target)
        pool = self._pools.get(target.pool_key)
        if pool is None:
            pool = _HostPool(loop, self._max_idle_per_host, self._idle_timeout_s)
            self._pools[target.pool_key] = pool

        connection = pool.take()
        if connection is not None:
            self.stats.requests_sent += 1
            try:
                response = await connection.exchange(payload, deadline)
            except _StaleConnection:
                self.stats.stale_retries += 1
            else:
                self._release(pool, connection)
                return response

        connection = await self._connect(loop, target, deadline)
        self.stats.requests_sent += 1
        response = await connection.exchange(payload, deadline)
        self._release(pool, connection)
        return response

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        for connection in list(self._connections):
            connection.abort("transport closed")
        # Let the transports run connection_lost before the loop may stop.
        await asyncio.sleep(0)

    def _release(self, pool: _HostPool, connection: _Connection) -> None:
        if connection.reusable and not connection.closed and not self._closed:
            pool.put(connection)
        else:
            connection.close()

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, target: _Target, deadline: float
    ) -> _Connection:
        def build() -> _Connection:
            return _Connection(loop, self._max_response_bytes, self._connections.discard)

        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await loop.create_connection(
                    build,
                    target.host,
                    target.port,
                    ssl=self._ssl_context if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                )
        except TimeoutError:
            raise TransportTimeout("deadline passed") from None
        except OSError as exc:
            raise TransportError(type(exc).__name__) from None
        self.stats.connections_opened += 1
        if self._closed:
            connection.abort("transport closed")
            raise TransportError("transport closed")
        self._connections.add(connection)
        return connection

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            target = _parse_url(url)
            if len(self._targets) >= _MAX_CACHED_URLS:
                # URLs come from buyer config; a flood of distinct ones means per-request
                # query strings, and a cleared cache costs only a re-parse.
                self._targets.clear()
            self._targets[url] = target
        return target


def _parse_url(url: str) -> _Target:
    try:
        parts = urlsplit(url)
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
        head = f" {path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Length: ".encode("ascii")
    except UnicodeEncodeError:
        raise TransportError("non-ascii host name") from None
    return _Target((parts.scheme, host, port), host, port, parts.scheme == "https", head)


def _encode(request: HttpRequest, target: _Target) -> bytes:
    body = request.body
    lines = [
        f"{name}: {value}\r\n"
        for name, value in request.headers
        if name.lower() not in _OWN_HEADERS
    ]
    text = "".join(lines)
    # Exactly one CR and one LF per line, else a name or value carried its own line
    # break and would smuggle extra headers into the request.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise TransportError("line break in a request header")
    try:
        method = request.method.encode("ascii")
        fields = text.encode("latin-1")
    except UnicodeEncodeError:
        raise TransportError("request method or header not encodable") from None
    return b"".join((method, target.head, b"%d\r\n" % len(body), fields, b"\r\n", body))
