"""The live parts of one running exchange, built once by the app factory and handed to
every request: config, buyer adapters, transport, store, batch writer, metrics, clock.

Nothing here is a module-level global; tests build their own with a fixed clock and ids.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from buyers.adapter import Adapter, BuyerEndpoint
from buyers.registry import build_adapter
from exchange.auction import BuyerRules, buyers_by_vertical
from exchange.batch import BatchWriter
from exchange.caps import CapCounts
from exchange.config import BuyerConfig, LoadedConfig
from exchange.looplag import DecayingMax, LagMonitor
from exchange.metrics import Metrics
from exchange.pingcache import PingCache, PingRecord
from exchange.store import Store
from exchange.transport import Transport

if TYPE_CHECKING:
    from exchange.posting import PostAnswer


@dataclass(frozen=True, slots=True)
class BuyerRuntime:
    """One buyer as the auction drives it: its compiled rules and its adapter."""

    rules: BuyerRules
    adapter: Adapter
    timeout_ms: int | None
    post_timeout_ms: int

    @classmethod
    def from_config(cls, buyer: BuyerConfig) -> BuyerRuntime:
        endpoint = BuyerEndpoint(
            buyer_id=buyer.id,
            ping_url=buyer.ping_url,
            post_url=buyer.post_url,
            secret=buyer.secret.encode(),
            options=buyer.adapter_options,
        )
        return cls(
            rules=BuyerRules.from_config(buyer),
            adapter=build_adapter(buyer.adapter, endpoint),
            timeout_ms=buyer.timeout_ms,
            post_timeout_ms=buyer.post_timeout_ms,
        )


def utc_now() -> datetime:
    return datetime.now(UTC)


class _PingIds:
    """Random (version 4) UUIDs, as uuid.uuid4 makes them but from os.urandom read 4 KiB
    at a time: one system call per 256 ids instead of one per id."""

    __slots__ = ("_next", "_pool")

    def __init__(self) -> None:
        self._pool = ""
        self._next = 0

    def __call__(self) -> str:
        start = self._next
        if start >= len(self._pool):
            self._pool = os.urandom(4096).hex()
            start = 0
        self._next = start + 32
        h = self._pool[start : start + 32]
        # Version nibble 4; variant bits 10 (RFC 4122) kept with two random bits.
        variant = "89ab"[int(h[16], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


new_ping_id = _PingIds()


@dataclass(repr=False)  # holds live resources and secrets: nothing worth printing whole
class ExchangeContext:
    loaded: LoadedConfig
    store: Store
    writer: BatchWriter
    transport: Transport
    metrics: Metrics
    pings: PingCache = field(default_factory=PingCache)
    now: Callable[[], datetime] = utc_now
    new_id: Callable[[], str] = new_ping_id
    unix_time: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    db_ready: bool = True
    admitted: int = 0  # auctions admitted and not finished (seller_api._admitted)
    # Recent time to commit a ping row (a decaying maximum, loop time), kept back from
    # the deadline.
    commit_time: DecayingMax = field(default_factory=lambda: DecayingMax(initial=0.005))
    # The event loop's recent lag (exchange.looplag), also kept back from the deadline.
    lag: LagMonitor = field(default_factory=LagMonitor)
    # Accepted sales per buyer cap window, refreshed from the ledger (advisory, ping time).
    cap_counts: CapCounts = field(default_factory=dict)
    # Work in flight in this process, so a concurrent retry waits on it instead of polling.
    pings_inflight: dict[str, asyncio.Future[PingRecord]] = field(default_factory=dict)
    posts_inflight: dict[str, asyncio.Future[PostAnswer]] = field(default_factory=dict)
    buyers: Mapping[str, BuyerRuntime] = field(init=False)
    by_vertical: Mapping[str, tuple[BuyerRules, ...]] = field(init=False)

    def __post_init__(self) -> None:
        config = self.loaded.config
        self.buyers = {b.id: BuyerRuntime.from_config(b) for b in config.buyers if b.enabled}
        self.by_vertical = buyers_by_vertical(config)
