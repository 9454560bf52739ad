"""The live settings API (SPEC section 11), for operators (admin tokens):

- ``GET /v1/buyers``, ``GET /v1/buyers/{id}``, ``PATCH /v1/buyers/{id}`` (a JSON merge
  patch of any buyer key), ``POST /v1/buyers`` (a new buyer), and the same for
  ``/v1/sellers``;
- ``GET /v1/settings``: every buyer and seller of one version at once (what
  ``lead-exchange admin export`` writes back to YAML);
- ``GET /v1/changes``: the history, newest first.

Entries are shown in the YAML's form with every secret masked; a change may carry its
reason in the ``X-Change-Reason`` header. Merging, validating and recording are
exchange/auction/live.py's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from exchange.api.common import CTX, authenticate_admin, json_response, read_object
from exchange.auction.live import LiveSettings
from exchange.core.errors import Invalid
from exchange.core.settings import (
    SECTIONS,
    Section,
    add_entry,
    find_entry,
    masked,
    update_entry,
)
from exchange.ledger.settings import SettingsChange

LIVE = web.AppKey("live_settings", LiveSettings)
REASON_HEADER = "X-Change-Reason"
MAX_REASON = 500
DEFAULT_CHANGES = 50
MAX_CHANGES = 500
MAX_VERSION = 2**63 - 1  # the column's bigint

Route = Callable[[web.Request], Awaitable[web.Response]]


def _operator(request: web.Request) -> tuple[LiveSettings, str]:
    name = authenticate_admin(request, request.app[CTX])
    return request.app[LIVE], name


def _reason(request: web.Request) -> str | None:
    reason = request.headers.get(REASON_HEADER, "").strip()
    if len(reason) > MAX_REASON:
        raise Invalid(
            "the change's reason is too long",
            [{"loc": ["header", REASON_HEADER], "msg": f"at most {MAX_REASON} characters"}],
        )
    return reason or None


def _list(section: Section) -> Route:
    async def handler(request: web.Request) -> web.Response:
        live, _ = _operator(request)
        document = live.document
        return json_response(
            {"version": live.version, section: [masked(section, e) for e in document[section]]}
        )

    return handler


def _show(section: Section) -> Route:
    async def handler(request: web.Request) -> web.Response:
        live, _ = _operator(request)
        entry = find_entry(live.document, section, request.match_info["id"])
        return json_response({"version": live.version, section[:-1]: masked(section, entry)})

    return handler


def _patch(section: Section) -> Route:
    async def handler(request: web.Request) -> web.Response:
        live, actor = _operator(request)
        patch = await read_object(request, request.app[CTX])
        entry_id = request.match_info["id"]
        version, change = await live.change(
            actor, lambda doc: update_entry(doc, section, entry_id, patch), _reason(request)
        )
        return json_response({"version": version, section[:-1]: change.after})

    return handler


def _create(section: Section) -> Route:
    async def handler(request: web.Request) -> web.Response:
        live, actor = _operator(request)
        entry = await read_object(request, request.app[CTX])
        version, change = await live.change(
            actor, lambda doc: add_entry(doc, section, entry), _reason(request)
        )
        return json_response({"version": version, section[:-1]: change.after}, status=201)

    return handler


async def settings(request: web.Request) -> web.Response:
    live, _ = _operator(request)
    document = live.document
    body: dict[str, Any] = {"version": live.version}
    for section in ("sellers", "buyers"):
        body[section] = [masked(section, e) for e in document[section]]
    return json_response(body)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def change_json(change: SettingsChange) -> dict[str, Any]:
    return {
        "version": change.version,
        "at": _iso(change.created_at),
        "by": change.actor,
        "action": change.action,
        "section": change.section,
        "id": change.target_id,
        "reason": change.reason,
        "before": change.before,
        "after": change.after,
    }


async def changes(request: web.Request) -> web.Response:
    live, _ = _operator(request)
    query = request.query
    problems = [
        {"loc": ["query", k], "msg": "is not a parameter of this request"}
        for k in query
        if k not in ("section", "id", "limit", "before")
    ]
    section = query.get("section")
    if section is not None and section not in SECTIONS:
        problems.append({"loc": ["query", "section"], "msg": "must be buyers or sellers"})
    limit = _whole(query.get("limit"), "limit", problems, DEFAULT_CHANGES, MAX_CHANGES)
    before = _whole(query.get("before"), "before", problems, None, MAX_VERSION)
    if problems:
        raise Invalid("bad changes query", problems)
    rows = await live.history(limit + 1, before, section, query.get("id"))
    page = rows[:limit]
    return json_response(
        {
            "changes": [change_json(c) for c in page],
            "next_before": page[-1].version if len(rows) > limit else None,
        }
    )


def _whole(
    raw: str | None, key: str, problems: list[Any], default: int | None, most: int | None
) -> Any:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or (most is not None and value > most):
        bound = f"1 to {most}" if most is not None else "a positive integer"
        problems.append({"loc": ["query", key], "msg": f"must be {bound}"})
    return value


def routes() -> list[web.RouteDef]:
    out = [web.get("/v1/settings", settings), web.get("/v1/changes", changes)]
    for section in SECTIONS:
        out += [
            web.get(f"/v1/{section}", _list(section)),
            web.post(f"/v1/{section}", _create(section)),
            web.get(f"/v1/{section}/{{id}}", _show(section)),
            web.patch(f"/v1/{section}/{{id}}", _patch(section)),
        ]
    return out
