"""Recent pings kept in memory until they expire, so a post finds its ping without a
database read, and before the batch writer has stored it.

A bounded, insertion-ordered dict: expired entries and, past ``max_entries``, the oldest
ones are dropped; a post that misses here reads the database.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exchange.auction import Bid


@dataclass(frozen=True, slots=True)
class PingRecord:
    ping_id: str
    seller_id: str
    vertical: str
    external_id: str | None
    lead: dict[str, Any]  # non-PII, normalised
    tree: tuple[Bid, ...]  # ranked bids at or above the floor, best first
    price_cents: int | None
    payout_cents: int | None
    created_at: datetime
    expires_at: datetime
    tmax_ms: int


class PingCache:
    def __init__(self, max_entries: int = 200_000) -> None:
        self._entries: OrderedDict[str, PingRecord] = OrderedDict()
        self._max_entries = max_entries

    def put(self, record: PingRecord) -> None:
        self._entries[record.ping_id] = record
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def get(self, ping_id: str, now: datetime) -> PingRecord | None:
        self._expire(now)
        return self._entries.get(ping_id)

    def _expire(self, now: datetime) -> None:
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.expires_at > now:
                return
            entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
