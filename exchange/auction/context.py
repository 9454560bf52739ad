"""The live parts of one running exchange, built once by the app factory and handed to
every request: config, buyer adapters, transport, store, batch writer, metrics, clock.

Nothing here is a module-level global; tests build their own with a fixed clock and ids.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from buyers.adapter import Adapter
from buyers.registry import adapter_for
from exchange.auction.acceptance import AcceptanceView
from exchange.auction.pingcache import PingCache
from exchange.auction.rotation import Rotation
from exchange.auction.state import Admission, CapView, ClaimClosers, InFlight, LedgerHealth
from exchange.core.config import BuyerConfig, LoadedConfig, VerticalConfig
from exchange.core.ranking import BuyerRules, buyers_by_vertical
from exchange.core.sealing import PiiKeyRing, key_ring
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
    def from_config(
        cls, buyer: BuyerConfig, verticals: Mapping[str, VerticalConfig]
    ) -> BuyerRuntime:
        return cls(
            rules=BuyerRules.from_config(buyer),
            adapter=adapter_for(buyer, verticals),
            timeout_ms=buyer.timeout_ms,
            post_timeout_ms=buyer.post_timeout_ms,
        )


@dataclass(frozen=True)
class SettingsSnapshot:
    """One version of the live settings (exchange/auction/live.py) as auctions use it:
    the config and, built from it, each enabled buyer's runtime and each vertical's rules.
    Immutable: a change builds a new one, and a context adopts it whole."""

    version: int
    loaded: LoadedConfig
    buyers: Mapping[str, BuyerRuntime]
    by_vertical: Mapping[str, tuple[BuyerRules, ...]]

    @classmethod
    def build(
        cls, loaded: LoadedConfig, version: int = 0, previous: SettingsSnapshot | None = None
    ) -> SettingsSnapshot:
        """``previous``'s runtime of a buyer whose config did not change is kept (its
        adapter is not compiled again); only changed and new buyers get new ones."""
        config = loaded.config
        kept: Mapping[str, BuyerRuntime] = {}
        old: Mapping[str, BuyerConfig] = {}
        if previous is not None and previous.loaded.config.verticals == config.verticals:
            kept, old = previous.buyers, {b.id: b for b in previous.loaded.config.buyers}
        buyers = {
            b.id: kept[b.id]
            if b.id in kept and old.get(b.id) == b
            else BuyerRuntime.from_config(b, config.verticals)
            for b in config.buyers
            if b.enabled
        }
        return cls(version, loaded, buyers, buyers_by_vertical(config))


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


class Clock:
    """The exchange's wall-clock time (UTC datetimes and Unix seconds), passed to
    everything that stamps or compares times; ``advance`` moves it forward for tests of
    expiry and windows. Deadlines are the event loop's time, not this."""

    __slots__ = ("_now", "_offset", "_unix_time")

    def __init__(
        self,
        now: Callable[[], datetime] = utc_now,
        unix_time: Callable[[], float] = time.time,
    ) -> None:
        self._now = now
        self._unix_time = unix_time
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return self._now() + self._offset if self._offset else self._now()

    def unix_time(self) -> float:
        return self._unix_time() + self._offset.total_seconds()

    def advance(self, by: timedelta) -> None:
        self._offset += by

    def reset(self) -> None:
        self._offset = timedelta(0)


@dataclass(frozen=True, repr=False)  # holds live resources and secrets: nothing to print
class ExchangeContext:
    """The services every request is handed: config, ledger, transport, metrics, clock,
    and one owner for each piece of this process's mutable state (exchange.auction.state),
    changed only through its own methods. Built once by the app; never reassigned."""

    loaded: LoadedConfig
    store: Store
    writer: BatchWriter
    transport: Transport
    metrics: Metrics
    clock: Clock = field(default_factory=Clock)
    new_id: Callable[[], str] = new_ping_id
    rng: random.Random = field(default_factory=random.Random)
    pings: PingCache = field(default_factory=PingCache)
    # Recent time to commit a ping row (a decaying maximum, loop time), kept back from
    # the deadline.
    commit_time: DecayingMax = field(default_factory=lambda: DecayingMax(initial=0.005))
    # The event loop's recent lag (exchange.telemetry.looplag), also kept back from it.
    lag: LagMonitor = field(default_factory=LagMonitor)
    inflight: InFlight = field(default_factory=InFlight)
    admission: Admission = field(default_factory=Admission)
    health: LedgerHealth = field(default_factory=LedgerHealth)
    caps: CapView = field(default_factory=CapView)
    # Every buyer's p(accept) per vertical, refreshed from the ledger (expected-value ranking).
    acceptance: AcceptanceView = field(default_factory=AcceptanceView)
    # Whose turn it is among equal bids (the round_robin tie-breaker), per vertical.
    rotation: Rotation = field(default_factory=Rotation)
    claim_closers: ClaimClosers = field(default_factory=ClaimClosers)
    buyers: Mapping[str, BuyerRuntime] = field(init=False)
    by_vertical: Mapping[str, tuple[BuyerRules, ...]] = field(init=False)
    settings_version: int = field(init=False, default=0)
    # Seals the PII of pooled and held leads (exchange.pii_key); None when not configured.
    pii_keys: PiiKeyRing | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pii_keys", key_ring(self.loaded.settings))
        self._take(SettingsSnapshot.build(self.loaded))

    def _take(self, snapshot: SettingsSnapshot) -> None:
        # The settings part, set in one step with no await in between, so no coroutine
        # sees one version's config with another's buyers.
        object.__setattr__(self, "loaded", snapshot.loaded)
        object.__setattr__(self, "buyers", snapshot.buyers)
        object.__setattr__(self, "by_vertical", snapshot.by_vertical)
        object.__setattr__(self, "settings_version", snapshot.version)

    def snapshot(self) -> SettingsSnapshot:
        return SettingsSnapshot(self.settings_version, self.loaded, self.buyers, self.by_vertical)

    def adopt(self, snapshot: SettingsSnapshot) -> None:
        """Put a new settings version in force for what starts from now on. Only the live
        settings owner (exchange/auction/live.py) calls this, on the app's context."""
        self._take(snapshot)

    def pinned(self) -> ExchangeContext:
        """This context with its settings fixed as they are now: an auction or a post walk
        runs on a pinned context, so a change adopted meanwhile does not reach it (the
        services and the state owners are shared, not copied). What copy.copy does for
        a plain dataclass, without its reduce protocol: every request pins one."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone
