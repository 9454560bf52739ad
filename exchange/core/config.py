"""The configuration's models: exchange settings, verticals, sellers and buyers, as
validated pydantic models frozen after load, and what is derived from them once
(``LoadedConfig``). Every key's default lives here and nowhere else.

Pure: reading the file, expanding ``${VAR}`` and the checks that need the buyer adapters
are exchange/config.py's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from exchange.core.config_model import ConfigModel as _Model
from exchange.core.config_model import check_http_url
from exchange.core.fields import FieldSpec, LeadSchema
from exchange.core.http_templates import HttpTemplate, PingTemplate, PostTemplate
from exchange.core.money import MoneyError, parse_dollars
from exchange.core.sealing import decode_key
from exchange.core.subids import sub_id_problem
from exchange.core.suppression import LIST_NAME_PATTERN

TieBreaker = Literal["company_size", "priority", "latency", "round_robin", "weighted"]
# How a vertical's bids are ordered (docs/auction.md, "Rankings").
Ranking = Literal["price", "expected_value"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_ID = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
DEFAULT_MAX_BID_CENTS = 1_000_000  # 10,000.00 dollars
# The default overload threshold's floor: lateness below this is ordinary scheduling noise.
MIN_OVERLOAD_LAG_MS = 20


def _cents(value: object) -> int:
    try:
        return parse_dollars(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


Cents = Annotated[int, BeforeValidator(_cents)]


class AdminToken(_Model):
    """One named operator token: its name is who a live settings change was made by."""

    name: str = Field(pattern=_ID)
    token: str = Field(min_length=16, repr=False)


class AutoPause(_Model):
    """Pausing a buyer whose endpoint keeps failing (docs/operations.md, "Auto-pause"):
    past ``error_rate`` of errors and timeouts among at least ``min_requests`` pings in
    the last ``window_s``, it is paused; after ``cool_down_s`` a probe ping that gets an
    answer resumes it."""

    error_rate: float = Field(0.5, gt=0, le=1)
    min_requests: int = Field(20, ge=1)
    cool_down_s: int = Field(300, ge=1, le=86_400)
    window_s: int = Field(60, ge=5, le=3600)


# The name live settings changes made by the exchange itself (auto-pause) are recorded
# under; no operator token may take it.
SYSTEM_ACTOR = "system"
# The name exchange.admin_token is recorded under.
DEFAULT_ADMIN_NAME = "admin"


class ExchangeSettings(_Model):
    tmax_ms: int = Field(1000, ge=10, le=30_000)
    ping_ttl_s: int = Field(120, ge=1, le=86_400)
    admin_token: str | None = Field(None, repr=False)
    # Several operators' tokens, each with the name its changes are recorded under;
    # admin_token stays valid as the name "admin".
    admin_tokens: tuple[AdminToken, ...] = ()
    # None: no buyer is paused automatically.
    auto_pause: AutoPause | None = None
    tie_breakers: tuple[TieBreaker, ...] = ("company_size", "priority", "latency")
    # Not fixed by the spec; operator-tunable limits with production defaults.
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    post_deadline_ms: int = Field(15_000, ge=100, le=120_000)
    # The buyer transport: exchange/transport/h1.py, the only one.
    transport: Literal["h1"] = "h1"
    max_response_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Past this many auctions in flight in one process, new pings are refused at once
    # (503) rather than letting every auction's latency grow past tmax.
    max_inflight_auctions: int = Field(2000, ge=1)
    # While the process's event loop keeps running more than this late, new auctions are
    # refused (503): it has more work than CPU, and an auction started now would answer
    # past its tmax. Default: half of tmax_ms, at least 20 ms; 0 turns the check off.
    overload_lag_ms: int | None = Field(None, ge=0, le=60_000)
    # Key for the HMAC of phones and emails kept for duplicate checks (a plain hash of a
    # phone number is reversible by brute force). Required when any dedupe_days is set.
    dedupe_hash_key: str | None = Field(None, min_length=16, repr=False)
    # Key for the HMAC of the phones and emails on suppression lists (SPEC section 10,
    # exchange/core/suppression.py). Its own key: lists are kept for years and must be
    # reloaded whole when it changes. Required when any vertical has `suppress`.
    suppression_hash_key: str | None = Field(None, min_length=16, repr=False)
    # AES-256-GCM key (base64 of 32 bytes) sealing the PII of pooled and held leads;
    # retired keys still open what they sealed until `lead-exchange rotate-key` has run.
    pii_key: str | None = Field(None, repr=False)
    pii_keys_retired: tuple[str, ...] = Field((), repr=False)
    # When set, every buyer URL's host must be one of these (exact host names or IPs;
    # "*.example.com" allows subdomains), so a config typo cannot send leads elsewhere.
    allowed_buyer_hosts: tuple[str, ...] | None = None
    # Request-path ledger calls (claims, sales) give up after this long and answer 503;
    # default: tmax_ms.
    db_timeout_ms: int | None = Field(None, ge=50, le=60_000)
    # price: highest bid first; expected_value: highest bid x p(accept) first. A vertical
    # may override it.
    ranking: Ranking = "price"
    # Days of per-ping ledger rows kept (pings, bid outcomes, post attempts, post claims,
    # external ids), besides today; older day partitions are dropped by the exchange
    # itself (docs/scaling.md). Sales and the hourly rollups are kept. None: keep all.
    retention_days: int | None = Field(90, ge=1, le=36_500)
    # True: a day partition past retention_days is dropped only once `lead-exchange
    # archive` has written it to a file; until then it is kept (and logged).
    archive_before_drop: bool = False

    @field_validator("pii_key")
    @classmethod
    def _pii_key(cls, value: str | None) -> str | None:
        if value is not None:
            decode_key(value)
        return value

    @field_validator("pii_keys_retired")
    @classmethod
    def _retired_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, key in enumerate(value):
            try:
                decode_key(key)
            except ValueError as exc:
                raise ValueError(f"[{i}] {exc}") from None
        return value

    @field_validator("tie_breakers")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("tie-breakers must not repeat")
        return value

    @model_validator(mode="after")
    def _token_names(self) -> ExchangeSettings:
        names = [t.name for t in self.admin_tokens]
        if self.admin_token:
            names.append(DEFAULT_ADMIN_NAME)
        if SYSTEM_ACTOR in names:
            raise ValueError(f"admin_tokens: the name {SYSTEM_ACTOR!r} is the exchange's own")
        if len(set(names)) != len(names):
            raise ValueError("admin_tokens: names must be distinct (admin_token is 'admin')")
        return self

    def named_tokens(self) -> tuple[tuple[str, str], ...]:
        """Every operator token with its name: admin_token as "admin", then admin_tokens."""
        tokens = [(DEFAULT_ADMIN_NAME, self.admin_token)] if self.admin_token else []
        return (*tokens, *((t.name, t.token) for t in self.admin_tokens))

    @field_validator("transport", mode="before")
    @classmethod
    def _known_transport(cls, value: object) -> object:
        if value == "aiohttp":
            raise ValueError(
                "the aiohttp buyer transport was removed; use 'h1' (the default) or drop the key"
            )
        return value


class AcceptancePrior(_Model):
    """What a buyer with no posts in the window is taken to accept: ``accepts`` of
    ``posts`` (8 of 10: p(accept) 0.8), and how much weight that guess keeps against
    real posts (exchange/core/acceptance.py)."""

    accepts: int = Field(8, ge=0, le=1_000_000)
    posts: int = Field(10, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _a_share(self) -> AcceptancePrior:
        if self.accepts > self.posts:
            raise ValueError("accepts must not exceed posts")
        return self


class PoolSettings(_Model):
    """A vertical's lead pool (SPEC section 10, docs/distribution.md): unsold full leads
    offered to buyers who list and claim them, at a price falling from ``start_price`` by
    ``decay_per_hour`` to ``floor_price``, for ``max_age_hours``."""

    enabled: bool = True
    # cherry_pick: a listing shows the non-PII fields; blind: only the state.
    visibility: Literal["cherry_pick", "blind"] = "cherry_pick"
    start_price: Cents
    floor_price: Cents
    decay_per_hour: Cents = 0
    max_age_hours: int = Field(72, ge=1, le=24 * 90)

    @model_validator(mode="after")
    def _prices(self) -> PoolSettings:
        if self.floor_price <= 0:
            raise ValueError("floor_price must be above zero")
        if self.floor_price > self.start_price:
            raise ValueError("floor_price must not exceed start_price")
        return self


class VerticalConfig(_Model):
    fields: dict[str, FieldSpec]
    floor: Cents = 0
    # A sanity ceiling: a real-time bid above it is that buyer's error ("bid above
    # max_bid"), never a price quoted to a seller. No lead is worth more.
    max_bid: Cents = DEFAULT_MAX_BID_CENTS
    max_sales: int = Field(1, ge=1, le=10)  # 1: exclusive; more: shared
    dedupe_days: int = Field(0, ge=0, le=365)  # 0: no exchange-wide duplicate check
    tiers: dict[int, TierConfig] = Field(default_factory=dict)
    ranking: Ranking | None = None  # None: exchange.ranking
    acceptance_prior: AcceptancePrior = AcceptancePrior()
    acceptance_window_days: int = Field(14, ge=1, le=365)
    # sealed: wait for every bid until tmax; first_bid: the first bid at or above the
    # floor wins and the others are cancelled (speed to lead over price).
    auction: Literal["sealed", "first_bid"] = "sealed"
    # sequential: a shared lead is posted to its winners in turn; shotgun: to all of them
    # at once (a reject refills its slot from further down the tree).
    delivery: Literal["sequential", "shotgun"] = "sequential"
    # Binding bids: a post rejected with a reason not listed (or with none) is a breach.
    # None: bids are not binding, no reject is a breach. Matched trimmed, in lower case.
    reject_reasons_allowed: tuple[str, ...] | None = None
    # The lead pool: unsold full leads of sellers with ``pool: true`` are offered here.
    pool: PoolSettings | None = None
    # Suppression lists checked at post and direct post (SPEC section 10): a lead whose
    # phone or email is on one ends unsold, reason suppressed, before any buyer sees it.
    suppress: tuple[Annotated[str, Field(pattern=LIST_NAME_PATTERN)], ...] = ()
    # The lead score (SPEC section 10, exchange/core/scoring.py): rules summed per ping,
    # clamped to 0-100; none: the vertical's leads are not scored.
    score: tuple[ScoreRule, ...] = ()
    # Floors by score, highest threshold first; the first step the score reaches applies,
    # above the seller's and the vertical's floor when higher.
    floor_by_score: tuple[ScoreFloor, ...] = ()

    @field_validator("reject_reasons_allowed")
    @classmethod
    def _reason_words(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        words = tuple(w.strip().lower() for w in value)
        if any(not w for w in words):
            raise ValueError("a reject reason must not be empty")
        return words

    @field_validator("suppress")
    @classmethod
    def _distinct_lists(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a suppression list is named twice")
        return value

    @field_validator("fields")
    @classmethod
    def _not_empty(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        if not value:
            raise ValueError("a vertical needs at least one field")
        return value


class SellerConfig(_Model):
    id: str = Field(pattern=_ID)
    api_key: str | None = Field(None, min_length=16, repr=False)
    api_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    payout_share: Decimal = Field(gt=0, le=1, decimal_places=4)
    floor: Cents = 0
    verticals: tuple[str, ...] | None = None  # None: every vertical
    vertical_floors: dict[str, Cents] = Field(default_factory=dict)
    max_sales: int | None = Field(None, ge=1, le=10)  # overrides the vertical's
    rate_limit_per_s: float | None = Field(None, gt=0)
    # Unsold full leads of this seller may go to their vertical's pool (SPEC section 10).
    pool: bool = False
    # False: the seller is paused, every ping, post and direct post refused (403).
    enabled: bool = True

    @field_validator("payout_share", mode="before")
    @classmethod
    def _exact_share(cls, value: object) -> object:
        return repr(value) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _one_key(self) -> SellerConfig:
        if (self.api_key is None) == (self.api_key_sha256 is None):
            raise ValueError("give exactly one of api_key or api_key_sha256")
        return self

    @property
    def key_hash(self) -> str:
        if self.api_key_sha256 is not None:
            return self.api_key_sha256
        assert self.api_key is not None
        return hash_key(self.api_key)


class FieldFilter(_Model):
    in_: tuple[str | int, ...] | None = Field(None, alias="in")
    not_in: tuple[str | int, ...] | None = None
    gte: Decimal | None = None
    lte: Decimal | None = None
    prefix: tuple[str, ...] | None = None
    exists: bool | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _some_rule(self) -> FieldFilter:
        if not self.model_fields_set:
            raise ValueError(
                "a filter needs at least one rule (in, not_in, gte, lte, prefix, exists)"
            )
        return self


# The lead score's bounds (SPEC section 10): a ping's score is its rules' points summed
# and clamped to these (exchange/core/scoring.py).
SCORE_MIN = 0
SCORE_MAX = 100


class ScoreRule(FieldFilter):
    """One rule of a vertical's lead score: when ``field`` passes the rule's operators
    (those of a buyer filter, all of them), the lead earns ``points``; negative points
    are a penalty. Checked against the vertical's fields by exchange/core/scoring.py."""

    field: str
    points: int = Field(ge=-SCORE_MAX, le=SCORE_MAX)

    @model_validator(mode="after")
    def _some_rule(self) -> ScoreRule:
        if not self.model_fields_set - {"field", "points"}:
            raise ValueError(
                "a score rule needs at least one operator (in, not_in, gte, lte, prefix, exists)"
            )
        return self


class ScoreFloor(_Model):
    """One step of a vertical's ``floor_by_score``: a lead scoring at least ``gte`` is
    not sold under ``floor``."""

    gte: int = Field(ge=SCORE_MIN, le=SCORE_MAX)
    floor: Cents


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


TimeZone = Annotated[str, AfterValidator(_zone)]


class Caps(_Model):
    """Limits on accepted sales, per period in the buyer's time zone."""

    hourly: int | None = Field(None, ge=0)
    daily: int | None = Field(None, ge=0)
    weekly: int | None = Field(None, ge=0)
    monthly: int | None = Field(None, ge=0)
    daily_budget: Cents | None = None
    monthly_budget: Cents | None = None


class Schedule(_Model):
    """When a buyer takes leads. ``end`` before ``start`` is an overnight window (the
    part after midnight belongs to the day it started on)."""

    timezone: TimeZone | None = None  # default: the buyer's timezone
    days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    start: str = Field("00:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field("24:00", pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")
    holidays: tuple[date, ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> Schedule:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window is empty")
        return self


class Delayed(_Model):
    """Delayed delivery (SPEC section 10, docs/distribution.md): the buyer may receive a
    lead held while it was off schedule, when it opens, within ``hold_hours`` of the
    lead's arrival."""

    hold_hours: int = Field(ge=1, le=24 * 14)


class TierConfig(_Model):
    """How leads are shared out among the fixed-price buyers of one tier."""

    distribution: Literal["priority", "round_robin", "weighted"] = "priority"


class BuyerConfig(_Model):
    id: str = Field(pattern=_ID)
    company_size: int = Field(0, ge=0)
    priority: int = 0
    verticals: tuple[str, ...] = Field(min_length=1)
    ping_url: str | None = None
    post_url: str | None = None
    price: Cents | None = None
    secret: str = Field("", repr=False)
    adapter: str = "json"
    adapter_options: dict[str, Any] = Field(default_factory=dict)
    ping: PingTemplate | None = None  # adapter http only
    post: PostTemplate | None = None  # adapter http only
    timeout_ms: int | None = Field(None, ge=1)
    post_timeout_ms: int = Field(5000, ge=1, le=120_000)
    filters: dict[str, FieldFilter] = Field(default_factory=dict)
    vertical_filters: dict[str, dict[str, FieldFilter]] = Field(default_factory=dict)
    timezone: TimeZone = "UTC"
    caps: Caps = Caps()
    schedule: Schedule | None = None
    # Leads held while it was off schedule are posted to it when it opens (needs a schedule
    # and exchange.pii_key: exchange/config.py).
    delayed: Delayed | None = None
    tier: int | None = Field(None, ge=1)  # fixed-price buyers only
    # For weighted tiers, and for real-time bids under the tie-breaker `weighted`.
    weight: int = Field(1, ge=1, le=1_000_000)
    dedupe_days: int = Field(0, ge=0, le=365)
    # The buyer's own key: its report, returns and (SPEC §10) the lead pool.
    api_key: str | None = Field(None, min_length=16, repr=False)
    api_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    return_api_key: str | None = Field(None, min_length=16, repr=False)
    return_api_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    return_window_days: int = Field(0, ge=0, le=365)
    sellers_allow: tuple[str, ...] | None = None
    sellers_deny: tuple[str, ...] = ()
    # The seller's traffic sources (a ping's sub_id) this buyer refuses: seller_blocked.
    sub_ids_deny: tuple[str, ...] = ()
    enabled: bool = True

    @field_validator("ping_url", "post_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("sub_ids_deny")
    @classmethod
    def _sub_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, sub_id in enumerate(value):
            problem = sub_id_problem(sub_id)
            if problem is not None:
                raise ValueError(f"[{i}] {problem}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _urls_from_templates(cls, data: object) -> object:
        """An ``http`` buyer's URLs are its templates' ``url``s."""
        if not isinstance(data, Mapping):
            return data
        is_http = data.get("adapter") == "http"
        data = dict(data)
        for role in ("ping", "post"):
            template = data.get(role)
            if template is None:
                continue
            if not is_http:
                raise ValueError(f"{role} templates are for adapter: http")
            if data.get(f"{role}_url") is not None:
                raise ValueError(f"give {role}.url, not {role}_url, for adapter: http")
            if isinstance(template, Mapping):
                data[f"{role}_url"] = template.get("url")
            elif isinstance(template, HttpTemplate):
                data[f"{role}_url"] = template.url
        if is_http and data.get("post") is None:
            raise ValueError("adapter http needs a post template (post: url, accepted, ...)")
        if is_http and data.get("ping_url") is not None and data.get("ping") is None:
            raise ValueError("adapter http pings by a ping template (ping: url, bid, ...)")
        return data

    @model_validator(mode="after")
    def _bids_somehow(self) -> BuyerConfig:
        if self.ping_url is None and self.price is None:
            raise ValueError("a buyer needs ping_url (real-time bids) or price (fixed price)")
        if self.ping_url is not None and self.price is not None:
            raise ValueError("give ping_url or price, not both")
        if self.post_url is None:
            raise ValueError("post_url is required: every buyer receives posted leads")
        if self.price == 0:
            raise ValueError("price must be above zero")
        if self.tier is not None and self.price is None:
            raise ValueError("tier is for fixed-price buyers (with price)")
        if self.return_api_key is not None and self.return_api_key_sha256 is not None:
            raise ValueError("give return_api_key or return_api_key_sha256, not both")
        if self.api_key is not None and self.api_key_sha256 is not None:
            raise ValueError("give api_key or api_key_sha256, not both")
        return self

    @property
    def key_hash(self) -> str | None:
        """The SHA-256 of the buyer's own ``api_key``, if it has one."""
        if self.api_key_sha256 is not None:
            return self.api_key_sha256
        return hash_key(self.api_key) if self.api_key is not None else None

    @property
    def return_key_hash(self) -> str | None:
        if self.return_api_key_sha256 is not None:
            return self.return_api_key_sha256
        return hash_key(self.return_api_key) if self.return_api_key is not None else None

    @property
    def zone(self) -> str:
        """The buyer's time zone for caps and (by default) its schedule."""
        if self.schedule is not None and self.schedule.timezone is not None:
            return self.schedule.timezone
        return self.timezone

    @property
    def fixed_price(self) -> bool:
        return self.ping_url is None


class Config(_Model):
    exchange: ExchangeSettings = ExchangeSettings()
    verticals: dict[str, VerticalConfig] = Field(min_length=1)
    sellers: tuple[SellerConfig, ...] = Field(min_length=1)
    buyers: tuple[BuyerConfig, ...] = ()


class LeadScorer(Protocol):
    """A vertical's compiled score rules (exchange.core.scoring.Scorer)."""

    def score(self, lead: Mapping[str, Any]) -> int: ...

    def floor_cents(self, score: int | None) -> int: ...


@dataclass(frozen=True)
class LoadedConfig:
    """The validated configuration plus what is derived from it once."""

    source: str
    config: Config
    schemas: Mapping[str, LeadSchema]
    sellers_by_key_hash: Mapping[str, SellerConfig]
    buyers_by_return_key_hash: Mapping[str, BuyerConfig]
    # Buyers by the hash of their own api_key (SPEC §10, §11).
    buyers_by_key_hash: Mapping[str, BuyerConfig] = field(default_factory=dict)
    # Each scoring vertical's compiled score rules (exchange/core/scoring.py).
    scorers: Mapping[str, LeadScorer] = field(default_factory=dict)
    # The document the config was validated from (``${VAR}`` expanded): what live
    # settings changes (exchange/auction/live.py) are merged into.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def settings(self) -> ExchangeSettings:
        return self.config.exchange

    @property
    def overload_lag_s(self) -> float:
        """exchange.overload_lag_ms in seconds, its default filled in; 0 is off."""
        settings = self.config.exchange
        if settings.overload_lag_ms is not None:
            return settings.overload_lag_ms / 1000
        return max(MIN_OVERLOAD_LAG_MS, settings.tmax_ms // 2) / 1000


def hash_key(key: str) -> str:
    """How API keys are kept: SHA-256 hex of the key (keys are long random strings)."""
    return hashlib.sha256(key.encode()).hexdigest()
