"""How an ``adapter: http`` buyer is spoken to (SPEC section 8), as configured: its ping
and post request templates, where its answers are read, and its credentials. Validated
here key by key; compiled against the buyer's verticals by buyers/http_adapter.py."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator, model_validator

from exchange.core.config_model import ConfigModel as _Model
from exchange.core.config_model import HttpUrl

TemplateValue = str | int | bool | Decimal
AuthType = Literal["hmac", "header", "basic", "bearer", "query", "none"]
_AUTH_KEYS: Mapping[str, tuple[str, ...]] = {
    "hmac": (),
    "none": (),
    "header": ("name", "value"),
    "query": ("name", "value"),
    "basic": ("username", "password"),
    "bearer": ("token",),
}


class HttpAuth(_Model):
    """How an ``http`` buyer's requests prove who sends them (SPEC section 8). ``hmac``
    signs the body with the buyer's ``secret`` as the ``json`` adapter does."""

    type: AuthType = "none"
    name: str | None = None  # header and query: the header or parameter name
    value: str | None = Field(None, repr=False)  # header and query: the credential
    username: str | None = None  # basic
    password: str | None = Field(None, repr=False)  # basic
    token: str | None = Field(None, repr=False)  # bearer

    @model_validator(mode="after")
    def _keys_for_type(self) -> HttpAuth:
        needed = _AUTH_KEYS[self.type]
        given = {k for k in ("name", "value", "username", "password", "token") if getattr(self, k)}
        missing = [k for k in needed if k not in given]
        if missing:
            raise ValueError(f"auth type {self.type} needs {', '.join(missing)}")
        extra = sorted(given - set(needed))
        if extra:
            raise ValueError(f"auth type {self.type} takes no {', '.join(extra)}")
        return self


class HttpTemplate(_Model):
    """One request an ``http`` buyer takes and how its answer is read (SPEC section 8).

    Compiled by buyers/http_adapter.py at load; field names, paths and transforms are
    checked there, against the buyer's verticals."""

    url: HttpUrl
    method: Literal["POST", "GET"] = "POST"
    format: Literal["json", "form", "xml"] = "json"
    root: str | None = None  # xml only: the root element (default Lead)
    fields: dict[str, str] = Field(default_factory=dict)  # their name: our field
    constants: dict[str, TemplateValue] = Field(default_factory=dict)
    values: dict[str, dict[str, TemplateValue]] = Field(default_factory=dict)
    transforms: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    auth: HttpAuth = HttpAuth()
    namespaces: dict[str, str] = Field(default_factory=dict)  # XPath prefixes of answers
    reason: str | None = None

    @field_validator("values", mode="before")
    @classmethod
    def _text_keys(cls, value: object) -> object:
        # YAML reads `true:` and `1:` as non-text keys; a value map matches a lead value by
        # its text, so keys become text here (true -> "true").
        if not isinstance(value, Mapping):
            return value
        return {
            name: (
                {_key_text(k): v for k, v in mapping.items()}
                if isinstance(mapping, Mapping)
                else mapping
            )
            for name, mapping in value.items()
        }

    @model_validator(mode="after")
    def _root_for_xml(self) -> HttpTemplate:
        if self.root is not None and self.format != "xml":
            raise ValueError("root is for format: xml only")
        if self.method == "GET" and self.format == "xml":
            raise ValueError("a GET request sends its fields in the query string, not as xml")
        return self


def _key_text(key: object) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


class PingTemplate(HttpTemplate):
    bid: str  # where the bid is in the answer
    bid_id: str | None = None


class PostTemplate(HttpTemplate):
    accepted: str  # where the verdict is in the answer
    accepted_values: tuple[str, ...] = Field(min_length=1)
    buyer_lead_id: str | None = None
    redirect_url: str | None = None

    @field_validator("accepted_values", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(_key_text(v) for v in value)
        return value
