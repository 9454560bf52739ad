"""Nobody let in, nothing leaked: keys kept as hashes, the admin token guarding the
operator API, per-seller rate limits, HMAC-signed buyer requests a buyer can check for
replays, buyer URLs checked at load, and neither secrets nor PII in logs or the ledger.

About PII at rest: the ledger stores no PII at all. Pings keep only the non-PII fields of
a lead; a posted lead's PII is forwarded to buyers and never written (only keyed hashes
of phone and email, for duplicate checks). The test below proves it table by table; see
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from buyers.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from exchange.config import ConfigError, parse_config
from exchange.core.config import hash_key
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.faults import (
    ExchangeProcess,
    RawBuyer,
    RawRequest,
    RssPeak,
    SellerTraffic,
    response_head,
    serve_exchange,
    table_dump,
)
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    OTHER_SELLER_KEY,
    PII,
    PING_LEAD,
    SELLER_KEY,
    Exchange,
    config_text,
    make_config,
    realtime_buyer,
)

LIMITED_KEY = "limited-test-key-0123456789"
RETURN_KEY = "buyer-return-key-0123456789"
BUYER_SECRET = "buyer-hmac-secret-0123456789"
WRONG_KEY = "presented-wrong-key-0123456789"
# PII as sent and as normalised (E.164 phone, lower-case email).
PII_VALUES = [*PII.values(), "+14155552671", "4155552671", "ada.lovelace@example.com"]
OPERATOR_PATHS = ["/v1/auctions/{ping_id}", "/v1/reports/buyers", "/v1/reports/sellers"]


def sellers(**limited: Any) -> list[dict[str, Any]]:
    return [
        {"id": "acme-media", "api_key": SELLER_KEY, "payout_share": 0.85, "floor": 2.0},
        {"id": "other-seller", "api_key": OTHER_SELLER_KEY, "payout_share": 0.8},
        {"id": "limited", "api_key": LIMITED_KEY, "payout_share": 0.8, **limited},
    ]


@pytest.fixture
async def ex(database_url: str) -> AsyncIterator[Exchange]:
    specs = [SimulatedBuyerSpec("b", bid_cents=(2000, 2000), secret=BUYER_SECRET.encode())]
    async with BuyerSimulator(specs) as sim:
        config = make_config(
            [realtime_buyer(sim, "b", return_api_key=RETURN_KEY, return_window_days=5)],
            sellers=sellers(rate_limit_per_s=2),
        )
        async with serve_exchange(config, database_url) as exchange:
            yield exchange


# -- keys kept as hashes ---------------------------------------------------------------------


async def test_seller_and_return_keys_are_looked_up_by_hash(ex: Exchange) -> None:
    loaded = ex.ctx.loaded
    assert set(loaded.sellers_by_key_hash) == {
        hash_key(k) for k in (SELLER_KEY, OTHER_SELLER_KEY, LIMITED_KEY)
    }
    assert set(loaded.buyers_by_return_key_hash) == {hash_key(RETURN_KEY)}
    for key in (SELLER_KEY, OTHER_SELLER_KEY, LIMITED_KEY, RETURN_KEY):
        assert key not in loaded.sellers_by_key_hash
        assert key not in loaded.buyers_by_return_key_hash


async def test_a_seller_configured_with_only_the_hash_gets_in(database_url: str) -> None:
    config = make_config(
        [{"id": "fixed", "verticals": ["auto_insurance"], "price": 5.0,
          "post_url": "http://127.0.0.1:9/post"}],
        sellers=[{"id": "acme-media", "api_key_sha256": hash_key(SELLER_KEY),
                  "payout_share": 0.85}],
    )  # fmt: skip
    assert SELLER_KEY not in repr(config)
    async with serve_exchange(config, database_url) as ex:
        assert (await ex.ping())["status"] == "bid"
        status, _, _ = await ex.call("POST", "/v1/ping", {}, key=hash_key(SELLER_KEY))
        assert status == 401  # the hash itself is not a key


async def test_no_key_or_token_reaches_the_ledger(ex: Exchange, database_url: str) -> None:
    await ex.ping()
    status, sold, _ = await ex.call(
        "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": FULL_LEAD}
    )
    assert (status, sold["status"]) == (200, "sold")
    returned = {"ping_id": sold["ping_id"], "reason": "disconnected number"}
    assert (await ex.call("POST", "/v1/returns", returned, key=RETURN_KEY))[0] == 201
    await ex.call("POST", "/v1/ping", {}, key=WRONG_KEY)
    await ex.ctx.writer.flush()
    secrets = [SELLER_KEY, OTHER_SELLER_KEY, LIMITED_KEY, RETURN_KEY, ADMIN_TOKEN, BUYER_SECRET,
               WRONG_KEY, hash_key(SELLER_KEY)]  # fmt: skip
    for table, rows in (await table_dump(database_url)).items():
        for secret in secrets:
            assert secret.encode() not in rows, (table, secret)


async def test_secrets_are_not_in_the_config_repr(ex: Exchange) -> None:
    text = repr(ex.ctx.loaded) + repr(ex.ctx)
    for secret in (SELLER_KEY, RETURN_KEY, ADMIN_TOKEN, BUYER_SECRET):
        assert secret not in text, secret


# -- the operator API ------------------------------------------------------------------------


async def test_operator_api_needs_the_admin_token_and_nothing_else_opens_it(ex: Exchange) -> None:
    ping_id = (await ex.ping())["ping_id"]
    paths = [p.format(ping_id=ping_id) for p in OPERATOR_PATHS]
    for path in paths:
        for key in (None, RETURN_KEY, WRONG_KEY, ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1]):
            status, body, _ = await ex.call("GET", path, key=key)
            assert (status, body["error"]["code"]) == (401, "unauthorized"), (path, key)
        # A seller's own key is known, and reads its own row of the seller report (SPEC
        # 11), no more: an auction's record and the buyers' report are refused to it.
        if path != "/v1/reports/sellers":
            status, body, _ = await ex.call("GET", path, key=SELLER_KEY)
            assert (status, body["error"]["code"]) == (403, "forbidden"), path
        for header in ("Basic " + ADMIN_TOKEN, "Bearer", "Bearer ", ADMIN_TOKEN):
            status, _, _ = await ex.call("GET", path, key=None, headers={"Authorization": header})
            assert status == 401, (path, header)
        status, _, _ = await ex.call("GET", path, key=ADMIN_TOKEN)
        assert status == 200, path


async def test_without_an_admin_token_the_operator_api_is_closed(database_url: str) -> None:
    config = make_config([], exchange={"admin_token": None})
    async with serve_exchange(config, database_url) as ex:
        for path in ("/v1/reports/buyers", "/v1/reports/sellers"):
            for key in (None, "", "None", "null", ADMIN_TOKEN):
                status, _, _ = await ex.call("GET", path, key=key or None)
                assert status == 401
        # What stays open: a seller's own row, with its own key.
        status, body, _ = await ex.call("GET", "/v1/reports/sellers", key=SELLER_KEY)
        assert status == 200 and {r["seller"] for r in body["sellers"]} <= {"acme-media"}
        status, _, _ = await ex.call("GET", "/v1/reports/buyers", key=SELLER_KEY)
        assert status == 403  # a seller reads no buyer's figures


# -- rate limits -----------------------------------------------------------------------------


async def test_rate_limit_is_per_seller_and_lifts(ex: Exchange) -> None:
    body = {"vertical": "auto_insurance", "lead": PING_LEAD}
    statuses = []
    for _ in range(8):
        status, answer, headers = await ex.call("POST", "/v1/ping", body, key=LIMITED_KEY)
        statuses.append(status)
        if status == 429:
            assert answer["error"]["code"] == "rate_limited"
            retry_after = int(headers["Retry-After"])
            assert retry_after >= 1
            # Another seller is not slowed down by this one's limit.
            assert (await ex.call("POST", "/v1/ping", body))[0] == 200
    assert 429 in statuses
    assert statuses[:4] == [200] * 4  # the burst (2 x rate)
    await asyncio.sleep(retry_after)
    assert (await ex.call("POST", "/v1/ping", body, key=LIMITED_KEY))[0] == 200


# -- signed buyer requests -------------------------------------------------------------------


async def test_every_buyer_request_is_signed_and_replays_are_refused(database_url: str) -> None:
    secrets = {"a": b"secret-of-a-0123456789", "b": b"secret-of-b-0123456789"}
    specs = [SimulatedBuyerSpec("a", bid_cents=(3000, 3000), secret=secrets["a"],
                                reject_rate=1.0),
             SimulatedBuyerSpec("b", bid_cents=(2000, 2000), secret=secrets["b"])]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        config = make_config(
            [realtime_buyer(sim, "a"), realtime_buyer(sim, "b")],
        )
        async with serve_exchange(config, database_url) as ex:
            answer = await ex.ping()
            assert (await ex.post(answer["ping_id"]))["status"] == "sold"
            direct = {"vertical": "auto_insurance", "lead": FULL_LEAD}
            assert (await ex.call("POST", "/v1/leads", direct))[0] == 200
        received = {b: sim.received(b) for b in ("a", "b")}
        counters = {b: sim.counters(b) for b in ("a", "b")}
    assert {r.path for r in received["a"]} == {r.path for r in received["b"]} == {"/ping", "/post"}
    now = time.time()
    for buyer, requests in received.items():
        assert counters[buyer].unauthorized == 0
        for request in requests:
            stamp = request.headers[TIMESTAMP_HEADER]
            signature = request.headers[SIGNATURE_HEADER]
            assert abs(now - int(stamp)) < 10
            assert verify(secrets[buyer], stamp, signature, request.raw, now) is None
            # Replayed outside the window, tampered with, or under another buyer's key: refused.
            for later in (int(stamp) + 301, int(stamp) - 301):
                assert verify(secrets[buyer], stamp, signature, request.raw, later) == (
                    "timestamp outside the allowed window"
                )
            other = secrets["b" if buyer == "a" else "a"]
            assert verify(other, stamp, signature, request.raw, now) is not None
            assert verify(secrets[buyer], stamp, signature, request.raw + b" ", now) is not None
            assert verify(secrets[buyer], str(int(stamp) + 1), signature, request.raw, now)


async def test_a_buyer_refuses_a_replayed_request(database_url: str) -> None:
    """The shipped verifier, in the simulated buyer, refuses a correctly signed request
    whose timestamp is ten minutes old."""
    secret = b"replay-secret-0123456789"
    async with BuyerSimulator([SimulatedBuyerSpec("a", secret=secret)]) as sim:
        body = orjson.dumps({"ping_id": "x", "vertical": "auto_insurance", "tmax_ms": 100,
                             "floor": 0, "lead": PING_LEAD})  # fmt: skip
        old = int(time.time()) - 600
        async with aiohttp.ClientSession() as http:
            for stamp, expected in ((old, 401), (int(time.time()), 200)):
                headers = {TIMESTAMP_HEADER: str(stamp),
                           SIGNATURE_HEADER: sign(secret, stamp, body)}  # fmt: skip
                async with http.post(sim.ping_url("a"), data=body, headers=headers) as response:
                    assert response.status == expected


# -- buyer URLs ------------------------------------------------------------------------------

BAD_URLS = {
    "ftp://127.0.0.1/ping": "scheme",
    "file:///etc/passwd": "scheme",
    "javascript:alert(1)": "scheme",
    "127.0.0.1:9001/ping": "no scheme",
    "//127.0.0.1/ping": "relative",
    "http:///ping": "no host",
    "http://buyer:hunter2-password@127.0.0.1/ping": "credentials",
    "https://:hunter2-password@127.0.0.1/ping": "credentials",
    "http://token-hunter2-password@127.0.0.1/ping": "credentials",
    "http://127.0.0.1/ping#frag": "fragment",
}


def _buyer_doc(**urls: str) -> str:
    buyer = {"id": "x", "verticals": ["auto_insurance"], "ping_url": "http://127.0.0.1:1/ping",
             "post_url": "http://127.0.0.1:1/post", **urls}  # fmt: skip
    return config_text([buyer])


@pytest.mark.parametrize("url", sorted(BAD_URLS))
@pytest.mark.parametrize("key", ["ping_url", "post_url"])
def test_bad_buyer_urls_are_refused_at_load(url: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(_buyer_doc(**{key: url}), "exchange.yaml", env={})
    problems = raised.value.problems
    assert any(p.startswith(f"exchange.yaml: buyers[0].{key}: ") for p in problems), problems
    assert not any("hunter2" in p for p in problems), "the error repeats the credentials"


def test_buyer_hosts_outside_the_allowlist_are_refused() -> None:
    doc = yaml.safe_load(_buyer_doc(ping_url="http://10.1.2.3/ping"))
    doc["exchange"]["allowed_buyer_hosts"] = ["127.0.0.1", "buyers.example.com"]
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml.safe_dump(doc), "exchange.yaml", env={})
    assert any("buyers[0].ping_url" in p for p in raised.value.problems)
    doc["buyers"][0]["ping_url"] = "http://127.0.0.1/ping"
    parse_config(yaml.safe_dump(doc), "exchange.yaml", env={})


# -- PII at rest -----------------------------------------------------------------------------


async def test_no_pii_in_any_table_after_a_sold_direct_post(database_url: str) -> None:
    specs = [SimulatedBuyerSpec("b", bid_cents=(2000, 2000))]
    async with BuyerSimulator(specs) as sim:
        config = make_config(
            [realtime_buyer(sim, "b", dedupe_days=30)],
            exchange={"dedupe_hash_key": "dedupe-key-0123456789abcdef"},
        )
        async with serve_exchange(config, database_url) as ex:
            status, sold, _ = await ex.call(
                "POST", "/v1/leads",
                {"vertical": "auto_insurance", "lead": FULL_LEAD, "external_id": "form-77"},
            )  # fmt: skip
            assert (status, sold["status"]) == (200, "sold")
            ping = await ex.ping(lead=FULL_LEAD)  # a careless seller pings with PII
            assert (await ex.post(ping["ping_id"]))["status"] == "unsold"  # duplicate
            await ex.ctx.writer.flush()
        assert any(r.path == "/post" and b"Lovelace" in r.raw for r in sim.received("b"))
    dump = await table_dump(database_url)
    assert dump["sales"] and dump["pings"]
    for table, rows in dump.items():
        for value in PII_VALUES:
            assert value.encode() not in rows, (table, value)


async def _echo_pii(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
    """A careless buyer: rejects posts quoting the lead's phone."""
    if request.path == "/ping":
        body = b'{"bid": 30.0}'
    else:
        lead = orjson.loads(request.body)["lead"]
        body = orjson.dumps({"accepted": False, "reason": f"duplicate phone {lead['phone']}"})
    writer.write(response_head(200, ("Content-Length", str(len(body)))) + body)
    await writer.drain()
    return True


async def test_pii_echoed_by_a_buyer_is_not_stored(database_url: str) -> None:
    specs = [SimulatedBuyerSpec("b", bid_cents=(2000, 2000), lead_id_prefix="ada.lovelace@")]
    async with BuyerSimulator(specs) as sim, RawBuyer(_echo_pii) as careless:
        config = make_config([
            realtime_buyer(sim, "b", return_api_key=RETURN_KEY, return_window_days=5),
            {"id": "careless", "verticals": ["auto_insurance"], "ping_url": careless.url(),
             "post_url": careless.url("/post")},
        ])  # fmt: skip
        async with serve_exchange(config, database_url) as ex:
            status, sold, _ = await ex.call(
                "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": FULL_LEAD}
            )
            assert (status, sold["status"]) == (200, "sold")
            returned = {"ping_id": sold["ping_id"], "reason": "wrong number +14155552671"}
            assert (await ex.call("POST", "/v1/returns", returned, key=RETURN_KEY))[0] == 201
            await ex.ctx.writer.flush()
    for table, rows in (await table_dump(database_url)).items():
        for value in ("+14155552671", "ada.lovelace@"):
            assert value.encode() not in rows, (table, value)


# -- nothing secret in the logs --------------------------------------------------------------


async def _traffic_with_pii_and_secrets(url: str, sim: BuyerSimulator) -> None:
    async with aiohttp.ClientSession() as http:
        traffic = SellerTraffic(http, url)
        ping = await traffic.call("ping", {"vertical": "auto_insurance", "lead": FULL_LEAD})
        assert ping.status == 200
        await traffic.call("post", {"ping_id": ping.body["ping_id"], "lead": FULL_LEAD})
        for _ in range(3):
            await traffic.call("leads", {"vertical": "auto_insurance", "lead": FULL_LEAD,
                                         "external_id": "ext-1"})  # fmt: skip
        bad = {**FULL_LEAD, "email": "Ada.Lovelace@@Example.com", "phone": "+1 415 555 267"}
        answer = await traffic.call("leads", {"vertical": "auto_insurance", "lead": bad})
        assert answer.status == 422
        assert "Lovelace" not in json.dumps(answer.body)
        mismatch = {**FULL_LEAD, "state": "TX"}
        again = await traffic.call("ping", {"vertical": "auto_insurance", "lead": FULL_LEAD})
        await traffic.call("post", {"ping_id": again.body["ping_id"], "lead": mismatch})
        await SellerTraffic(http, url, key=WRONG_KEY).call("ping", {"lead": FULL_LEAD})
        await traffic.call("ping", {"vertical": "auto_insurance", "lead": PII})  # 422
        for path in ("/v1/reports/buyers", f"/v1/auctions/{again.body['ping_id']}"):
            async with http.get(url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}):
                pass
        async with http.get(url + "/v1/reports/sellers",
                            headers={"Authorization": f"Bearer {WRONG_KEY}"}):  # fmt: skip
            pass


async def test_a_real_run_logs_no_secret_and_no_pii(tmp_path: Path, database_url: str) -> None:
    """`lead-exchange serve` (JSON logs via exchange.telemetry.logs.configure_logging, at
    debug level) handles PII and secrets of every kind; its whole log is then searched for
    them."""
    specs = [
        SimulatedBuyerSpec("a", bid_cents=(3000, 3000), secret=BUYER_SECRET.encode(),
                           reject_rate=1.0),
        SimulatedBuyerSpec("b", bid_cents=(2000, 2000), post_error_rate=1.0),
        SimulatedBuyerSpec("c", bid_cents=(1000, 1000)),
    ]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        buyers = [realtime_buyer(sim, "a", secret=BUYER_SECRET), realtime_buyer(sim, "b"),
                  realtime_buyer(sim, "c", return_api_key=RETURN_KEY)]  # fmt: skip
        config = tmp_path / "exchange.yaml"
        config.write_text(config_text(buyers))
        log = tmp_path / "exchange.log"
        process = ExchangeProcess(config, database_url, log, extra_args=["--log-level", "debug"])
        try:
            await process.start()
            await _traffic_with_pii_and_secrets(process.url, sim)
        finally:
            process.kill()
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) > 5
    events = [json.loads(line) for line in lines]  # every line is a JSON object
    assert {"sale", "auction"} <= {e.get("event") for e in events}
    for secret in (SELLER_KEY, OTHER_SELLER_KEY, ADMIN_TOKEN, BUYER_SECRET, RETURN_KEY,
                   WRONG_KEY, *PII_VALUES, "Lovelace", "Analytical", "5552671"):  # fmt: skip
        assert secret not in text, secret


def test_console_logs_print_no_locals_of_a_failing_frame(tmp_path: Path) -> None:
    """In console mode (--console-logs, the demo) an unhandled exception is logged with a
    plain traceback: a rich one would print the frame's locals - leads, keys, the config."""
    script = textwrap.dedent(
        f"""
        import structlog
        from exchange.telemetry.logs import configure_logging
        configure_logging(json=False, level="debug")
        def handle(lead, api_key):
            raise ValueError("boom")
        try:
            handle({{"phone": "+14155552671"}}, {SELLER_KEY!r})
        except ValueError:
            structlog.get_logger("t").exception("unhandled_error")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    output = done.stdout + done.stderr
    assert "unhandled_error" in output and "ValueError" in output
    assert "+14155552671" not in output and SELLER_KEY not in output


# -- a gzip bomb sent to the seller API ------------------------------------------------------


async def test_a_gzip_bomb_request_is_refused_with_memory_bounded(ex: Exchange) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = b'{"vertical": "auto_insurance", "lead": {"zip": "90210", "state": "CA"}, "x": "'
    body = packer.compress(head)
    body += b"".join(packer.compress(b" " * 1024 * 1024) for _ in range(50))
    body += packer.compress(b'"}') + packer.flush()
    assert len(body) < 64 * 1024  # under max_body_bytes as sent
    async with RssPeak() as memory:
        status, answer, _ = await ex.call(
            "POST", "/v1/ping", raw=body, headers={"Content-Encoding": "gzip"}
        )
    print(f"\ngzip bomb request: {status}, rss +{memory.growth / 1e6:.1f} MB")
    assert status in (400, 413), answer
    assert answer["error"]["code"] in ("body_too_large", "malformed_json")
    assert memory.growth < 20 * 1024 * 1024
