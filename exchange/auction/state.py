"""One process's mutable auction state, each piece with one owner and its own methods:
which auctions and posts are in flight here, how many auctions are admitted, the ledger's
health as last checked, this process's view of the cap counters, and the tasks closing
the claims of failed walks. Nothing else changes these; the context holds one of each."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from exchange.auction.answers import PostAnswer
from exchange.auction.pingcache import PingRecord
from exchange.core.caps import CapCounts


@dataclass(frozen=True, slots=True)
class PostInFlight:
    """A post walking the ping tree in this process: its answer to come, and the digest
    of the lead it walks with (exchange.core.dedupe.lead_digest), so a concurrent post of
    another lead under the same ping is told apart from a retry."""

    answer: asyncio.Future[PostAnswer]
    lead_digest: bytes


class InFlight:
    """Auctions and posts running in this process, by ping id, so a concurrent request
    for the same ping (a retry, a post racing its ping) waits on them instead of polling
    the ledger."""

    __slots__ = ("_pings", "_posts")

    def __init__(self) -> None:
        self._pings: dict[str, asyncio.Future[PingRecord]] = {}
        self._posts: dict[str, PostInFlight] = {}

    def ping(self, ping_id: str) -> asyncio.Future[PingRecord] | None:
        return self._pings.get(ping_id)

    def start_ping(self, ping_id: str, record: asyncio.Future[PingRecord]) -> None:
        self._pings[ping_id] = record

    def end_ping(self, ping_id: str) -> None:
        del self._pings[ping_id]

    def post(self, ping_id: str) -> PostInFlight | None:
        return self._posts.get(ping_id)

    def start_post(self, ping_id: str, post: PostInFlight) -> None:
        self._posts[ping_id] = post

    def end_post(self, ping_id: str) -> None:
        del self._posts[ping_id]


class Admission:
    """How many auctions this process has admitted and not finished."""

    __slots__ = ("admitted",)

    def __init__(self) -> None:
        self.admitted = 0

    def take(self) -> None:
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1


class LedgerHealth:
    """Whether the ledger answered its last health check (exchange.app's watcher)."""

    __slots__ = ("_ready",)

    def __init__(self) -> None:
        self._ready = True

    @property
    def ready(self) -> bool:
        return self._ready

    def mark(self, ready: bool) -> bool:
        """Record the check's result; True when that changes the state."""
        changed = ready != self._ready
        self._ready = ready
        return changed


class CapView:
    """This process's view of the ledger's cap counters (advisory, for ping-time
    screening; the exact check is the reservation at post time), refreshed by the app."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: CapCounts = {}

    @property
    def counts(self) -> CapCounts:
        return self._counts

    def replace(self, counts: CapCounts) -> None:
        self._counts = counts


class ClaimClosers:
    """Tasks closing the claims this process's failed walks left (exchange.auction.claims),
    kept until done so that stopping can give them a moment."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, closing: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(closing)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the closers still running, then cancel them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
