"""Keep-alive pools: one buyer's idle connections to one origin, kept for its next
requests and closed once idle for `idle_timeout_s`, by one timer per pool.

A pool is per buyer and origin, never shared by two buyers (h1.py says why); it also
counts its connections still listening for a late answer, which h1.py bounds. It holds
connection.py's `_Connection`s, and needs of them only what `_Pooled` names.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar


class _Pooled(Protocol):
    """What a pool needs of a connection it keeps."""

    in_pool: bool
    idle_since: float  # loop time

    @property
    def usable(self) -> bool: ...

    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Pooled)


class _HostPool(Generic[_C]):
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
        self._idle: list[_C] = []
        self._timer: asyncio.TimerHandle | None = None
        self.draining = 0

    def take(self) -> _C | None:
        while self._idle:
            connection = self._idle.pop()
            connection.in_pool = False
            if connection.usable:
                return connection
            connection.close()
        return None

    def put(self, connection: _C) -> None:
        if len(self._idle) >= self._max_idle:
            connection.close()
            return
        connection.in_pool = True
        connection.idle_since = self._loop.time()
        self._idle.append(connection)
        if self._timer is None:
            self._timer = self._loop.call_later(self._idle_timeout_s, self._expire)

    def discard(self, connection: _C) -> None:
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
