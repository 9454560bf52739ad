"""Loading the exchange's configuration: one YAML file, validated whole at start-up,
frozen after (the models are exchange/core/config.py's).

``${VAR}`` (or ``${VAR:-default}``) expands anywhere in the file's strings. Every
problem found is collected and reported together, each naming the file, the key path
and what is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from buyers.registry import ADAPTERS, adapter_for
from buyers.templates import TemplateError
from exchange.core.config import (
    BuyerConfig,
    Config,
    LoadedConfig,
    VerticalConfig,
)
from exchange.core.fields import LeadSchema
from exchange.core.money import dollars_text
from exchange.core.scoring import (
    SCORE_FIELD,
    compile_scorer,
    score_filter_problems,
    vertical_score_problems,
)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration is not usable; ``problems`` lists every reason."""

    def __init__(self, problems: list[str], found: list[str] | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        # The same problems without the source's name: "key.path: what is wrong".
        self.found = found if found is not None else problems


def _expand(node: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(node, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path or '<root>'}: environment variable {name} is not set")
            return ""

        return _ENV.sub(sub, node)
    if isinstance(node, dict):
        return {k: _expand(v, _join(path, k), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", env, problems) for i, v in enumerate(node)]
    return node


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "<root>"


def _cross_checks(config: Config) -> list[str]:
    """What no single key can check: references between sections, and what the buyer
    adapters say of their options. In file order: sellers, verticals, buyers."""
    problems = _seller_problems(config) + _vertical_problems(config)
    hashes = [s.key_hash for s in config.sellers]
    if len(set(hashes)) != len(hashes):
        problems.append("sellers: two sellers share one api key")
    buyer_hashes = [b.key_hash for b in config.buyers if b.key_hash is not None]
    if len(set(buyer_hashes)) != len(buyer_hashes):
        problems.append("buyers: two buyers share one api_key")
    if set(buyer_hashes) & set(hashes):
        problems.append("buyers: a buyer's api_key is also a seller's api key")
    seen: set[str] = set()
    for i, buyer in enumerate(config.buyers):
        if buyer.id in seen:
            problems.append(f"buyers[{i}].id: duplicate buyer id {buyer.id!r}")
        seen.add(buyer.id)
        problems.extend(_buyer_problems(config, buyer, f"buyers[{i}]"))
    return problems


def _seller_problems(config: Config) -> list[str]:
    problems: list[str] = []
    verticals = config.verticals
    seen: set[str] = set()
    for i, seller in enumerate(config.sellers):
        if seller.id in seen:
            problems.append(f"sellers[{i}].id: duplicate seller id {seller.id!r}")
        seen.add(seller.id)
        for v in seller.verticals or ():
            if v not in verticals:
                problems.append(f"sellers[{i}].verticals: unknown vertical {v!r}")
    for i, seller in enumerate(config.sellers):
        for v in seller.vertical_floors:
            if v not in verticals:
                problems.append(f"sellers[{i}].vertical_floors: unknown vertical {v!r}")
    return problems


def _vertical_problems(config: Config) -> list[str]:
    problems: list[str] = []
    verticals = config.verticals
    dedupe = any(v.dedupe_days for v in verticals.values()) or any(
        b.dedupe_days for b in config.buyers
    )
    if dedupe and not config.exchange.dedupe_hash_key:
        problems.append("exchange.dedupe_hash_key: required when any dedupe_days is set")
    if any(v.suppress for v in verticals.values()) and not config.exchange.suppression_hash_key:
        problems.append(
            "exchange.suppression_hash_key: required when any vertical has suppress lists"
        )
    for name, vertical in verticals.items():
        if vertical.max_bid <= 0:
            problems.append(f"verticals.{name}.max_bid: must be above zero")
        if vertical.floor > vertical.max_bid:
            problems.append(f"verticals.{name}.floor: above the vertical's max_bid")
        if vertical.dedupe_days and not _has_contact_fields(vertical):
            problems.append(
                f"verticals.{name}.dedupe_days: the vertical has no phone or email field"
            )
        if vertical.suppress and not _has_contact_fields(vertical):
            problems.append(f"verticals.{name}.suppress: the vertical has no phone or email field")
        problems.extend(vertical_score_problems(name, vertical))
        pool = vertical.pool
        if pool is not None and pool.enabled and config.exchange.pii_key is None:
            problems.append(
                f"verticals.{name}.pool: needs exchange.pii_key (pooled leads keep PII sealed)"
            )
    return problems


def _buyer_problems(config: Config, buyer: BuyerConfig, where: str) -> list[str]:
    problems: list[str] = []
    verticals = config.verticals
    for v in buyer.verticals:
        if v not in verticals:
            problems.append(f"{where}.verticals: unknown vertical {v!r}")
    if buyer.timeout_ms is not None and buyer.timeout_ms > config.exchange.tmax_ms:
        problems.append(
            f"{where}.timeout_ms: {buyer.timeout_ms} is beyond exchange.tmax_ms "
            f"({config.exchange.tmax_ms})"
        )
    problems.extend(_vertical_filter_problems(config, buyer, where))
    allowed = config.exchange.allowed_buyer_hosts
    if allowed is not None:
        for key in ("ping_url", "post_url"):
            url = getattr(buyer, key)
            host = (urlsplit(url).hostname or "") if url else None
            if host is not None and not _host_allowed(host, allowed):
                problems.append(
                    f"{where}.{key}: host {host!r} is not in exchange.allowed_buyer_hosts"
                )
    for v in buyer.verticals:
        if v not in verticals:
            continue
        if buyer.price is not None and buyer.price > verticals[v].max_bid:
            problems.append(
                f"{where}.price: above verticals.{v}.max_bid ({dollars_text(verticals[v].max_bid)})"
            )
    if buyer.weight != 1 and buyer.tier is None and "weighted" not in config.exchange.tie_breakers:
        # Else the weight would be silently ignored: it orders tiers and, with the
        # tie-breaker, equal bids.
        problems.append(
            f"{where}.weight: only weighs in a fixed-price tier or with the tie-breaker "
            "weighted in exchange.tie_breakers"
        )
    if buyer.tier is not None:
        for v in buyer.verticals:
            if v in verticals and buyer.tier not in verticals[v].tiers:
                problems.append(
                    f"{where}.tier: tier {buyer.tier} is not defined in verticals.{v}.tiers"
                )
    problems.extend(_filter_problems(config, buyer, where))
    if buyer.delayed is not None and buyer.schedule is None:
        problems.append(f"{where}.delayed: needs a schedule (leads are held while it is off)")
    if buyer.delayed is not None and config.exchange.pii_key is None:
        problems.append(f"{where}.delayed: needs exchange.pii_key (held leads keep PII sealed)")
    sellers = {seller.id for seller in config.sellers}
    for s in (*(buyer.sellers_allow or ()), *buyer.sellers_deny):
        if s not in sellers:
            problems.append(f"{where}: unknown seller {s!r} in sellers_allow/sellers_deny")
    if buyer.adapter not in ADAPTERS:
        problems.append(
            f"{where}.adapter: unknown adapter {buyer.adapter!r} "
            f"(known: {', '.join(sorted(ADAPTERS))})"
        )
    else:
        problems.extend(_adapter_problems(buyer, config.verticals, where))
    return problems


def _vertical_filter_problems(config: Config, buyer: BuyerConfig, where: str) -> list[str]:
    problems: list[str] = []
    verticals = config.verticals
    for v in buyer.vertical_filters:
        if v not in buyer.verticals:
            problems.append(f"{where}.vertical_filters.{v}: not one of the buyer's verticals")
        elif v in verticals:
            for name in buyer.vertical_filters[v]:
                spec = verticals[v].fields.get(name)
                if name == SCORE_FIELD:
                    rule = buyer.vertical_filters[v][name]
                    at = f"{where}.vertical_filters.{v}.{name}"
                    problems.extend(score_filter_problems(at, rule, verticals, (v,)))
                elif spec is None:
                    problems.append(f"{where}.vertical_filters.{v}.{name}: no such field")
                elif spec.pii:
                    problems.append(
                        f"{where}.vertical_filters.{v}.{name}: PII fields cannot be filtered on"
                    )
    return problems


def _filter_problems(config: Config, buyer: BuyerConfig, where: str) -> list[str]:
    problems: list[str] = []
    verticals = config.verticals
    known_fields = {f for v in buyer.verticals if v in verticals for f in verticals[v].fields}
    for name in buyer.filters:
        if name == SCORE_FIELD:
            problems.extend(
                score_filter_problems(
                    f"{where}.filters.{name}", buyer.filters[name], verticals, buyer.verticals
                )
            )
        elif name not in known_fields:
            problems.append(f"{where}.filters.{name}: no such field in the buyer's verticals")
        elif any(
            verticals[v].fields[name].pii for v in buyer.verticals if name in verticals[v].fields
        ):
            problems.append(
                f"{where}.filters.{name}: PII fields are not in pings and cannot be filtered on"
            )
    return problems


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower()
    for entry in allowed:
        entry = entry.lower()
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def _adapter_problems(
    buyer: BuyerConfig, verticals: Mapping[str, VerticalConfig], where: str
) -> list[str]:
    """Build the buyer's adapter once now, so bad adapter_options fail the load, not the
    first auction."""
    try:
        adapter_for(buyer, verticals)
    except TemplateError as exc:
        return [f"{where}.{exc.path}: {exc.message}"]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return [f"{where}.adapter_options: {exc}"]
    return []


def _has_contact_fields(vertical: VerticalConfig) -> bool:
    return any(f.type in ("phone", "email") for f in vertical.fields.values())


def parse_config(text: str, source: str, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Validate a YAML document; raises ConfigError listing every problem."""
    env = os.environ if env is None else env
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping"])
    problems: list[str] = []
    raw = _expand(raw, "", env, problems)
    return validate_config(raw, source, problems)


def validate_config(
    raw: dict[str, Any], source: str, problems: list[str] | None = None
) -> LoadedConfig:
    """Validate an expanded document: the models, then the cross checks. The one way a
    config is checked, whether it comes from the YAML file or from a live settings change
    (exchange/auction/live.py); raises ConfigError listing every problem."""
    problems = list(problems or ())
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(f"{_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError([f"{source}: {p}" for p in problems], problems) from None
    problems.extend(_cross_checks(config))
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems], problems)
    schemas = {name: LeadSchema(name, v.fields) for name, v in config.verticals.items()}
    return LoadedConfig(
        source=source,
        config=config,
        schemas=schemas,
        sellers_by_key_hash={s.key_hash: s for s in config.sellers},
        buyers_by_return_key_hash={
            b.return_key_hash: b for b in config.buyers if b.return_key_hash is not None
        },
        buyers_by_key_hash={b.key_hash: b for b in config.buyers if b.key_hash is not None},
        scorers={
            name: scorer
            for name, vertical in config.verticals.items()
            if (scorer := compile_scorer(vertical)) is not None
        },
        raw=raw,
    )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_config(text, str(path), env)
