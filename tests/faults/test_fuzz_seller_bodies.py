"""Fuzzing what sellers (and buyers returning leads) send, aimed at the storage boundary:
Hypothesis writes JSON bodies for POST /v1/ping, /v1/post, /v1/leads and /v1/returns from
valid requests with hostile values put in: NUL and other control characters, lone
surrogates written as JSON escapes (or as bytes that are not UTF-8), integers past 2^63
and 2^64, 1e308 and 1e400, values nested thousands deep, strings past every limit,
unknown keys and wrong types, in lead fields of every type, in ``external_id``,
``min_price``, ``tmax_ms`` and a return's ``reason``; now and then the bytes are cut short
or made invalid UTF-8.

tests/faults/test_fuzz_api.py fuzzes every operation from the OpenAPI document; this one keeps
requests close to valid, so that hostile values get past validation and reach the ledger.

After each example:

- no answer was a 5xx, except a 503 with Retry-After;
- every 4xx (and that 503) is SPEC section 4's JSON error;
- the record of every auction the example started (GET /v1/auctions/{ping_id}) answers
  200;
- an honest ping and post still quote and sell, and /readyz answers 200.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from exchange.config import parse_config
from exchange.core.config import LoadedConfig
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.fuzzing import (
    LiveExchange,
    Raw,
    auction_record,
    control_text,
    honest_round,
    hostile_text,
    hostile_values,
    json_bytes,
    live_settings,
    number_tokens,
    readiness_problem,
    seller_answer_problem,
)
from tests.support.harness import FULL_LEAD, SELLER_KEY, Exchange, config_text, realtime_buyer

CI_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
RETURN_KEY = "fuzz-return-key-0123456789"
MAX_BODY_BYTES = 65_536

# A vertical with a field of every type, most without bounds: free text, integers and
# numbers reach the ledger as the seller wrote them.
HOME_SERVICES = {
    "fields": {
        "first_name": {"type": "string", "pii": True, "required": True},
        "phone": {"type": "phone", "pii": True, "required": True},
        "email": {"type": "email", "pii": True},
        "zip": {"type": "zip", "required": True},
        "state": {"type": "state"},
        "project": {"type": "string"},
        "rooms": {"type": "integer"},
        "budget": {"type": "number"},
        "urgent": {"type": "boolean"},
        "start_date": {"type": "date"},
        "kind": {"type": "enum", "values": ["roof", "plumbing", "solar"]},
    }
}
HOME_LEAD: dict[str, Any] = {
    "first_name": "Ada", "phone": "(415) 555-2671", "email": "ada@example.com", "zip": "90210",
    "state": "CA", "project": "new roof", "rooms": 3, "budget": 1200.5, "urgent": True,
    "start_date": "2027-01-15", "kind": "roof",
}  # fmt: skip
LEADS = {"home_services": HOME_LEAD, "auto_insurance": FULL_LEAD}
PII = {
    "home_services": {"first_name", "phone", "email"},
    "auto_insurance": {"first_name", "last_name", "email", "phone", "street_address"},
}
FIELD_TYPES = {
    **{name: spec["type"] for name, spec in HOME_SERVICES["fields"].items()},
    "last_name": "string", "street_address": "string", "age": "integer",
    "credit_rating": "enum",
}  # fmt: skip


def exchange_config(honest_ping_url: str, honest_post_url: str, secret: str) -> LoadedConfig:
    buyer = {
        "id": "honest", "verticals": ["auto_insurance", "home_services"],
        "ping_url": honest_ping_url, "post_url": honest_post_url, "secret": secret,
        "return_api_key": RETURN_KEY, "return_window_days": 30,
    }  # fmt: skip
    doc = yaml.safe_load(config_text([buyer], exchange={"tmax_ms": 300}))
    doc["verticals"]["home_services"] = HOME_SERVICES
    return parse_config(yaml.safe_dump(doc), "test.yaml", env={})


# -- hostile values by field type ------------------------------------------------------------

NUMBER_TEXTS = ["1e308", "1e400", "-1e400", str(2**63), str(2**64), str(-(2**63) - 1),
                str(10**40), "-0", "NaN", "Infinity", "1e-400", "3.0", "3.5"]  # fmt: skip

# Near misses for the typed fields: each a valid value with something wrong in it.
ODD_VALUES = {
    "boolean": [True, False, 0, 1, "true", "\x00"],
    "date": ["2027-01-15", "0001-01-01", "9999-12-31", "2027-02-30", "2027-01-15\x00",
             "\ud800", "2027-01-15T00:00:00Z"],
    "enum": ["roof", "ROOF", "roof\x00", "good", "\ud800"],
    "phone": ["(415) 555-2671", "415555267\x00", "+1\ud8004155552671", "+99999999999999999999"],
    "email": ["ada@example.com", "ada\x00@example.com", "\ud800@example.com",
              "ADA@EXAMPLE.COM", "a@" + "b" * 300 + ".com"],
    "zip": ["90210", "90210-1234", "9021\x00", "\ud800", "902100"],
    "state": ["CA", "ca", "California", "C\x00A", "\ud800"],
}  # fmt: skip

by_type: dict[str, st.SearchStrategy[Any]] = {
    "string": control_text | control_text | hostile_text,
    "integer": st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 2**31, 10**30]),
        st.sampled_from(NUMBER_TEXTS).map(Raw),
    ),
    "number": st.one_of(
        number_tokens,
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(NUMBER_TEXTS).map(Raw),
    ),
    **{kind: st.sampled_from(values) | hostile_text for kind, values in ODD_VALUES.items()},
}


@st.composite
def leads(draw: st.DrawFn, vertical: str) -> dict[str, Any]:
    """A valid lead of the vertical with a few values made hostile, a few dropped, and
    maybe keys nobody declared."""
    lead: dict[str, Any] = dict(LEADS.get(vertical, HOME_LEAD))
    # Free text and unbounded numbers are picked most: what validation lets through.
    names = sorted(lead) + [
        n for n in lead if FIELD_TYPES.get(n) in ("string", "integer", "number")
    ]
    for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
        typed = by_type.get(FIELD_TYPES.get(name, "string"), hostile_text)
        lead[name] = draw(typed | typed | hostile_values)
    for name in draw(st.lists(st.sampled_from(sorted(lead)), max_size=1)):
        lead.pop(name, None)
    if draw(st.integers(0, 7)) == 0:
        names = hostile_text | st.sampled_from(["extra", "age", "\x00"])
        lead.update(draw(st.dictionaries(names, hostile_values, max_size=2)))
    return lead


def optional(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Absent (None) most of the time."""
    return st.one_of(st.none(), st.none(), st.none(), value)


external_ids = optional(
    st.one_of(
        st.builds(lambda: uuid.uuid4().hex),
        st.builds(lambda: uuid.uuid4().hex),
        control_text,
        hostile_text,
        st.sampled_from(["id\x00", "\x00", "\ud800", "x" * 129, 12, 2**64, ["a"]]),
    )
)
prices = st.one_of(
    st.sampled_from(["1.00", 1, 1.005, 0, -1, 2**63, 2**64, "1e400", "\x00", "NaN"]),
    number_tokens,
    hostile_values,
)
tmaxes = st.one_of(
    st.just(300),
    st.just(300),
    st.sampled_from([10, 100, 60_000, 60_001, 0, -1, 2**63, 2**64, 1.5, "100"]),
    number_tokens,
)
verticals = st.one_of(
    st.just("home_services"),
    st.just("home_services"),
    st.just("auto_insurance"),
    st.just("auto_insurance"),
    st.sampled_from(["auto_insurance\x00", "\ud800", "", "AUTO_INSURANCE", 7]),
)


# The keys each request may carry (an unknown key is a 422 before anything is stored, so
# one is added only now and then).
KEYS = {
    "ping": ("tmax_ms", "external_id"),
    "leads": ("tmax_ms", "external_id", "min_price"),
    "post": ("min_price",),
}
OPTIONAL_VALUES = {"tmax_ms": tmaxes, "external_id": external_ids, "min_price": prices}


@st.composite
def lead_requests(draw: st.DrawFn, endpoint: str) -> dict[str, Any]:
    vertical = "home_services" if endpoint == "post" else draw(verticals)
    body: dict[str, Any] = {"lead": draw(leads(vertical))}
    if endpoint != "post":
        body["vertical"] = vertical
    for key in KEYS[endpoint]:
        value = draw(optional(OPTIONAL_VALUES[key]))
        if value is not None:
            body[key] = value
    if draw(st.integers(0, 7)) == 0:
        body.update(draw(st.dictionaries(hostile_text, hostile_values, max_size=1)))
    return body


@st.composite
def wire_bytes(draw: st.DrawFn, body: object) -> bytes:
    """The body as JSON text; now and then non-ASCII written raw (lone surrogates then
    are not UTF-8), cut short, or spoilt with bytes that are not UTF-8."""
    raw = json_bytes(body, ascii_only=draw(st.booleans()))
    damage = draw(st.sampled_from(["none"] * 12 + ["truncate", "invalid_utf8"]))
    if damage == "truncate" and raw:
        return raw[: draw(st.integers(min_value=0, max_value=len(raw) - 1))]
    if damage == "invalid_utf8":
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + raw[at:]
    return raw


@st.composite
def seller_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any], bytes]:
    """(endpoint, body, bytes sent)."""
    endpoint = draw(st.sampled_from(["ping", "post", "leads", "returns"]))
    if endpoint == "returns":
        body: dict[str, Any] = {"ping_id": "sold", "reason": draw(hostile_text | hostile_values)}
        if draw(st.booleans()):
            body["ping_id"] = draw(hostile_text | st.just(str(uuid.UUID(int=0))))
        body.update(draw(st.dictionaries(hostile_text, hostile_values, max_size=1)))
    else:
        body = draw(lead_requests(endpoint))
    if endpoint == "post":
        body["ping_id"] = "pinged"
        if draw(st.integers(0, 4)) == 0:
            body["ping_id"] = draw(hostile_text | st.just(str(uuid.uuid4())))
    return endpoint, body, draw(wire_bytes(body))


# -- the exchange ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def live(server_dsn: str) -> AsyncIterator[LiveExchange]:
    specs = [SimulatedBuyerSpec("honest", bid_cents=(1000, 1000))]
    async with BuyerSimulator(specs, record=False) as sim:
        honest = realtime_buyer(sim, "honest")
        live = LiveExchange(
            server_dsn,
            lambda: exchange_config(honest["ping_url"], honest["post_url"], honest["secret"]),
        )
        try:
            yield live
        finally:
            print(f"\nexchange builds: {live.builds} in {live.build_seconds:.1f} s")
            await live.close()


async def send(ex: Exchange, path: str, data: bytes, key: str = SELLER_KEY) -> Any:
    return await ex.call("POST", path, raw=data, key=key)


def _redacted(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ping before a post: the post's non-PII fields, tmax and nothing else."""
    lead = body.get("lead")
    if isinstance(lead, dict):
        lead = {k: v for k, v in lead.items() if k not in PII["home_services"]}
    return {"vertical": "home_services", "lead": lead}


@live_settings(CI_EXAMPLES)
@given(call=seller_calls(), ascii_only=st.booleans())
async def test_no_seller_body_stops_the_exchange(
    live: LiveExchange, call: tuple[str, dict[str, Any], bytes], ascii_only: bool
) -> None:
    endpoint, body, data = call
    async with live.example() as ex:
        auctions: list[str] = []
        if endpoint == "ping":
            status, answer, headers = await send(ex, "/v1/ping", data)
            assert seller_answer_problem("ping", status, answer, headers) is None
        elif endpoint == "leads":
            status, answer, headers = await send(ex, "/v1/leads", data)
            assert seller_answer_problem("leads", status, answer, headers) is None
        elif endpoint == "post":
            ping = json_bytes(_redacted(body), ascii_only)
            status, answer, headers = await send(ex, "/v1/ping", ping)
            assert seller_answer_problem("ping before post", status, answer, headers) is None
            if status == 200:
                auctions.append(answer["ping_id"])
                data = data.replace(b'"pinged"', b'"%s"' % answer["ping_id"].encode())
            status, answer, headers = await send(ex, "/v1/post", data)
            assert seller_answer_problem("post", status, answer, headers) is None
        else:
            status, sold, _ = await ex.call(
                "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": FULL_LEAD}
            )
            assert status == 200 and sold["status"] == "sold", (status, sold)
            data = data.replace(b'"sold"', b'"%s"' % sold["ping_id"].encode())
            status, answer, headers = await send(ex, "/v1/returns", data, key=RETURN_KEY)
            assert seller_answer_problem("return", status, answer, headers) is None
        event(f"{endpoint}: {status} {_what(answer)}")
        if status == 200 and isinstance(answer, dict) and "ping_id" in answer:
            auctions.append(answer["ping_id"])
        for ping_id in auctions:
            problem, _ = await auction_record(ex, ping_id)
            assert problem is None, problem

        problems, _ = await honest_round(ex)
        assert problems == [], problems
        assert await readiness_problem(ex) is None


def _what(answer: Any) -> str:
    """An error's code and the first field it names (--hypothesis-show-statistics)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), dict):
        return ""
    fields = answer["error"].get("fields") or [{}]
    return f"{answer['error'].get('code')} {str(fields[0].get('loc', ''))[:40]}"
