"""Properties of configuration loading and lead validation, by Hypothesis.

Config: any random damage to a valid config file either still loads, or raises
ConfigError whose every line names the file and a key path and says what is wrong -
never another exception (which would crash `lead-exchange serve` with a traceback
instead of a message an operator can act on).

Leads: for random verticals (random field types, bounds, enums, PII flags) and random
leads, validation raises nothing but LeadInvalid naming lead fields only, never echoes a
value, keeps only declared fields, and a ping never carries a PII field.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exchange.auction.context import BuyerRuntime
from exchange.config import ConfigError, parse_config
from exchange.core.fields import FieldSpec, LeadInvalid, LeadSchema

SOURCE = "fuzz.yaml"
# Set True to keep at least one bound on number fields in the random tests (fields with
# neither min nor max once crashed LeadSchema; test_unbounded_number_fields_load pins it).
UNBOUNDED_NUMBERS_CRASH = False
SELLER_KEY = "seller-key-0123456789abcdef"

BASE: dict[str, Any] = {
    "exchange": {
        "tmax_ms": 800,
        "ping_ttl_s": 120,
        "admin_token": "admin-token-0123456789",
        "tie_breakers": ["company_size", "priority", "latency"],
        "max_body_bytes": 65536,
        "post_deadline_ms": 15000,
        "transport": "h1",
        "max_response_bytes": 65536,
        "max_inflight_auctions": 100,
        "dedupe_hash_key": "dedupe-key-0123456789abcdef",
    },
    "verticals": {
        "auto_insurance": {
            "fields": {
                "first_name": {"type": "string", "pii": True, "required": True},
                "email": {"type": "email", "pii": True, "required": True},
                "phone": {"type": "phone", "pii": True, "required": True},
                "zip": {"type": "zip", "required": True},
                "state": {"type": "state", "required": True},
                "age": {"type": "integer", "min": 16, "max": 120},
                "vehicle_value": {"type": "number", "min": 0, "max": 1000000},
                "homeowner": {"type": "boolean"},
                "credit_rating": {"type": "enum", "values": ["excellent", "good", "fair"]},
                "policy_start": {"type": "date"},
            },
            "floor": 1.5,
            "max_sales": 1,
            "dedupe_days": 30,
            "tiers": {1: {"distribution": "round_robin"}},
        },
    },
    "sellers": [
        {"id": "acme-media", "api_key": SELLER_KEY, "payout_share": 0.85, "floor": 2.0,
         "rate_limit_per_s": 50, "vertical_floors": {"auto_insurance": 3.0}},
        {"id": "hashed", "api_key_sha256": "a" * 64, "payout_share": 0.8,
         "verticals": ["auto_insurance"]},
    ],
    "buyers": [
        {"id": "big-insurer", "company_size": 5000, "priority": 10,
         "verticals": ["auto_insurance"], "ping_url": "http://127.0.0.1:9001/ping",
         "post_url": "http://127.0.0.1:9001/post", "secret": "buyer-secret-0123456789",
         "timeout_ms": 200, "post_timeout_ms": 5000,
         "filters": {"state": {"in": ["CA", "TX"]}, "age": {"gte": 25}, "zip": {"prefix": ["9"]}},
         "caps": {"hourly": 50, "daily": 500, "daily_budget": 5000.0},
         "schedule": {"timezone": "America/New_York", "days": ["mon", "tue"],
                      "start": "08:00", "end": "20:00"},
         "sellers_deny": ["hashed"], "dedupe_days": 7,
         "return_api_key": "return-key-0123456789", "return_window_days": 5,
         "adapter": "json", "adapter_options": {"headers": {"X-Api-Key": "k"}}},
        {"id": "fixed", "verticals": ["auto_insurance"], "price": 4.25, "tier": 1,
         "post_url": "http://127.0.0.1:9002/post", "weight": 3,
         "sellers_allow": ["acme-media"]},
    ],
}  # fmt: skip

SPECIAL_STRINGS = [
    "${UNSET_VARIABLE}",
    "${UNSET_VARIABLE:-}",
    "${UNSET_VARIABLE:-fallback}",
    "http://user:password@127.0.0.1/ping",
    "ftp://127.0.0.1/ping",
    "http://127.0.0.1:99999/ping",
    "http://[::1/ping",
    "http://127.0.0.1/ping#fragment",
    "file:///etc/passwd",
    "24:00",
    "25:61",
    "Mars/Olympus_Mons",
    "",
    " ",
    "nan",
    "-inf",
    "1e999",
    "0.001",
    "-1",
    "auto_insurance",
    "acme-media",
    "json",
    "round_robin",
]
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(SPECIAL_STRINGS),
    st.dates(),
    st.lists(st.integers(-5, 5) | st.sampled_from(SPECIAL_STRINGS), max_size=3),
    st.dictionaries(
        st.from_regex(r"[a-z_]{1,6}", fullmatch=True), st.integers() | st.text(max_size=4),
        max_size=2,
    ),
)  # fmt: skip
keys = st.from_regex(r"[a-z_]{1,8}", fullmatch=True) | st.integers(0, 3)


@st.composite
def damaged_configs(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        _damage_once(draw, doc)
    return doc


def _damage_once(draw: st.DrawFn, node: Any) -> None:
    """Walk down a random path, then replace, delete, add or duplicate something there."""
    while True:
        if isinstance(node, dict):
            if not node:
                node[draw(keys)] = draw(junk)
                return
            key = draw(st.sampled_from(sorted(node, key=str)))
            action = draw(st.sampled_from(["descend", "descend", "replace", "delete", "add"]))
            child = node[key]
            if action == "descend" and isinstance(child, dict | list) and child:
                node = child
                continue
            if action == "delete":
                del node[key]
            elif action == "add":
                node[draw(keys)] = draw(junk)
            else:
                node[key] = draw(junk)
            return
        assert isinstance(node, list)
        if not node:
            node.append(draw(junk))
            return
        index = draw(st.integers(0, len(node) - 1))
        action = draw(st.sampled_from(["descend", "descend", "replace", "delete", "duplicate"]))
        child = node[index]
        if action == "descend" and isinstance(child, dict | list) and child:
            node = child
            continue
        if action == "delete":
            del node[index]
        elif action == "duplicate":
            node.append(copy.deepcopy(child))
        else:
            node[index] = draw(junk)
        return


# A key path: <root>, or dotted names and [index]es (pydantic adds the member type it tried
# for a union, e.g. "buyers[0].filters.state.in[0].str", or "[key]" for a dict's key).
_PATH = re.compile(r"(?:<root>|[\w-]+|\[\w+\])(?:\.[\w-]+|\[[^\]\s]*\]|\.\[[^\]]*\])*")


def assert_names_file_and_key(problem: str) -> None:
    assert problem.startswith(f"{SOURCE}: "), problem
    path, sep, what = problem.removeprefix(f"{SOURCE}: ").partition(": ")
    assert sep and what.strip(), problem
    assert _PATH.fullmatch(path), f"no key path in: {problem}"


def test_the_base_config_loads() -> None:
    loaded = parse_config(yaml.safe_dump(BASE), SOURCE, env={})
    for buyer in loaded.config.buyers:
        BuyerRuntime.from_config(buyer, loaded.config.verticals)


def _unbounded_number_field(doc: Any) -> bool:
    try:
        fields = doc["verticals"]["auto_insurance"]["fields"]
        return any(
            isinstance(spec, dict)
            and spec.get("type") in ("integer", "number")
            and spec.get("min") is None
            and spec.get("max") is None
            for spec in fields.values()
        )
    except (KeyError, TypeError, AttributeError):
        return False


@pytest.mark.parametrize("kind", ["integer", "number"])
def test_unbounded_number_fields_load(kind: str) -> None:
    doc = copy.deepcopy(BASE)
    doc["verticals"]["auto_insurance"]["fields"]["household_size"] = {"type": kind}
    loaded = parse_config(yaml.safe_dump(doc), SOURCE, env={})
    schema = loaded.schemas["auto_insurance"]
    lead = {"zip": "90210", "state": "CA", "household_size": 4}
    assert schema.validate_ping(lead)["household_size"] == 4


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_configs())
def test_damaged_config_loads_or_says_where_and_what(doc: dict[str, Any]) -> None:
    assume(not (UNBOUNDED_NUMBERS_CRASH and _unbounded_number_field(doc)))
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        parse_config(text, SOURCE, env={})
    except ConfigError as error:
        assert error.problems
        for problem in error.problems:
            assert_names_file_and_key(problem)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_loads_or_raises_config_error(text: str) -> None:
    try:
        parse_config(text, SOURCE, env={})
    except ConfigError as error:
        assert all(p.startswith(f"{SOURCE}: ") for p in error.problems)


@pytest.mark.parametrize(
    "options", [{"headers": 5}, {"headers": ["X-Key: 1"]}, {"headers": {"X-Key": "a\r\nX-Evil: 1"}}]
)
def test_bad_adapter_options_are_config_errors(options: dict[str, Any]) -> None:
    doc = copy.deepcopy(BASE)
    doc["buyers"][0]["adapter_options"] = options
    with pytest.raises(ConfigError) as raised:
        loaded = parse_config(yaml.safe_dump(doc), SOURCE, env={})
        for buyer in loaded.config.buyers:  # what create_app does with each buyer
            BuyerRuntime.from_config(buyer, loaded.config.verticals)
    assert any("buyers[0].adapter_options" in p for p in raised.value.problems)


# -- lead validation over random verticals --------------------------------------------------

MARKER = "Zq9\u00e7Mark"
_bound = st.integers(-1000, 1000)


@st.composite
def field_specs(draw: st.DrawFn) -> FieldSpec:
    kind = draw(
        st.sampled_from(
            ["string", "integer", "number", "boolean", "enum", "email", "phone", "zip",
             "state", "date"]
        )
    )  # fmt: skip
    spec: dict[str, Any] = {"type": kind, "pii": draw(st.booleans()),
                            "required": draw(st.booleans())}  # fmt: skip
    if kind in ("integer", "number"):
        low, high = sorted((draw(_bound), draw(_bound)))
        bounds = draw(st.sampled_from(["min", "max", "both", "none"]))
        if bounds == "none" and UNBOUNDED_NUMBERS_CRASH:
            bounds = "both"
        if bounds in ("min", "both"):
            spec["min"] = low
        if bounds in ("max", "both"):
            spec["max"] = high
    if kind == "enum":
        spec["values"] = draw(
            st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=1, max_size=4,
                     unique_by=str.casefold)
        )  # fmt: skip
    if kind == "string" and draw(st.booleans()):
        spec["max_length"] = draw(st.integers(1, 20))
    return FieldSpec.model_validate(spec)


verticals = st.dictionaries(
    st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True), field_specs(), min_size=1, max_size=6
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=30).map(lambda t: MARKER + t)
    | st.sampled_from(["", " ", "CA", "90210", "+14155552671", "a@b.co", "2024-02-29", "good"]),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner,
                                                               max_size=2),
    max_leaves=6,
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(verticals, st.data())
def test_random_leads_of_random_verticals(
    fields: dict[str, FieldSpec], data: st.DataObject
) -> None:
    schema = LeadSchema("v", fields)
    names = list(fields)
    lead = data.draw(
        st.dictionaries(st.sampled_from(names) | st.text(max_size=6), json_values, max_size=8)
        | json_values
    )
    for validate, public_only in ((schema.validate_full, False), (schema.validate_ping, True)):
        try:
            out = validate(lead)
        except LeadInvalid as invalid:
            assert invalid.problems
            for problem in invalid.problems:
                assert problem.loc[0] == "lead" and problem.msg
                assert MARKER not in problem.msg
                if len(problem.loc) > 1:
                    assert problem.loc[1] in fields or (
                        isinstance(lead, dict) and problem.loc[1] in lead
                    )
            assert MARKER not in str(invalid)
        else:
            assert set(out) <= set(fields)
            assert json.loads(json.dumps(out)) == out
            assert validate(out) == out  # normalising is idempotent
            if public_only:
                assert not set(out) & schema.pii_fields
            required = {
                n for n, s in fields.items() if s.required and (not public_only or not s.pii)
            }
            assert required <= set(out)
