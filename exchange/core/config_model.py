"""The base of every configuration model (frozen once validated, unknown keys refused)
and the value types models of several rooms share."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict


class ConfigModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials (use secret and signing)")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    return value


HttpUrl = Annotated[str, AfterValidator(check_http_url)]
