"""`lead-exchange buyer-test`: one ping (and post) to a buyer's real endpoint, over loopback
HTTP to buyer servers started here, through the exchange's own adapter and transport."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from exchange.cli import main
from exchange.core.fields import FieldSpec, LeadSchema
from exchange.tools.buyer_report import masked_url
from exchange.tools.sample_lead import sample_lead

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

VERTICAL = {
    "fields": {
        "first_name": {"type": "string", "pii": True, "required": True},
        "email": {"type": "email", "pii": True, "required": True},
        "phone": {"type": "phone", "pii": True, "required": True},
        "zip": {"type": "zip", "required": True},
        "state": {"type": "state", "required": True},
        "age": {"type": "integer", "min": 16, "max": 120},
        "credit_rating": {"type": "enum", "values": ["excellent", "good", "fair", "poor"]},
        "dob": {"type": "date"},
    }
}
SELLER = {"id": "seller-1", "api_key": "seller-key-0123456789", "payout_share": 0.8}
SECRET = "buyer-hmac-secret"


@dataclass
class BuyerServer:
    """A buyer on loopback: its answers by path, and every request it received."""

    url: str
    received: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def buyer_server(routes: dict[str, Handler]) -> AsyncIterator[BuyerServer]:
    server = BuyerServer("")

    def recording(handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            server.received.append((request.method, request.path_qs, dict(request.headers), body))
            return await handler(request)

        return handle

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, recording(handler))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


def answer(body: Any, status: int = 200) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if isinstance(body, str):
            return web.Response(text=body, status=status, content_type="text/plain")
        return web.json_response(body, status=status)

    return handle


def json_buyer(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "acme",
        "verticals": ["auto_insurance"],
        "ping_url": f"{base_url}/ping",
        "post_url": f"{base_url}/post",
        "secret": SECRET,
        "timeout_ms": 500,
        **extra,
    }


def write_config(tmp_path: Path, *buyers: dict[str, Any]) -> str:
    path = tmp_path / "exchange.yaml"
    config = {
        "exchange": {"tmax_ms": 1000},
        "verticals": {"auto_insurance": VERTICAL},
        "sellers": [SELLER],
        "buyers": list(buyers),
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


async def buyer_test(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command run as `lead-exchange buyer-test ...` runs it (its own event loop, in a
    thread so the buyer servers of this loop keep answering)."""
    code = await asyncio.to_thread(main, ["buyer-test", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the json adapter --------------------------------------------------------------------------


async def test_a_bid_is_shown_with_its_request_and_the_signature_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with buyer_server({"/ping": answer({"bid": 12.5, "bid_id": "b-1"})}) as buyer:
        config = write_config(tmp_path, json_buyer(buyer.url))
        code, out, _ = await buyer_test(capsys, "--config", config, "acme")
    assert code == 0
    [(method, path, headers, body)] = buyer.received
    assert (method, path) == ("POST", "/ping")
    signature = headers["X-Exchange-Signature"]
    assert signature.startswith("sha256=") and signature not in out
    assert "> X-Exchange-Signature: sha256=***" in out
    assert f"> POST {buyer.url}/ping" in out
    assert f"> {body.decode()}" in out  # the body exactly as sent
    # The ping carries the redacted lead, as the exchange pings buyers.
    lead = json.loads(body)["lead"]
    assert lead["zip"] == "90210" and "email" not in lead and "first_name" not in lead
    assert "< HTTP 200" in out and '< {"bid": 12.5, "bid_id": "b-1"}' in out
    assert "outcome: bid" in out and "price: 12.50" in out and "bid_id: b-1" in out
    assert "== post" not in out


async def test_a_garbage_answer_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with buyer_server({"/ping": answer("<html>oops</html>")}) as buyer:
        config = write_config(tmp_path, json_buyer(buyer.url))
        code, out, _ = await buyer_test(capsys, "--config", config, "acme")
    assert code == 1
    assert "< <html>oops</html>" in out
    assert "outcome: error" in out and "reason: invalid json" in out


async def test_a_bid_the_exchange_refuses_exits_1_naming_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with buyer_server({"/ping": answer({"bid": 20_000})}) as buyer:
        config = write_config(tmp_path, json_buyer(buyer.url))
        code, out, _ = await buyer_test(capsys, "--config", config, "acme", "--post")
    assert code == 1
    assert "outcome: error" in out and "bid above max_bid (10000.00)" in out
    assert len(buyer.received) == 1  # not posted


async def test_a_buyer_slower_than_its_timeout_exits_1_as_a_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return web.json_response({"bid": 1})

    async with buyer_server({"/ping": slow}) as buyer:
        config = write_config(tmp_path, json_buyer(buyer.url, timeout_ms=100))
        code, out, _ = await buyer_test(capsys, "--config", config, "acme")
    assert code == 1
    assert "outcome: timeout" in out and "reason: no answer within 100 ms" in out


async def test_connection_refused_exits_1_with_the_reason_and_no_traceback(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, json_buyer(f"http://127.0.0.1:{unused_port()}"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", "buyer-test", "--config", config, "acme", "--post",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    out, err = stdout.decode(), stderr.decode()
    assert process.returncode == 1, err
    assert "Traceback" not in out + err
    assert "outcome: error" in out and "reason: ConnectionRefusedError" in out
    assert "not posted: the ping's answer was error" in out


async def test_an_unknown_buyer_exits_2_listing_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = json_buyer("http://127.0.0.1:9", id="other")
    config = write_config(tmp_path, json_buyer("http://127.0.0.1:9"), other)
    code, out, err = await buyer_test(capsys, "--config", config, "nobody")
    assert code == 2 and out == ""
    assert "no buyer 'nobody'" in err and "known buyers: acme, other" in err


async def test_a_vertical_the_buyer_does_not_buy_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, json_buyer("http://127.0.0.1:9"))
    code, _, err = await buyer_test(capsys, "--config", config, "acme", "--vertical", "solar")
    assert code == 2
    assert "does not buy in vertical 'solar' (its verticals: auto_insurance)" in err


async def test_post_sends_the_full_lead_at_the_bid_and_shows_the_acceptance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = {
        "/ping": answer({"bid": 12.5, "bid_id": "b-1"}),
        "/post": answer({"accepted": True, "buyer_lead_id": "L-9"}),
    }
    async with buyer_server(routes) as buyer:
        config = write_config(tmp_path, json_buyer(buyer.url))
        code, out, _ = await buyer_test(capsys, "--config", config, "acme", "--post")
    assert code == 0
    ping, post = buyer.received
    posted = json.loads(post[3])
    assert posted["ping_id"] == json.loads(ping[3])["ping_id"]
    assert (posted["bid_id"], posted["price"]) == ("b-1", 12.5)
    assert posted["lead"]["email"] == "jane.doe@example.com"  # PII goes in the post only
    assert "== post" in out and f"> POST {buyer.url}/post" in out
    assert "outcome: accepted" in out and "buyer_lead_id: L-9" in out
    assert post[2]["X-Exchange-Signature"] not in out


async def test_a_rejected_post_is_understood(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = {
        "/ping": answer({"bid": 3}),
        "/post": answer({"accepted": False, "reason": "out of area"}),
    }
    async with buyer_server(routes) as buyer:
        config = write_config(tmp_path, json_buyer(buyer.url))
        code, out, _ = await buyer_test(capsys, "--config", config, "acme", "--post")
    assert code == 0
    assert "outcome: rejected" in out and "reason: out of area" in out


async def test_no_bid_means_no_post_and_still_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with buyer_server({"/ping": answer({"bid": None})}) as buyer:
        config = write_config(tmp_path, json_buyer(buyer.url))
        code, out, _ = await buyer_test(capsys, "--config", config, "acme", "--post")
    assert code == 0
    assert len(buyer.received) == 1
    assert "outcome: no_bid" in out and "not posted" in out


async def test_json_output_parses_and_masks_the_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = {
        "/ping": answer({"bid": 12.5, "bid_id": "b-1"}),
        "/post": answer({"accepted": True, "buyer_lead_id": "L-9"}),
    }
    async with buyer_server(routes) as buyer:
        config = write_config(tmp_path, json_buyer(buyer.url))
        code, out, _ = await buyer_test(capsys, "--config", config, "acme", "--post", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["buyer"] == "acme" and report["understood"] is True
    ping, post = report["steps"]
    assert ping["read"] == {"outcome": "bid", "price": 12.5, "bid_id": "b-1", "reason": None}
    assert dict(ping["request"]["headers"])["X-Exchange-Signature"] == "sha256=***"
    assert ping["response"]["status"] == 200 and ping["response"]["body_truncated"] is False
    assert post["read"]["outcome"] == "accepted" and post["read"]["buyer_lead_id"] == "L-9"
    assert json.loads(post["request"]["body"])["bid_id"] == "b-1"


async def test_a_long_answer_is_cut_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with buyer_server({"/ping": answer("x" * 10_000)}) as buyer:
        config = write_config(tmp_path, json_buyer(buyer.url))
        code, out, _ = await buyer_test(capsys, "--config", config, "acme")
    assert code == 1
    assert "x" * 4096 in out and "x" * 4097 not in out
    assert "first 4096 of 10000 bytes shown" in out


async def test_a_lead_file_is_validated_and_sent_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "lead.json"
    good.write_text(json.dumps({"zip": "10001", "state": "New York", "email": "A@B.CO"}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"zip": "123", "state": "NY"}))
    async with buyer_server({"/ping": answer({"bid": 2})}) as buyer:
        config = write_config(tmp_path, json_buyer(buyer.url))
        code, _, _ = await buyer_test(capsys, "--config", config, "acme", "--lead", str(good))
        refused, out, err = await buyer_test(capsys, "--config", config, "acme", "--lead", str(bad))
    assert code == 0
    [(_, _, _, body)] = buyer.received  # the bad lead was never sent
    assert json.loads(body)["lead"] == {"zip": "10001", "state": "NY"}  # normalised, no PII
    assert refused == 2 and out == ""
    assert "lead.zip: must be a 5-digit ZIP code" in err


async def test_a_fixed_price_buyer_is_posted_at_its_price_without_a_ping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with buyer_server({"/post": answer({"accepted": True})}) as buyer:
        fixed = {
            "id": "call-center",
            "verticals": ["auto_insurance"],
            "post_url": f"{buyer.url}/post",
            "price": 20,
            "secret": SECRET,
        }
        config = write_config(tmp_path, fixed)
        code, out, _ = await buyer_test(capsys, "--config", config, "call-center", "--post")
        without_post, _, err = await buyer_test(capsys, "--config", config, "call-center")
    assert code == 0
    [(method, path, _, body)] = buyer.received
    assert (method, path) == ("POST", "/post")
    assert json.loads(body)["price"] == 20.0
    assert "== ping" not in out and "outcome: accepted" in out
    assert without_post == 2 and "add --post" in err


# -- the http adapter: credentials in headers and query strings --------------------------------


def http_buyer(base_url: str) -> dict[str, Any]:
    return {
        "id": "legacy-crm",
        "adapter": "http",
        "enabled": False,
        "verticals": ["auto_insurance"],
        "ping": {
            "url": f"{base_url}/ping",
            "method": "GET",
            "fields": {"ZipCode": "zip", "State": "state"},
            "auth": {"type": "query", "name": "api_key", "value": "query-secret-456"},
            "bid": "$.result.price",
            "bid_id": "$.result.id",
        },
        "post": {
            "url": f"{base_url}/post",
            "format": "form",
            "fields": {"FirstName": "first_name", "Phone": "phone", "Lead_ID": "bid_id"},
            "transforms": {"Phone": "digits10"},
            "auth": {"type": "header", "name": "X-Api-Key", "value": "secret-value-123"},
            "accepted": "$.status",
            "accepted_values": ["OK"],
            "buyer_lead_id": "$.lead_id",
            "redirect_url": "$.redirect",
        },
    }


async def test_http_buyer_credentials_never_reach_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = {
        "/ping": answer({"result": {"price": "7.25", "id": "q-1"}}),
        "/post": answer({"status": "OK", "lead_id": "L-1", "redirect": "https://b.example/t"}),
    }
    async with buyer_server(routes) as buyer:
        config = write_config(tmp_path, http_buyer(buyer.url))
        code, out, _ = await buyer_test(capsys, "--config", config, "legacy-crm", "--post")
        json_code, json_out, _ = await buyer_test(
            capsys, "--config", config, "legacy-crm", "--post", "--json"
        )
    assert code == json_code == 0
    # The buyer did get both credentials...
    ping, post = buyer.received[:2]
    assert "api_key=query-secret-456" in ping[1]
    assert post[2]["X-Api-Key"] == "secret-value-123"
    # ...and no output shows them.
    for shown in (out, json_out):
        assert "query-secret-456" not in shown and "secret-value-123" not in shown
    assert "api_key=***" in out and "> X-Api-Key: ***" in out
    assert "ZipCode=90210" in out  # the rest of the URL as sent
    assert "disabled" in out  # a disabled buyer may be tested, and the output says so
    assert "outcome: bid" in out and "price: 7.25" in out and "bid_id: q-1" in out
    assert post[3] == b"FirstName=Jane&Phone=3105550123&Lead_ID=q-1"
    assert f"> {post[3].decode()}" in out  # the form body as sent
    assert "outcome: accepted" in out and "redirect_url: https://b.example/t" in out
    report = json.loads(json_out)
    assert report["enabled"] is False
    assert report["steps"][1]["read"]["redirect_url"] == "https://b.example/t"


def test_masked_url_keeps_everything_but_the_masked_values() -> None:
    url = "https://b.example/p?a=1&Api%5FKey=s%26cret&b=x%20y#frag"
    assert (
        masked_url(url, frozenset({"api_key"}))
        == "https://b.example/p?a=1&Api%5FKey=***&b=x%20y#frag"
    )
    assert masked_url("https://b.example/p", frozenset({"api_key"})) == "https://b.example/p"


# -- the sample lead ---------------------------------------------------------------------------


@st.composite
def field_specs(draw: st.DrawFn) -> FieldSpec:
    kind = draw(
        st.sampled_from(
            ["string", "integer", "number", "boolean", "enum", "email", "phone", "zip",
             "state", "date"]
        )
    )  # fmt: skip
    spec: dict[str, Any] = {"type": kind, "required": True, "pii": draw(st.booleans())}
    if kind in ("integer", "number"):
        bounds = st.none() | st.decimals(-10_000, 10_000, places=2)
        low, high = draw(bounds), draw(bounds)
        if low is not None and high is not None:
            # A span a float fits in (0.01 to 0.01 admits no JSON number at all).
            low, high = sorted((low, high))
            high = max(high, low + Decimal("0.01"))
            if kind == "integer" and math.ceil(low) > math.floor(high):
                high = Decimal(math.ceil(low))
        spec.update(min=low, max=high)
    if kind == "enum":
        spec["values"] = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, unique=True))
    if kind == "string":
        spec["max_length"] = draw(st.integers(1, 300))
    return FieldSpec.model_validate(spec)


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), field_specs(), min_size=1))
def test_the_sample_lead_is_valid_for_any_vertical(fields: dict[str, FieldSpec]) -> None:
    schema = LeadSchema("v", fields)
    lead = sample_lead(fields)
    assert schema.validate_full(lead).keys() == fields.keys()
