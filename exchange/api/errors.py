"""The one middleware that turns errors into SPEC section 4 JSON (the errors themselves are
exchange/core/errors.py's).

Every answer that is not a success is ``{"error": {"code", "message", "fields"?}}``.
Nothing a client sends may produce a 500: unexpected exceptions are logged (without
the request body) and answered 500 with a generic message, and a test fuzzes for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import structlog
from aiohttp import web

from exchange.core.errors import ClientError, FieldError
from exchange.ledger.faults import DATABASE_DOWN, ROW_REFUSED

log = structlog.get_logger("exchange.api")


def error_response(
    status: int,
    code: str,
    message: str,
    fields: Sequence[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = list(fields)
    return web.Response(
        status=status,
        body=orjson.dumps({"error": error}),
        content_type="application/json",
        headers=headers,
    )


_HTTP_CODES = {
    404: ("not_found", "no such endpoint"),
    405: ("method_not_allowed", "method not allowed on this endpoint"),
    413: ("body_too_large", "request body too large"),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClientError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        return error_response(exc.status, code, message)
    except ROW_REFUSED as exc:
        # A value the edge checks (exchange.core.storable) should have stopped: answered as
        # the client's, and logged as the exchange's own defect.
        log.error("ledger_refused_value", error=type(exc).__name__, path=request.path,
                  sqlstate=getattr(exc, "sqlstate", None))  # fmt: skip
        return error_response(
            422, "invalid_request", "a value in this request cannot be stored by the ledger"
        )
    except DATABASE_DOWN as exc:
        log.warning("database_unavailable", error=type(exc).__name__, path=request.path)
        return error_response(
            503, "not_ready", "the ledger database is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )  # fmt: skip
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        return error_response(500, "internal_error", "internal error")
