"""What the benchmark's buyers do and what the sellers send: the given latency
distributions, the faults of the deadline run, the leads, and the exchange's config.

Every server under test (the exchange and both baselines) talks to the same buyers with
the same behaviours, so their numbers compare.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

TMAX_MS = 250
SELLER_ID = "bench-seller"
SELLER_KEY = "bench-seller-key-0123456789abcdef"
ADMIN_TOKEN = "bench-admin-token-0123456789"
BUYER_SECRET = "bench-buyer-secret-0123456789"
STATES = ("CA", "TX", "FL", "NY", "IL", "PA", "OH", "GA")
CREDIT = ("excellent", "good", "fair", "poor")


@dataclass(frozen=True)
class BuyerBehaviour:
    """One buyer's answers: latency uniform in ``latency_ms``; rates are probabilities."""

    latency_ms: tuple[float, float]
    bid_cents: tuple[int, int] = (200, 3000)
    no_bid_rate: float = 0.1
    hang_rate: float = 0.0  # never answers the ping; the client has to give up
    error_rate: float = 0.0  # HTTP 500
    reject_rate: float = 0.0  # post answered {"accepted": false}
    post_latency_ms: tuple[float, float] = (5.0, 20.0)


# The latency mix of the throughput runs: most buyers answer within 10 ms, some take
# tens of milliseconds, as real bid endpoints on a nearby network do.
FAST = (1.0, 8.0)
TYPICAL = (5.0, 25.0)
SLOW = (10.0, 50.0)


def normal_behaviours(count: int) -> list[BuyerBehaviour]:
    """Buyer i: fast for i % 10 < 6, typical for 6..8, slow for 9; 10% no-bids."""
    out = []
    for index in range(count):
        slot = index % 10
        latency = FAST if slot < 6 else TYPICAL if slot < 9 else SLOW
        out.append(BuyerBehaviour(latency_ms=latency, reject_rate=0.1))
    return out


def faulty_behaviours(count: int, tmax_ms: int = TMAX_MS) -> list[BuyerBehaviour]:
    """The deadline run: on top of the normal mix, buyer 1 hangs on 20% of pings, buyer 2
    answers after 0.4 to 1.6 x tmax (half of its answers come too late), buyer 3 fails
    10% of pings with HTTP 500, buyer 4 rejects every post and the rest reject 30%."""
    out = []
    for index, normal in enumerate(normal_behaviours(count)):
        behaviour = BuyerBehaviour(latency_ms=normal.latency_ms, reject_rate=0.3)
        slot = index % 10
        if slot == 0:
            behaviour = BuyerBehaviour(latency_ms=normal.latency_ms, hang_rate=0.2)
        elif slot == 1:
            behaviour = BuyerBehaviour(latency_ms=(0.4 * tmax_ms, 1.6 * tmax_ms), reject_rate=0.3)
        elif slot == 2:
            behaviour = BuyerBehaviour(latency_ms=normal.latency_ms, error_rate=0.1)
        elif slot == 3:
            behaviour = BuyerBehaviour(latency_ms=normal.latency_ms, reject_rate=1.0)
        out.append(behaviour)
    return out


def behaviours_json(behaviours: list[BuyerBehaviour]) -> list[dict[str, Any]]:
    return [vars(b) for b in behaviours]


def behaviours_from_json(items: list[dict[str, Any]]) -> list[BuyerBehaviour]:
    converted = []
    for item in items:
        fields = dict(item)
        for key in ("latency_ms", "bid_cents", "post_latency_ms"):
            fields[key] = tuple(fields[key])
        converted.append(BuyerBehaviour(**fields))
    return converted


# -- what sellers send ---------------------------------------------------------------------


def leads(count: int = 64, seed: int = 7) -> list[dict[str, Any]]:
    """Full leads (PII included); a ping sends the non-PII part."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        out.append(
            {
                "first_name": f"Ada{index}",
                "last_name": "Lovelace",
                "email": f"ada{index}@example.com",
                "phone": f"+1415555{index % 10000:04d}",
                "zip": f"{rng.randint(10000, 99999)}",
                "state": rng.choice(STATES),
                "age": rng.randint(21, 80),
                "credit_rating": rng.choice(CREDIT),
            }
        )
    return out


PII = ("first_name", "last_name", "email", "phone")


def ping_bodies() -> list[bytes]:
    """Bodies of POST /v1/ping, one per lead."""
    bodies = []
    for lead in leads():
        ping_lead = {k: v for k, v in lead.items() if k not in PII}
        bodies.append(orjson.dumps({"vertical": "auto_insurance", "lead": ping_lead}))
    return bodies


def full_leads_json() -> list[bytes]:
    return [orjson.dumps(lead) for lead in leads()]


# -- the exchange's configuration -----------------------------------------------------------


VERTICAL_FIELDS: dict[str, Any] = {
    "first_name": {"type": "string", "pii": True, "required": True},
    "last_name": {"type": "string", "pii": True, "required": True},
    "email": {"type": "email", "pii": True, "required": True},
    "phone": {"type": "phone", "pii": True, "required": True},
    "street_address": {"type": "string", "pii": True},
    "zip": {"type": "zip", "required": True},
    "state": {"type": "state", "required": True},
    "age": {"type": "integer", "min": 16, "max": 120},
    "credit_rating": {"type": "enum", "values": list(CREDIT)},
}


def exchange_config(
    ping_ports: list[int], post_ports: list[int], transport: str, tmax_ms: int = TMAX_MS
) -> str:
    """A production-shaped config: signed requests, filters every lead passes (so all N
    buyers are called), tie-breakers, no seller rate limit (the load is the point)."""
    buyers = []
    for index, (ping_port, post_port) in enumerate(zip(ping_ports, post_ports, strict=True)):
        buyers.append(
            {
                "id": f"buyer-{index + 1:02d}",
                "company_size": 100 * (index % 7),
                "priority": index % 3,
                "verticals": ["auto_insurance"],
                "ping_url": f"http://127.0.0.1:{ping_port}/ping",
                "post_url": f"http://127.0.0.1:{post_port}/post",
                "secret": BUYER_SECRET,
                "post_timeout_ms": 2000,
                "filters": {"state": {"in": list(STATES)}, "age": {"gte": 18}},
            }
        )
    document = {
        "exchange": {
            "tmax_ms": tmax_ms,
            "ping_ttl_s": 120,
            "admin_token": ADMIN_TOKEN,
            "tie_breakers": ["company_size", "priority", "latency"],
            "transport": transport,
        },
        "verticals": {"auto_insurance": {"fields": VERTICAL_FIELDS}},
        "sellers": [{"id": SELLER_ID, "api_key": SELLER_KEY, "payout_share": 0.85, "floor": 1.00}],
        "buyers": buyers,
    }
    return yaml.safe_dump(document, sort_keys=False)
