"""Duplicate suppression as pure code: keyed hashes of a lead's contact fields, and which
buyers already bought the same person within their window.

Phones and emails are hashed with HMAC-SHA256 under the exchange's ``dedupe_hash_key``
after normalisation (E.164, lower case), so the ledger can recognise a person again
without holding anything that reverses to a phone number.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from exchange.core.fields import LeadSchema


@dataclass(frozen=True, slots=True)
class ContactHashes:
    phone: bytes | None
    email: bytes | None

    def values(self) -> list[bytes]:
        return [h for h in (self.phone, self.email) if h is not None]


def contact_hashes(lead: Mapping[str, Any], schema: LeadSchema, key: bytes) -> ContactHashes:
    """Hashes of the first phone and first email field of a validated full lead."""
    found: dict[str, bytes] = {}
    for name, spec in schema.fields.items():
        if spec.type in ("phone", "email") and spec.type not in found and lead.get(name):
            message = f"{spec.type}:{lead[name]}".encode()
            found[spec.type] = hmac.new(key, message, hashlib.sha256).digest()
    return ContactHashes(found.get("phone"), found.get("email"))


def lead_digest(ping_id: str, lead: Mapping[str, Any], key: bytes) -> bytes:
    """A digest of a validated full lead, the same in every process: what tells a repeat
    of a post (same lead) from another lead posted under the same ping. Keyed with
    ``key`` (the dedupe hash key, when configured) and the ping id, so the ledger's copy
    confirms no guess of a person's details made without the key."""
    message = orjson.dumps(lead, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key + ping_id.encode(), message, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class PastSale:
    buyer_id: str
    vertical: str
    created_at: datetime


def buyers_with_lead(
    sales: Iterable[PastSale], windows_days: Mapping[str, int], now: datetime
) -> dict[str, str]:
    """Buyers (with a dedupe window) that bought this person within it, and why."""
    found: dict[str, str] = {}
    for sale in sales:
        days = windows_days.get(sale.buyer_id, 0)
        if days and sale.created_at >= now - timedelta(days=days):
            found[sale.buyer_id] = f"bought the same lead on {sale.created_at:%Y-%m-%d} " \
                f"(dedupe window {days} days)"  # fmt: skip
    return found


def sold_in_vertical(sales: Iterable[PastSale], vertical: str, days: int, now: datetime) -> bool:
    """True when the exchange sold this person in the vertical within ``days``."""
    if not days:
        return False
    since = now - timedelta(days=days)
    return any(s.vertical == vertical and s.created_at >= since for s in sales)
