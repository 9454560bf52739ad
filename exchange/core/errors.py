"""Client-facing errors: one exception per answer SPEC section 4 names, each with its
status and code. Raised anywhere a request is refused; the API's one middleware
(exchange/api/errors.py) turns them into ``{"error": {"code", "message", "fields"?}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
