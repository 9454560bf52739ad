"""The demo's market: its sellers, its vertical, its buyers (how each behaves, which API
it speaks, its caps) and the exchange configuration that ties them together.

Most buyers speak our JSON; some speak the formats of real buyer APIs (form fields with
XML answers, XML, custom JSON: exchange/tools/dialects.py) and are configured as
``adapter: http`` buyers whose templates the simulator writes to match."""

from __future__ import annotations

import base64
import os
import random
from typing import Any

import yaml

from exchange.tools.dialects import OUR_JSON, Dialect
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec

TMAX_MS = 500
ADMIN_TOKEN = "demo-admin-token-0123456789"
VERTICAL_NAME = "auto_insurance"
SELLERS = [
    {"id": "acme-media", "api_key": "acme-demo-key-0123456789", "payout_share": 0.85, "floor": 2.0,
     "pool": True},
    {"id": "quote-forms-co", "api_key": "quote-demo-key-0123456789", "payout_share": 0.8,
     "floor": 5.0},
]  # fmt: skip
VERTICAL: dict[str, dict[str, dict[str, Any]]] = {
    "fields": {
        "first_name": {"type": "string", "pii": True, "required": True},
        "last_name": {"type": "string", "pii": True, "required": True},
        "email": {"type": "email", "pii": True, "required": True},
        "phone": {"type": "phone", "pii": True, "required": True},
        "zip": {"type": "zip", "required": True},
        "state": {"type": "state", "required": True},
        "age": {"type": "integer", "min": 16, "max": 120},
        "credit_rating": {"type": "enum", "values": ["excellent", "good", "fair", "poor"]},
    }
}
STATES = {"CA": "902", "TX": "750", "FL": "331", "NY": "100", "IL": "606", "WA": "981"}
PII_FIELDS = {name for name, spec in VERTICAL["fields"].items() if spec.get("pii")}
# Buyers (by position, in every group of eight) that speak another API than ours, with
# their credentials; the rest, at least half, speak our JSON and sign with a secret.
DIALECTS = {
    1: Dialect("form", api_key="boberdoo-demo-key"),
    3: Dialect("xml", api_key="crm-demo:crm-demo-password"),
    5: Dialect("custom_json", api_key="px-demo-api-key"),
}
OUT_OF_AREA = {3: ("CA", "TX", "FL", "NY")}  # the CRM buyer covers these states only
# Caps (by position, in every group of four), so that the buyer table shows them run down
# and the auctions show `capped` buyers once they are spent.
CAPS: dict[int, dict[str, Any]] = {
    0: {"hourly": 900},
    2: {"daily_budget": 2500.0},
}
FIXED_BUYER = "backfill-fixed"
# The lead pool (docs/distribution.md): acme-media's leads that do not sell wait there, at a
# price falling by the minute, and the first buyer (buyer-1) also pulls from it with its
# own key (exchange/tools/demo_sellers.py plays its client). Some of acme-media's posts
# ask a payout of at least POOL_MIN_PRICE, which the auction often cannot meet: those are
# the leads that reach the pool.
PULL_BUYER_KEY = "pull-demo-key-0123456789"
POOL = {"enabled": True, "visibility": "cherry_pick", "start_price": 40.00,
        "floor_price": 4.00, "decay_per_hour": 30.00, "max_age_hours": 1}  # fmt: skip
POOL_MIN_PRICE = 25.00


def buyer_specs(count: int) -> list[SimulatedBuyerSpec]:
    """A varied market: big and small bidders, slow ones, some that hang or reject, in
    our JSON and in other buyer APIs."""
    specs = []
    for n in range(count):
        rng = random.Random(n)
        low = rng.randrange(300, 2000)
        dialect = DIALECTS.get(n % 8)
        specs.append(
            SimulatedBuyerSpec(
                buyer_id=f"buyer-{n + 1}"
                if dialect is None
                else f"buyer-{n + 1}-{dialect.format.replace('_', '-')}",
                secret=b"" if dialect is not None else f"demo-secret-{n + 1}".encode(),
                bid_cents=(low, low + rng.randrange(500, 3000)),
                no_bid_rate=rng.choice([0.1, 0.2, 0.4]),
                latency_ms=(5, rng.choice([40, 80, 150, 400])),
                hang_rate=0.03 if n % 4 == 3 else 0.0,
                error_rate=0.01,
                reject_rate=rng.choice([0.05, 0.15, 0.3]),
                seed=n,
                dialect=dialect or OUR_JSON,
                states=OUT_OF_AREA.get(n % 8, ()),
            )
        )
    return specs


def fixed_buyer_spec() -> SimulatedBuyerSpec:
    """The fixed-price tier at the bottom of the ping tree: never pinged, only posted to."""
    return SimulatedBuyerSpec(FIXED_BUYER, secret=b"demo-secret-fixed", reject_rate=0.1)


def demo_config(sim: BuyerSimulator, specs: list[SimulatedBuyerSpec]) -> str:
    """The exchange's YAML configuration for the buyers ``sim`` serves."""
    buyers: list[dict[str, Any]] = []
    for n, spec in enumerate(specs):
        buyer: dict[str, Any] = {
            "id": spec.buyer_id,
            "company_size": [5000, 1200, 300, 40][n % 4],
            "priority": n % 5,
            "verticals": [VERTICAL_NAME],
            **sim.exchange_buyer(spec.buyer_id, VERTICAL["fields"], PII_FIELDS),
            "timeout_ms": 300,
        }
        if n % 3 == 1:
            buyer["filters"] = {"state": {"in": ["CA", "TX", "FL"]}}
        if n % 4 in CAPS:
            buyer["caps"] = CAPS[n % 4]
        if n == 0:
            buyer["api_key"] = PULL_BUYER_KEY
        buyers.append(buyer)
    buyers.append(
        {"id": FIXED_BUYER, "verticals": [VERTICAL_NAME], "price": 4.0,
         "post_url": sim.post_url(FIXED_BUYER), "secret": "demo-secret-fixed"}
    )  # fmt: skip
    # A key for this run only: the pool's PII is sealed under it (a demo ledger's leads
    # are made up, and its database is new each run).
    pii_key = base64.b64encode(os.urandom(32)).decode()
    doc = {
        "exchange": {"tmax_ms": TMAX_MS, "admin_token": ADMIN_TOKEN, "pii_key": pii_key},
        "verticals": {VERTICAL_NAME: {**VERTICAL, "pool": POOL}},
        "sellers": SELLERS,
        "buyers": buyers,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def random_lead(rng: random.Random) -> dict[str, Any]:
    state = rng.choice(list(STATES))
    return {
        "first_name": rng.choice(["Ada", "Grace", "Alan", "Edsger", "Barbara"]),
        "last_name": rng.choice(["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov"]),
        "email": f"lead{rng.randrange(10**6)}@example.com",
        "phone": f"(415) 555-{rng.randrange(1000, 9999)}",
        "zip": STATES[state] + f"{rng.randrange(100):02d}",
        "state": state,
        "age": rng.randrange(18, 80),
        "credit_rating": rng.choice(["excellent", "good", "fair", "poor"]),
    }
