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

from buyers.adapter import Adapter, BuyerEndpoint
from buyers.registry import build_adapter
from exchange.auction.answers import PostAnswer
from exchange.auction.pingcache import PingCache, PingRecord
from exchange.core.caps import CapCounts
from exchange.core.config import BuyerConfig, LoadedConfig
from exchange.core.ranking import BuyerRules, buyers_by_vertical
from exchange.ledger.batch import BatchWriter
from exchange.ledger.store import Store
from exchange.telemetry.looplag import DecayingMax, LagMonitor
from exchange.telemetry.metrics import Metrics
from exchange.transport.base import Transport


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


@dataclass(frozen=True, slots=True)
class PostInFlight:
    """A post walking the ping tree in this process: its answer to come, and the digest
    of the lead it walks with (exchange.core.dedupe.lead_digest), so a concurrent post of
    another lead under the same ping is told apart from a retry."""

    answer: asyncio.Future[PostAnswer]
    lead_digest: bytes


def utc_now() -> datetime:
    return datetime.now(UTC)


class _PingIds:
    """Time-ordered UUIDs (version 7, RFC 9562): 48 bits of Unix time in milliseconds,
    then 74 random bits, so an id made later sorts later (to the millisecond).

    Ping ids key the ledger (pings, bid_outcomes, posts, sales). Random keys land on a
    random page of each primary key's index: on a table of three million bid outcomes that
    cost ~10.5 KB of WAL per ping (a full page image for almost every insert after each
    checkpoint), against ~3.5 KB with time-ordered ids, which fill the index at its right
    edge and keep its hot part in memory however large the table grows
    (benchmarks/ledger_ids.py). The random bits come from os.urandom read 4,000 bytes at
    a time: one system call per 400 ids."""

    __slots__ = ("_next", "_pool")

    def __init__(self) -> None:
        self._pool = ""
        self._next = 0

    def __call__(self) -> str:
        start = self._next
        if start + 20 > len(self._pool):
            self._pool = os.urandom(4000).hex()
            start = 0
        self._next = start + 20
        r = self._pool[start : start + 20]
        t = f"{time.time_ns() // 1_000_000:012x}"
        # Version nibble 7; variant bits 10 (RFC 9562) kept with two random bits.
        variant = "89ab"[int(r[3], 16) & 3]
        return f"{t[:8]}-{t[8:]}-7{r[:3]}-{variant}{r[4:7]}-{r[7:19]}"


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
    admitted: int = 0  # auctions admitted and not finished (exchange.auction.admission)
    # Recent time to commit a ping row (a decaying maximum, loop time), kept back from
    # the deadline.
    commit_time: DecayingMax = field(default_factory=lambda: DecayingMax(initial=0.005))
    # The event loop's recent lag (exchange.telemetry.looplag), also kept back from the deadline.
    lag: LagMonitor = field(default_factory=LagMonitor)
    # Accepted sales per buyer cap window, refreshed from the ledger (advisory, ping time).
    cap_counts: CapCounts = field(default_factory=dict)
    # Work in flight in this process, so a concurrent retry waits on it instead of polling.
    pings_inflight: dict[str, asyncio.Future[PingRecord]] = field(default_factory=dict)
    posts_inflight: dict[str, PostInFlight] = field(default_factory=dict)
    # Closing the claims of this process's failed walks (exchange.auction.claims).
    claim_closers: set[asyncio.Task[None]] = field(default_factory=set)
    buyers: Mapping[str, BuyerRuntime] = field(init=False)
    by_vertical: Mapping[str, tuple[BuyerRules, ...]] = field(init=False)

    def __post_init__(self) -> None:
        config = self.loaded.config
        self.buyers = {b.id: BuyerRuntime.from_config(b) for b in config.buyers if b.enabled}
        self.by_vertical = buyers_by_vertical(config)
