"""A running exchange on 127.0.0.1 for tests: real HTTP server, real database, real
simulated buyers. Nothing is mocked."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import yaml
from aiohttp import web

from exchange.api.common import CTX
from exchange.app import AppOptions, create_app
from exchange.auction.context import ExchangeContext
from exchange.config import parse_config
from exchange.core.config import LoadedConfig
from exchange.tools.simulator import BuyerSimulator

SELLER_KEY = "acme-test-key-0123456789"
OTHER_SELLER_KEY = "other-test-key-0123456789"
ADMIN_TOKEN = "admin-test-token-0123456789"

VERTICAL = textwrap.dedent(
    """
    auto_insurance:
      fields:
        first_name: {type: string, pii: true, required: true}
        last_name:  {type: string, pii: true, required: true}
        email:      {type: email,  pii: true, required: true}
        phone:      {type: phone,  pii: true, required: true}
        street_address: {type: string, pii: true}
        zip:        {type: zip,    required: true}
        state:      {type: state,  required: true}
        age:        {type: integer, min: 16, max: 120}
        credit_rating: {type: enum, values: [excellent, good, fair, poor]}
    """
)

PING_LEAD = {"zip": "90210", "state": "CA", "age": 34, "credit_rating": "good"}
PII = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "Ada.Lovelace@Example.com",
    "phone": "(415) 555-2671",
    "street_address": "12 Analytical Engine Way",
}
FULL_LEAD = {**PING_LEAD, **PII}


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def config_text(
    buyers: Sequence[Mapping[str, Any]],
    exchange: Mapping[str, Any] | None = None,
    sellers: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    doc: dict[str, Any] = {
        "exchange": {"tmax_ms": 1000, "ping_ttl_s": 120, "admin_token": ADMIN_TOKEN,
                     **(exchange or {})},
        "verticals": yaml.safe_load(VERTICAL),
        "sellers": list(sellers) if sellers is not None else [
            {"id": "acme-media", "api_key": SELLER_KEY, "payout_share": 0.85, "floor": 2.00},
            {"id": "other-seller", "api_key": OTHER_SELLER_KEY, "payout_share": 0.8,
             "verticals": []},
        ],
        "buyers": [dict(b) for b in buyers],
    }  # fmt: skip
    return yaml.safe_dump(doc, sort_keys=False)


def make_config(buyers: Sequence[Mapping[str, Any]], **kwargs: Any) -> LoadedConfig:
    return parse_config(config_text(buyers, **kwargs), "test.yaml", env={})


def realtime_buyer(sim: BuyerSimulator, buyer_id: str, **extra: Any) -> dict[str, Any]:
    spec = sim.spec(buyer_id)
    return {
        "id": buyer_id,
        "verticals": ["auto_insurance"],
        "ping_url": sim.ping_url(buyer_id),
        "post_url": sim.post_url(buyer_id),
        "secret": spec.secret.decode(),
        **extra,
    }


@dataclass
class Exchange:
    url: str
    ctx: ExchangeContext
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None, key: str | None = SELLER_KEY,
        raw: bytes | None = None, headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:  # fmt: skip
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else (None if body is None else _dumps(body))
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        async with self.http.request(
            method, self.url + path, data=data, headers=all_headers
        ) as response:
            payload = await response.read()
            try:
                parsed = await response.json(content_type=None) if payload else None
            except ValueError:
                parsed = payload
            return response.status, parsed, response.headers

    async def ping(self, lead: Mapping[str, Any] | None = None, **extra: Any) -> Any:
        status, body, _ = await self.call(
            "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": lead or PING_LEAD, **extra}
        )
        assert status == 200, body
        return body

    async def post(self, ping_id: str, lead: Mapping[str, Any] | None = None, **extra: Any) -> Any:
        status, body, _ = await self.call(
            "POST", "/v1/post", {"ping_id": ping_id, "lead": lead or FULL_LEAD, **extra}
        )
        assert status == 200, body
        return body

    async def story(self, ping_id: str) -> Any:
        status, body, _ = await self.call("GET", f"/v1/auctions/{ping_id}", key=ADMIN_TOKEN)
        assert status == 200, body
        return body


def _dumps(body: Any) -> bytes:
    import orjson

    return orjson.dumps(body)


@asynccontextmanager
async def running_exchange(
    loaded: LoadedConfig | str, database_url: str
) -> AsyncIterator[Exchange]:
    if isinstance(loaded, str):
        loaded = parse_config(loaded, "test.yaml", env={})
    app: web.Application = create_app(
        loaded, AppOptions(database_url=database_url, batch_interval_s=0.01)
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            yield Exchange(f"http://127.0.0.1:{port}", app[CTX], http)
    finally:
        await runner.cleanup()


async def until_a_statement_waits_on_a_lock(
    db: asyncpg.Connection | asyncpg.Pool, what: str, tries: int = 2000
) -> None:
    """Poll pg_stat_activity (every 2 ms) until some statement of this database waits on
    a lock; ``what`` names the statement expected to, for the failure message."""
    for _ in range(tries):
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"{what} never waited on the lock")
