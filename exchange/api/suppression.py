"""The suppression list API (SPEC section 10), for operators (admin tokens):

- ``POST /v1/suppression/{list}?mode=append|replace``: a JSON array of phones and emails
  added to the list (``append``, the default) or made the whole list (``replace``,
  atomic); the answer counts what was received, invalid (the first ones named by index
  and reason), added, already present, removed and the total now;
- ``GET /v1/suppression``: every list, loaded or named by a vertical, with its count;
- ``DELETE /v1/suppression/{list}``: a list and its entries gone.

Entries are normalised and hashed by exchange/core/suppression.py and kept by
exchange/ledger/suppression.py; no value leaves this handler but as its keyed hash.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import orjson
import structlog
from aiohttp import web

from exchange.api.common import CTX, authenticate_admin, check_ready, json_response
from exchange.auction.context import ExchangeContext
from exchange.auction.offers import withdraw_suppressed
from exchange.core.errors import Conflict, Invalid, MalformedJson, NotFound, TooLarge
from exchange.core.suppression import (
    MAX_ENTRIES,
    HashedEntries,
    LoadMode,
    key_id,
    load_counts,
    valid_list_name,
)
from exchange.ledger.suppression import SuppressionKeyChanged

log = structlog.get_logger("exchange.suppression")

# A load's body may be this big whatever exchange.max_body_bytes is: 100,000 entries of
# the longest emails fit.
MAX_BODY_BYTES = 32 * 1024 * 1024
# Invalid entries named in an answer (all are counted).
MAX_LISTED_INVALID = 1000
# Entries normalised and hashed between two turns of other requests: a phone takes 40 to
# 200 microseconds to parse, so a whole load at once would stall every auction for
# seconds, and 20 at a time keep each stall to a few milliseconds.
SLICE = 20
_QUERY_KEYS = frozenset({"mode"})


def _list_name(request: web.Request) -> str:
    name = request.match_info["list"]
    if not valid_list_name(name):
        raise Invalid(
            "not a suppression list name",
            [{"loc": ["path", "list"],
              "msg": "must be 1 to 63 characters of a-z, 0-9, '_', '.', '-', "
                     "starting with a letter or digit"}],
        )  # fmt: skip
    return name


def _mode(request: web.Request) -> LoadMode:
    problems = [
        {"loc": ["query", key], "msg": "is not a parameter of this request (allowed: mode)"}
        for key in request.query
        if key not in _QUERY_KEYS
    ]
    raw = request.query.get("mode", LoadMode.APPEND.value)
    try:
        mode = LoadMode(raw)
    except ValueError:
        problems.append({"loc": ["query", "mode"], "msg": "must be append or replace"})
        mode = LoadMode.APPEND
    if problems:
        raise Invalid("bad suppression load parameters", problems)
    return mode


def _hash_key(ctx: ExchangeContext) -> bytes:
    key = ctx.loaded.settings.suppression_hash_key
    if not key:
        raise Conflict("suppression lists need exchange.suppression_hash_key in the configuration")
    return key.encode()


async def _read_entries(request: web.Request) -> list[Any]:
    """The body as a JSON array, read up to MAX_BODY_BYTES (not exchange.max_body_bytes:
    a list is much bigger than a lead) and at most MAX_ENTRIES long."""
    too_large = f"a suppression load is at most {MAX_BODY_BYTES} bytes and {MAX_ENTRIES} entries"
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise TooLarge(too_large)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise TooLarge(too_large)
    try:
        entries = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(entries, list):
        raise MalformedJson("body must be a JSON array of phones and emails")
    if len(entries) > MAX_ENTRIES:
        raise TooLarge(
            f"{len(entries)} entries: a suppression load is at most {MAX_ENTRIES} entries;"
            " load a longer list in several appends"
        )
    return entries


async def _hashed(entries: list[Any], key: bytes) -> HashedEntries:
    hashed = HashedEntries(key)
    for start in range(0, len(entries), SLICE):
        hashed.add(entries[start : start + SLICE])
        await asyncio.sleep(0)  # other requests' turn
    return hashed


def _used_by(ctx: ExchangeContext, name: str) -> list[str]:
    """The verticals that suppress with list ``name``."""
    return [v for v, cfg in ctx.loaded.config.verticals.items() if name in cfg.suppress]


def _invalid_fields(hashed: HashedEntries) -> list[dict[str, Any]]:
    return [{"loc": ["body", e.index], "msg": e.msg} for e in hashed.invalid[:MAX_LISTED_INVALID]]


async def load(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    operator = authenticate_admin(request, ctx)
    name, mode = _list_name(request), _mode(request)
    key = _hash_key(ctx)
    check_ready(ctx)
    entries = await _read_entries(request)
    hashed = await _hashed(entries, key)
    if hashed.received and not hashed.valid:
        raise Invalid("no entry is a phone number or an email address", _invalid_fields(hashed))
    if mode is LoadMode.REPLACE and not hashed.valid:
        raise Invalid(
            "a replace needs at least one entry (DELETE /v1/suppression/{list} removes a list)",
            [{"loc": ["body"], "msg": "must not be empty for mode=replace"}],
        )
    try:
        change = await ctx.store.load_suppression(
            name, list(hashed.hashes), mode is LoadMode.REPLACE, key_id(key), ctx.clock.now()
        )
    except SuppressionKeyChanged as exc:
        raise Conflict(
            f"{exc}; its entries match nothing now: load it again with mode=replace"
        ) from None
    counts = load_counts(hashed, change.added, change.removed, change.total)
    # Pooled and held leads of the person wait with their PII sealed: out of the pool
    # now, and every hold of the list's verticals checked at the next delivery pass.
    used_by = _used_by(ctx, name)
    withdrawn = rechecked = 0
    if change.added and used_by:
        withdrawn = await withdraw_suppressed(ctx, name, used_by)
        rechecked = await ctx.store.recheck_holds(used_by, ctx.clock.now())
    log.info("suppression_loaded", list=name, mode=mode.value, operator=operator,
             received=counts.received, invalid=counts.invalid, added=counts.added,
             removed=counts.removed, total=counts.total, pool_offers_withdrawn=withdrawn,
             held_leads_rechecked=rechecked)  # fmt: skip
    return json_response(
        {
            "list": name,
            "mode": mode.value,
            "received": counts.received,
            "invalid": counts.invalid,
            "added": counts.added,
            "already_present": counts.already_present,
            "removed": counts.removed,
            "total": counts.total,
            "invalid_entries": [
                {"index": e.index, "msg": e.msg} for e in hashed.invalid[:MAX_LISTED_INVALID]
            ],
            "used_by": used_by,
            "pool_offers_withdrawn": withdrawn,
            "held_leads_rechecked": rechecked,
        }
    )


async def lists(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    authenticate_admin(request, ctx)
    key = ctx.loaded.settings.suppression_hash_key
    current = key_id(key.encode()) if key else None
    loaded = {summary.name: summary for summary in await ctx.store.suppression_lists()}
    named = {n for cfg in ctx.loaded.config.verticals.values() for n in cfg.suppress}
    out = []
    for name in sorted(set(loaded) | named):
        summary = loaded.get(name)
        out.append(
            {
                "name": name,
                "loaded": summary is not None,
                "entries": summary.entries if summary else 0,
                # False: hashed under another key than the configured one; matches nothing.
                "current_key": summary is None or summary.key_id == current,
                "created_at": _iso(summary.created_at) if summary else None,
                "updated_at": _iso(summary.updated_at) if summary else None,
                "used_by": _used_by(ctx, name),
            }
        )
    return json_response({"lists": out})


async def delete(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    operator = authenticate_admin(request, ctx)
    name = _list_name(request)
    removed = await ctx.store.delete_suppression_list(name)
    if removed is None:
        raise NotFound(f"no suppression list {name}")
    log.info("suppression_deleted", list=name, operator=operator, removed=removed)
    return json_response({"list": name, "removed": removed, "used_by": _used_by(ctx, name)})


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/suppression", lists),
        web.post("/v1/suppression/{list}", load),
        web.delete("/v1/suppression/{list}", delete),
    ]
