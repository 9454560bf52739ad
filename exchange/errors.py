"""Client-facing errors and the one middleware that turns them into SPEC section 4 JSON.

Every answer that is not a success is ``{"error": {"code", "message", "fields"?}}``.
Nothing a client sends may produce a 500: unexpected exceptions are logged (without
the request body) and answered 500 with a generic message, and a test fuzzes for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

log = structlog.get_logger("exchange.api")

FieldError = dict[str, Any]  # {"loc": [...], "msg": "..."}


class ClientError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        fields: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = list(fields) if fields else None
        self.headers = headers or {}


class MalformedJson(ClientError):
    status, code = 400, "malformed_json"


class Unauthorized(ClientError):
    status, code = 401, "unauthorized"


class Forbidden(ClientError):
    status, code = 403, "forbidden"


class NotFound(ClientError):
    status, code = 404, "not_found"


class Conflict(ClientError):
    status, code = 409, "conflict"


class Gone(ClientError):
    status, code = 410, "ping_expired"


class TooLarge(ClientError):
    status, code = 413, "body_too_large"


class Invalid(ClientError):
    status, code = 422, "invalid_request"


class RateLimited(ClientError):
    status, code = 429, "rate_limited"


class NotReady(ClientError):
    status, code = 503, "not_ready"


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

# What a database that is away (restarting, unreachable, refusing) raises.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    # Raised when a connection breaks mid-query (e.g. a fast shutdown of the server).
    asyncpg.InternalClientError,
    asyncpg.InvalidCatalogNameError,  # the database is not (yet) there
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
)

# What PostgreSQL (or asyncpg, encoding a parameter) raises for a row it will not take
# for its content (a data exception, a broken constraint, a value over a limit), as
# against a database that is away (exchange.errors.DATABASE_DOWN).
# asyncpg's own DataError (a parameter it cannot encode) subclasses InterfaceError, which
# otherwise means a broken connection: test for ROW_REFUSED first.
ROW_REFUSED: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.exceptions._base.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)


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
        # A value the edge checks (exchange.storable) should have stopped: answered as
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
