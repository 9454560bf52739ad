"""The ceiling's buyer client: the least an HTTP/1.1 keep-alive POST can cost in Python.

One ``asyncio.Protocol`` per socket, request bytes written directly (a precomputed head
per URL), the response parsed by ``httptools``, idle sockets kept on a stack per origin.
Nothing else: no TLS, no size caps, no header limits, no stale-connection retry. That is
the point: baseline (b) built on it is what the hardware allows, and the distance from
it to the exchange is everything the exchange does on top.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httptools


class ClientError(Exception):
    pass


class _Connection(asyncio.Protocol):
    __slots__ = ("_body", "_parser", "_status", "_transport", "_waiter", "keep_alive")

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._status = 0
        self._body: list[bytes] = []
        self.keep_alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep_alive = False
        self._transport = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientError("connection lost"))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        body, self._body = self._body, []
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, b"".join(body)))

    def request(self, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self._transport is not None
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(payload)
        return waiter

    @property
    def usable(self) -> bool:
        return self.keep_alive and self._transport is not None and not self._transport.is_closing()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class MinimalClient:
    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._heads: dict[str, tuple[tuple[str, int], bytes]] = {}
        self.connections_opened = 0

    def _head(self, url: str) -> tuple[tuple[str, int], bytes]:
        known = self._heads.get(url)
        if known is None:
            parts = urlsplit(url)
            origin = (parts.hostname or "127.0.0.1", parts.port or 80)
            head = (
                f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {origin[0]}:{origin[1]}\r\n"
                "Content-Type: application/json\r\nContent-Length: "
            ).encode()
            known = self._heads[url] = (origin, head)
        return known

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """(status, body). Cancel it to give up: the socket is then aborted."""
        origin, head = self._head(url)
        idle = self._idle.setdefault(origin, [])
        connection = idle.pop() if idle else None
        if connection is None or not connection.usable:
            loop = asyncio.get_running_loop()
            _, connection = await loop.create_connection(_Connection, *origin)
            self.connections_opened += 1
        try:
            status, answer = await connection.request(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        except BaseException:
            connection.abort()
            raise
        if connection.usable:
            idle.append(connection)
        return status, answer

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()
