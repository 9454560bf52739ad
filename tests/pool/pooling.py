"""What the pool tests share: a config with the auto_insurance pool on and a seller that
allows it, pull buyers (real simulated buyers that never bid in real time, so every lead
posted ends unsold and goes to the pool), and calls made with a buyer's own key."""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from exchange.config import parse_config
from exchange.core.config import LoadedConfig
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import FULL_LEAD, OTHER_SELLER_KEY, SELLER_KEY, Exchange, config_text
from tests.support.harness import realtime_buyer as _realtime_buyer

PII_KEY = base64.b64encode(bytes(range(32))).decode()
NEW_PII_KEY = base64.b64encode(bytes(range(100, 132))).decode()
DEDUPE_KEY = "pool-dedupe-key-0123456789"
POOL: dict[str, Any] = {
    "enabled": True,
    "visibility": "cherry_pick",
    "start_price": 20.00,
    "floor_price": 2.00,
    "decay_per_hour": 1.00,
    "max_age_hours": 72,
}
SELLERS: list[dict[str, Any]] = [
    {"id": "acme-media", "api_key": SELLER_KEY, "payout_share": 0.85, "pool": True},
    {"id": "other-seller", "api_key": OTHER_SELLER_KEY, "payout_share": 0.8},
]


def buyer_key(buyer_id: str) -> str:
    return f"{buyer_id}-pool-key-0123456789"


def pull_specs(*buyer_ids: str) -> list[SimulatedBuyerSpec]:
    """Buyers that never bid in real time: they buy from the pool only."""
    return [SimulatedBuyerSpec(b, no_bid_rate=1.0, seed=i) for i, b in enumerate(buyer_ids)]


def pull_buyer(sim: BuyerSimulator, buyer_id: str, **extra: Any) -> dict[str, Any]:
    return _realtime_buyer(sim, buyer_id, api_key=buyer_key(buyer_id), **extra)


def pool_config(
    buyers: Sequence[Mapping[str, Any]],
    pool: Mapping[str, Any] | None = None,
    exchange: Mapping[str, Any] | None = None,
    sellers: Sequence[Mapping[str, Any]] | None = None,
    vertical: Mapping[str, Any] | None = None,
) -> str:
    text = config_text(
        buyers, exchange={"pii_key": PII_KEY, **(exchange or {})}, sellers=sellers or SELLERS
    )
    doc = yaml.safe_load(text)
    doc["verticals"]["auto_insurance"]["pool"] = dict(pool if pool is not None else POOL)
    doc["verticals"]["auto_insurance"].update(vertical or {})
    return yaml.safe_dump(doc, sort_keys=False)


async def direct_post(
    ex: Exchange, lead: Mapping[str, Any] | None = None, key: str = SELLER_KEY, **extra: Any
) -> dict[str, Any]:
    """A direct post of a full lead, expected to end unsold (the pull buyers never bid)."""
    status, body, _ = await ex.call(
        "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": dict(lead or FULL_LEAD),
                              **extra}, key=key,
    )  # fmt: skip
    assert status == 200, body
    assert body["status"] == "unsold", body
    result: dict[str, Any] = body
    return result


async def listing(ex: Exchange, buyer_id: str, query: str = "?vertical=auto_insurance") -> Any:
    status, body, _ = await ex.call("GET", "/v1/pool" + query, key=buyer_key(buyer_id))
    assert status == 200, body
    return body["offers"]


async def claim(ex: Exchange, buyer_id: str, lead_id: str) -> tuple[int, Any]:
    status, body, _ = await ex.call("POST", f"/v1/pool/{lead_id}/claim", key=buyer_key(buyer_id))
    return status, body


def with_pool(
    loaded: LoadedConfig, pool: Mapping[str, Any] | None = None, sellers: Sequence[str] = ()
) -> LoadedConfig:
    """``loaded`` with the auto_insurance pool on, a PII key, and ``sellers`` allowing it."""
    doc = copy.deepcopy(dict(loaded.raw))
    doc["exchange"] = {**doc.get("exchange", {}), "pii_key": PII_KEY}
    doc["verticals"]["auto_insurance"]["pool"] = dict(pool if pool is not None else POOL)
    for seller in doc["sellers"]:
        if seller["id"] in sellers:
            seller["pool"] = True
    return parse_config(yaml.safe_dump(doc, sort_keys=False), loaded.source, env={})
