"""What every API handler shares: the context key, authentication, rate limits, reading
a JSON body and writing a JSON answer."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from exchange.auction.context import ExchangeContext
from exchange.core.config import BuyerConfig, SellerConfig, hash_key
from exchange.core.errors import (
    FieldError,
    MalformedJson,
    NotReady,
    RateLimited,
    TooLarge,
    Unauthorized,
)

CTX = web.AppKey("exchange_context", ExchangeContext)
LIMITS = web.AppKey("rate_limits", dict)


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing Authorization: Bearer <api key>")
    return token.strip()


def authenticate_seller(request: web.Request, ctx: ExchangeContext) -> SellerConfig:
    # Keys are looked up by their SHA-256: the lookup's timing depends on the hash of the
    # presented key, which tells an attacker nothing about any stored key.
    seller = ctx.loaded.sellers_by_key_hash.get(hash_key(bearer(request)))
    if seller is None:
        raise Unauthorized("unknown api key")
    _rate_limit(request, seller)
    return seller


def authenticate_buyer(request: web.Request, ctx: ExchangeContext) -> BuyerConfig:
    """The buyer whose own ``api_key`` is presented (SPEC §10, §11)."""
    buyer = ctx.loaded.buyers_by_key_hash.get(hash_key(bearer(request)))
    if buyer is None:
        raise Unauthorized("unknown buyer api key")
    return buyer


def authenticate_admin(request: web.Request, ctx: ExchangeContext) -> str:
    """The name of the operator token presented (exchange.admin_token is "admin")."""
    tokens = ctx.loaded.settings.named_tokens()
    if not tokens:
        raise Unauthorized("operator API disabled: no exchange.admin_token configured")
    presented = hash_key(bearer(request))
    found = None
    for name, token in tokens:  # every token compared, whichever matches
        if hmac.compare_digest(presented, hash_key(token)):
            found = name
    if found is None:
        raise Unauthorized("bad admin token")
    return found


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 if a request may pass now, else the seconds until one may."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s


def _rate_limit(request: web.Request, seller: SellerConfig) -> None:
    if seller.rate_limit_per_s is None:
        return
    buckets: dict[str, TokenBucket] = request.app[LIMITS]
    now = asyncio.get_running_loop().time()
    bucket = buckets.get(seller.id)
    if bucket is None or bucket.rate_per_s != seller.rate_limit_per_s:  # new, or changed live
        burst = max(1.0, seller.rate_limit_per_s * 2)
        bucket = buckets[seller.id] = TokenBucket(seller.rate_limit_per_s, burst, burst, now)
    wait = bucket.take(now)
    if wait > 0:
        raise RateLimited(
            f"seller {seller.id} is over {seller.rate_limit_per_s:g} requests/s",
            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        )


def check_ready(ctx: ExchangeContext) -> None:
    if not ctx.health.ready:
        raise NotReady(
            "the ledger database is unavailable; retry shortly", headers={"Retry-After": "1"}
        )
    if ctx.writer.stalled:
        raise NotReady(
            "the ledger cannot be written at the moment; retry shortly",
            headers={"Retry-After": "1"},
        )


async def read_object(request: web.Request, ctx: ExchangeContext) -> dict[str, Any]:
    limit = ctx.loaded.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body over {limit} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"request body over {limit} bytes") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(body, dict):
        raise MalformedJson("body must be a JSON object")
    return body


def request_fields(body: dict[str, Any], allowed: frozenset[str]) -> list[FieldError]:
    """A problem for each key of ``body`` that is not ``allowed``."""
    if body.keys() <= allowed:
        return []
    return [
        {
            "loc": [key],
            "msg": f"is not a field of this request (allowed: {', '.join(sorted(allowed))})",
        }
        for key in body
        if key not in allowed
    ]
