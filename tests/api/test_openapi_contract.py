"""exchange/api/openapi.yaml is the API as it runs: every route is documented and every
documented operation is routed, the closed word lists (outcomes, error codes, statuses)
are the code's, and real answers of a live exchange - one of every documented status of
every operation - fit the documented schemas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema_rs
import orjson
import yaml
from aiohttp import web

from exchange.api import errors as middleware
from exchange.api import openapi
from exchange.app import AppOptions, create_app
from exchange.core import errors
from exchange.core.outcomes import BidOutcome, PingStatus, PostOutcome, PostStatus, UnsoldReason
from exchange.core.suppression import MAX_ENTRIES
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.pool.pooling import PII_KEY, POOL, with_pool
from tests.support.faults import (
    Contract,
    ControlledPostgres,
    create_database,
    with_openapi,
)
from tests.support.faults import serve_exchange as serve
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    OTHER_SELLER_KEY,
    PING_LEAD,
    SELLER_KEY,
    Exchange,
    make_config,
    realtime_buyer,
)

LIMITED_KEY = "limited-test-key-0123456789"
RETURN_KEY = "ca-only-return-key-0123456789"
BUYER_KEY = "ca-only-api-key-0123456789"
PAUSED_KEY = "paused-seller-key-0123456789"
SUPPRESSION_KEY = "suppression-test-key-0123456789"
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def contract() -> Contract:
    return Contract()


def routed_operations(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method in HTTP_METHODS
    }


def test_every_route_is_documented_and_every_documented_operation_is_routed() -> None:
    # Building the app only wires routes; nothing connects until it starts.
    app = create_app(make_config([]), AppOptions(database_url="postgresql://unused/x"))
    routed = routed_operations(with_openapi(app))
    documented = contract().operations()
    assert routed - documented == set(), "routes missing from exchange/api/openapi.yaml"
    assert documented - routed == set(), "documented operations no route serves"


def test_document_is_valid_openapi_3_1_with_valid_schemas() -> None:
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    document = contract().document
    OPENAPI_31_VALIDATOR.validate(document)
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    # Every $ref resolves.
    text = orjson.dumps(document).decode()
    refs = {part.split('"')[0] for part in text.split('"$ref":"')[1:]}
    for ref in refs:
        assert contract().resolve({"$ref": ref}) is not None, ref


def test_document_version_is_the_package_version() -> None:
    assert contract().document["info"]["version"] == metadata.version("lead-exchange")


def _client_errors() -> list[type[errors.ClientError]]:
    found, todo = [], list(errors.ClientError.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_word_lists_are_the_codes() -> None:
    c = contract()
    schemas = c.document["components"]["schemas"]
    story = schemas["AuctionStory"]["properties"]
    assert set(story["buyers"]["items"]["properties"]["outcome"]["enum"]) == set(BidOutcome)
    assert set(story["post_attempts"]["items"]["properties"]["outcome"]["enum"]) == set(PostOutcome)
    assert set(schemas["PingAnswer"]["properties"]["status"]["enum"]) == set(PingStatus)
    assert set(schemas["PostAnswer"]["properties"]["status"]["enum"]) == set(PostStatus)
    assert set(schemas["PostAnswer"]["properties"]["reason"]["enum"]) == set(UnsoldReason)
    codes = {cls.code for cls in _client_errors()}
    codes |= {code for code, _ in middleware._HTTP_CODES.values()}
    assert set(schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"]) == codes
    # Every client error status of SPEC section 4 is a documented answer of some operation.
    documented = {
        int(status) for method, path in c.operations() for status in c.responses(method, path)
    }
    assert {cls.status for cls in _client_errors()} <= documented


# -- real answers -------------------------------------------------------------------------


class Recorder:
    """Sends requests to a live exchange and checks every answer against the contract."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.contract = contract()
        self.seen: set[tuple[str, str, int]] = set()
        self.problems: list[str] = []
        self.sold_ping_id = ""
        self.direct_ping_id = ""
        self.pooled_ping_id = ""

    async def send(
        self,
        method: str,
        template: str,
        path: str | None = None,
        body: Any = None,
        key: str | None = SELLER_KEY,
        raw: bytes | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        data = raw if raw is not None else (None if body is None else orjson.dumps(body))
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.ex.http.request(
            method, self.ex.url + (path or template), data=data, headers=headers
        ) as response:
            payload = await response.read()
            status, answer_headers = response.status, response.headers
        self.seen.add((method, template, status))
        self.problems += self.contract.problems(method, template, status, answer_headers, payload)
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            parsed = payload
        return status, parsed, answer_headers

    def unseen(self) -> set[tuple[str, str, int]]:
        documented = {
            (method, path, int(status))
            for method, path in self.contract.operations()
            for status in self.contract.responses(method, path)
        }
        return documented - self.seen


async def test_real_answers_fit_the_document(pg: ControlledPostgres) -> None:
    pg.ensure_running()
    database_url = await create_database(pg.dsn)
    specs = [SimulatedBuyerSpec("ca-only", bid_cents=(2000, 2000))]
    async with BuyerSimulator(specs) as sim:
        config = make_config(
            [realtime_buyer(sim, "ca-only", filters={"state": {"in": ["CA"]}},
                            return_api_key=RETURN_KEY, return_window_days=7,
                            api_key=BUYER_KEY), _delayed_buyer(sim)],
            exchange={"tmax_ms": 200, "max_body_bytes": 4096,
                      "suppression_hash_key": SUPPRESSION_KEY, "pii_key": PII_KEY},
            sellers=[
                {"id": "acme-media", "api_key": SELLER_KEY, "payout_share": 0.85, "floor": 2.0},
                {"id": "other-seller", "api_key": OTHER_SELLER_KEY, "payout_share": 0.8,
                 "verticals": []},
                {"id": "limited", "api_key": LIMITED_KEY, "payout_share": 0.8,
                 "rate_limit_per_s": 1},
                {"id": "paused", "api_key": PAUSED_KEY, "payout_share": 0.8, "enabled": False},
            ],
        )  # fmt: skip
        # The lead pool on (SPEC section 10), its start price above any bid.
        config = with_pool(config, {**POOL, "start_price": 50.0}, sellers=["acme-media"])
        async with serve(config, database_url) as ex:
            r = Recorder(ex)
            await _healthy_answers(r)
            await _seller_answers(r, ex, database_url)
            await _operator_answers(r)
            await _settings_answers(r)
            await _return_answers(r, ex)
            await _pool_answers(r)
            await _hold_answers(r)
            await _rate_limited_answers(r)
            await _suppression_answers(r, database_url)
            await _answers_with_the_database_away(r, pg)
            pg.ensure_running()
    assert r.problems == []
    assert r.unseen() == set(), "documented answers this test could not produce"


async def _healthy_answers(r: Recorder) -> None:
    assert (await r.send("GET", "/healthz", key=None))[0] == 200
    assert (await r.send("GET", "/readyz", key=None))[0] == 200
    assert (await r.send("GET", "/metrics", key=None))[0] == 200
    status, served, _ = await r.send("GET", "/openapi.json", key=None)
    assert status == 200
    assert served == yaml.safe_load(Path(openapi.__file__).with_name("openapi.yaml").read_text())


async def _seller_answers(r: Recorder, ex: Exchange, database_url: str) -> None:
    ping = {"vertical": "auto_insurance", "lead": PING_LEAD}
    status, bid, _ = await r.send("POST", "/v1/ping", body=ping)
    assert (status, bid["status"]) == (200, "bid")
    status, no_bid, _ = await r.send(
        "POST", "/v1/ping", body={**ping, "lead": {**PING_LEAD, "state": "TX"}}
    )
    assert (status, no_bid["status"]) == (200, "no_bid")
    post = {"ping_id": bid["ping_id"], "lead": FULL_LEAD}
    for op in ("/v1/ping", "/v1/post", "/v1/leads"):
        assert (await r.send("POST", op, raw=b'{"vertical": '))[0] == 400
        assert (await r.send("POST", op, body=ping, key="no-such-key-0123456789"))[0] == 401
        assert (await r.send("POST", op, raw=b'{"pad": "' + b"x" * 8000 + b'"}'))[0] == 413
        assert (await r.send("POST", op, body={"lead": 7}))[0] == 422
    for op in ("/v1/ping", "/v1/leads"):
        assert (await r.send("POST", op, body=ping, key=OTHER_SELLER_KEY))[0] == 403
    assert (await r.send("POST", "/v1/post", body=post, key=PAUSED_KEY))[0] == 403
    status, tagged, _ = await r.send("POST", "/v1/ping", body={**ping, "sub_id": "src-1"})
    assert (status, tagged["status"]) == (200, "bid")

    unknown = {"ping_id": str(uuid.uuid4()), "lead": FULL_LEAD}
    assert (await r.send("POST", "/v1/post", body=unknown))[0] == 404
    status, _, _ = await r.send(
        "POST", "/v1/post", body={**post, "lead": {**FULL_LEAD, "state": "TX"}}
    )
    assert status == 409
    status, sold, _ = await r.send("POST", "/v1/post", body=post)
    assert (status, sold["status"]) == (200, "sold")
    texan = {**FULL_LEAD, "state": "TX"}
    status, unsold, _ = await r.send(
        "POST", "/v1/post", body={"ping_id": no_bid["ping_id"], "lead": texan}
    )
    assert (status, unsold["status"]) == (200, "unsold")
    status, direct, _ = await r.send("POST", "/v1/leads", body={**ping, "lead": FULL_LEAD})
    assert (status, direct["status"]) == (200, "sold")

    # 410: a ping past its TTL that was never posted.
    status, late, _ = await r.send("POST", "/v1/ping", body=ping)
    ex.ctx.clock.advance(timedelta(seconds=121))
    try:
        status, _, _ = await r.send(
            "POST", "/v1/post", body={"ping_id": late["ping_id"], "lead": FULL_LEAD}
        )
        assert status == 410
    finally:
        ex.ctx.clock.reset()

    # An external_id bound to a ping whose auction was never recorded (its first attempt
    # failed): the retry runs the auction under the bound id.
    orphan = uuid.uuid4()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO external_ids (seller_id, external_id, ping_id) VALUES ($1, $2, $3)",
            "acme-media", "orphan-1", orphan,
        )  # fmt: skip
    finally:
        await conn.close()
    status, body, _ = await r.send("POST", "/v1/ping", body={**ping, "external_id": "orphan-1"})
    assert (status, body["ping_id"]) == (200, str(orphan))
    # 409 on a direct post: its external_id names a ping of a different lead.
    assert (await r.send("POST", "/v1/ping", body={**ping, "external_id": "pinged-1"}))[0] == 200
    other = {**FULL_LEAD, "state": "TX"}
    status, _, _ = await r.send(
        "POST", "/v1/leads", body={**ping, "lead": other, "external_id": "pinged-1"}
    )
    assert status == 409
    r.sold_ping_id = bid["ping_id"]
    r.direct_ping_id = direct["ping_id"]


async def _operator_answers(r: Recorder) -> None:
    ping_id = r.sold_ping_id
    story = f"/v1/auctions/{ping_id}"
    status, body, _ = await r.send("GET", "/v1/auctions/{ping_id}", story, key=ADMIN_TOKEN)
    assert status == 200 and body["sale"] is not None
    unknown = f"/v1/auctions/{uuid.uuid4()}"
    assert (await r.send("GET", "/v1/auctions/{ping_id}", unknown, key=ADMIN_TOKEN))[0] == 404
    assert (await r.send("GET", "/v1/auctions/{ping_id}", story, key=SELLER_KEY))[0] == 403
    assert (await r.send("GET", "/v1/auctions/{ping_id}", story, key=None))[0] == 401
    search = "/v1/auctions"
    status, page, _ = await r.send("GET", search, key=ADMIN_TOKEN)
    assert status == 200 and page["auctions"]
    assert (await r.send("GET", search, search + "?seller=acme-media", key=SELLER_KEY))[0] == 200
    assert (await r.send("GET", search, search + "?seller=limited", key=SELLER_KEY))[0] == 403
    assert (await r.send("GET", search, search + "?limit=0", key=ADMIN_TOKEN))[0] == 422
    assert (await r.send("GET", search, key="no-such-key-0123456789"))[0] == 401
    for report in ("/v1/reports/buyers", "/v1/reports/sellers"):
        status, body, _ = await r.send("GET", report, key=ADMIN_TOKEN)
        assert status == 200 and any(body.values())
        assert (await r.send("GET", report, report + "?from=yesterday", key=ADMIN_TOKEN))[0] == 422
        assert (await r.send("GET", report, key=None))[0] == 401
    buyers, sellers = "/v1/reports/buyers", "/v1/reports/sellers"
    status, own, _ = await r.send("GET", buyers, key=BUYER_KEY)
    assert status == 200 and [row["buyer"] for row in own["buyers"]] == ["ca-only"]
    assert (await r.send("GET", buyers, key=SELLER_KEY))[0] == 403
    status, split, _ = await r.send("GET", sellers, sellers + "?by=sub_id", key=ADMIN_TOKEN)
    assert status == 200 and split["sellers"]
    assert (await r.send("GET", sellers, sellers + "?by=colour", key=ADMIN_TOKEN))[0] == 422


async def _settings_answers(r: Recorder) -> None:
    """The live settings API (exchange/api/admin.py); its changes leave the buyer and
    sellers the later steps use as they were."""
    assert (await r.send("GET", "/v1/settings", key=ADMIN_TOKEN))[0] == 200
    assert (await r.send("GET", "/v1/settings", key=SELLER_KEY))[0] == 401
    changes = "/v1/changes"
    assert (await r.send("GET", changes, key=ADMIN_TOKEN))[0] == 200
    assert (await r.send("GET", changes, changes + "?limit=0", key=ADMIN_TOKEN))[0] == 422
    assert (await r.send("GET", changes, key=None))[0] == 401
    for section, entry_id in (("buyers", "ca-only"), ("sellers", "other-seller")):
        listing, one = f"/v1/{section}", f"/v1/{section}/{{id}}"
        assert (await r.send("GET", listing, key=ADMIN_TOKEN))[0] == 200
        assert (await r.send("GET", listing, key=None))[0] == 401
        path = f"/v1/{section}/{entry_id}"
        assert (await r.send("GET", one, path, key=ADMIN_TOKEN))[0] == 200
        assert (await r.send("GET", one, path, key=None))[0] == 401
        assert (await r.send("GET", one, listing + "/nobody", key=ADMIN_TOKEN))[0] == 404
        assert (await r.send("PATCH", one, path, body={"priority" if section == "buyers"
                             else "floor": 0}, key=ADMIN_TOKEN))[0] == 200  # fmt: skip
        assert (await r.send("PATCH", one, path, body={}, key=None))[0] == 401
        assert (await r.send("PATCH", one, listing + "/nobody", body={},
                             key=ADMIN_TOKEN))[0] == 404  # fmt: skip
        assert (await r.send("PATCH", one, path, body={"colour": "red"}, key=ADMIN_TOKEN))[0] == 422
        assert (await r.send("PATCH", one, path, raw=b"[1", key=ADMIN_TOKEN))[0] == 400
        assert (await r.send("POST", listing, raw=b"[1", key=ADMIN_TOKEN))[0] == 400
        existing = {"id": entry_id}
        assert (await r.send("POST", listing, body=existing, key=ADMIN_TOKEN))[0] == 409
        assert (await r.send("POST", listing, body={"id": "new-one"}, key=ADMIN_TOKEN))[0] == 422
        assert (await r.send("POST", listing, body=existing, key=None))[0] == 401
    new_buyer = {"id": "fixed-tier", "verticals": ["auto_insurance"], "price": 1.0,
                 "post_url": "http://127.0.0.1:9/post", "enabled": False}  # fmt: skip
    assert (await r.send("POST", "/v1/buyers", body=new_buyer, key=ADMIN_TOKEN))[0] == 201
    new_seller = {"id": "newcomer", "api_key": "newcomer-key-0123456789", "payout_share": 0.5}
    assert (await r.send("POST", "/v1/sellers", body=new_seller, key=ADMIN_TOKEN))[0] == 201


async def _return_answers(r: Recorder, ex: Exchange) -> None:
    path = "/v1/returns"
    good = {"ping_id": r.sold_ping_id, "reason": "wrong number"}
    assert (await r.send("POST", path, raw=b"[1", key=RETURN_KEY))[0] == 400
    assert (await r.send("POST", path, body=good, key=SELLER_KEY))[0] == 401
    assert (await r.send("POST", path, raw=b'"' + b"x" * 8000 + b'"', key=RETURN_KEY))[0] == 413
    assert (await r.send("POST", path, body={"ping_id": 5}, key=RETURN_KEY))[0] == 422
    unknown = {**good, "ping_id": str(uuid.uuid4())}
    assert (await r.send("POST", path, body=unknown, key=RETURN_KEY))[0] == 404
    assert (await r.send("POST", path, body=good, key=RETURN_KEY))[0] == 201
    assert (await r.send("POST", path, body=good, key=RETURN_KEY))[0] == 409
    ex.ctx.clock.advance(timedelta(days=8))
    try:
        late = {**good, "ping_id": r.direct_ping_id}
        assert (await r.send("POST", path, body=late, key=RETURN_KEY))[0] == 403
    finally:
        ex.ctx.clock.reset()


async def _pool_answers(r: Recorder) -> None:
    """The lead pool: a lead unsold for its seller's minimum, and one no buyer bid on."""
    wanted = {"vertical": "auto_insurance", "lead": FULL_LEAD, "min_price": 18.0}
    status, pricey, _ = await r.send("POST", "/v1/leads", body=wanted)
    assert (status, pricey["status"], pricey["reason"]) == (200, "unsold", "below_min_price")
    texan = {"vertical": "auto_insurance", "lead": {**FULL_LEAD, "state": "TX"}}
    status, unbid, _ = await r.send("POST", "/v1/leads", body=texan)
    assert (status, unbid["status"]) == (200, "unsold")
    listing = "/v1/pool"
    status, offers, _ = await r.send("GET", listing, listing + "?vertical=auto_insurance",
                                     key=BUYER_KEY)  # fmt: skip
    assert status == 200 and [o["lead_id"] for o in offers["offers"]] == [pricey["ping_id"]]
    assert (await r.send("GET", listing, listing + "?limit=0", key=BUYER_KEY))[0] == 422
    assert (await r.send("GET", listing, key=SELLER_KEY))[0] == 401
    claim = "/v1/pool/{lead_id}/claim"
    mine = f"/v1/pool/{pricey['ping_id']}/claim"
    assert (await r.send("POST", claim, mine, key=SELLER_KEY))[0] == 401
    filtered = f"/v1/pool/{unbid['ping_id']}/claim"
    assert (await r.send("POST", claim, filtered, key=BUYER_KEY))[0] == 403
    unknown = f"/v1/pool/{uuid.uuid4()}/claim"
    assert (await r.send("POST", claim, unknown, key=BUYER_KEY))[0] == 404
    status, won, _ = await r.send("POST", claim, mine, key=BUYER_KEY)
    assert status == 200 and won["lead"]["phone"] == "+14155552671"
    assert (await r.send("POST", claim, mine, key=BUYER_KEY))[0] == 409
    story = f"/v1/auctions/{pricey['ping_id']}"
    status, record, _ = await r.send("GET", "/v1/auctions/{ping_id}", story, key=ADMIN_TOKEN)
    assert status == 200 and record["pool"]["claimed_by"] == "ca-only"
    r.pooled_ping_id = unbid["ping_id"]


def _delayed_buyer(sim: BuyerSimulator) -> dict[str, Any]:
    """A fixed-price buyer of Nevada leads, off schedule now, that takes held leads."""
    opens = datetime.now(UTC) + timedelta(hours=2)
    return {"id": "nv-nights", "verticals": ["auto_insurance"], "price": 9.0,
            "post_url": sim.post_url("ca-only"), "filters": {"state": {"in": ["NV"]}},
            "schedule": {"timezone": "UTC", "start": f"{opens:%H}:00",
                         "end": f"{opens + timedelta(hours=2):%H}:00"},
            "delayed": {"hold_hours": 12}}  # fmt: skip


async def _hold_answers(r: Recorder) -> None:
    """Delayed delivery: a lead only the off-schedule buyer takes is queued and held."""
    nevadan = {"vertical": "auto_insurance", "lead": {**FULL_LEAD, "state": "NV"}}
    status, queued, _ = await r.send("POST", "/v1/leads", body=nevadan)
    assert (status, queued["status"], queued["price"]) == (200, "queued", None)
    story = f"/v1/auctions/{queued['ping_id']}"
    status, record, _ = await r.send("GET", "/v1/auctions/{ping_id}", story, key=ADMIN_TOKEN)
    assert status == 200 and record["post"]["status"] == "queued"
    assert record["hold"]["state"] == "held" and record["hold"]["tried"] == []


async def _rate_limited_answers(r: Recorder) -> None:
    ping = {"vertical": "auto_insurance", "lead": PING_LEAD}
    bodies = {"/v1/ping": ping, "/v1/post": {"ping_id": str(uuid.uuid4()), "lead": FULL_LEAD},
              "/v1/leads": {**ping, "lead": FULL_LEAD}}  # fmt: skip
    for op, body in bodies.items():
        statuses = [(await r.send("POST", op, body=body, key=LIMITED_KEY))[0] for _ in range(3)]
        assert 429 in statuses, (op, statuses)


async def _suppression_answers(r: Recorder, database_url: str) -> None:
    load, one, lists = "/v1/suppression/{list}", "/v1/suppression/dnc", "/v1/suppression"
    status, body, _ = await r.send("POST", load, one, body=["(415) 555-2671"], key=ADMIN_TOKEN)
    assert (status, body["added"]) == (200, 1)
    assert (await r.send("POST", load, one, raw=b"[1", key=ADMIN_TOKEN))[0] == 400
    assert (await r.send("POST", load, one, body=["x@y.com"], key=SELLER_KEY))[0] == 401
    too_many = ["1"] * (MAX_ENTRIES + 1)
    assert (await r.send("POST", load, one, body=too_many, key=ADMIN_TOKEN))[0] == 413
    assert (await r.send("POST", load, one + "?mode=all", body=[], key=ADMIN_TOKEN))[0] == 422
    # A list hashed under another key than the configured one: an append is refused.
    stale = "/v1/suppression/stale"
    assert (await r.send("POST", load, stale, body=["a@b.co"], key=ADMIN_TOKEN))[0] == 200
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE suppression_lists SET key_id = '\\x00' WHERE name = 'stale'")
    finally:
        await conn.close()
    assert (await r.send("POST", load, stale, body=["c@d.co"], key=ADMIN_TOKEN))[0] == 409
    status, listing, _ = await r.send("GET", lists, key=ADMIN_TOKEN)
    assert status == 200 and [x["name"] for x in listing["lists"]] == ["dnc", "stale"]
    assert (await r.send("GET", lists, key=None))[0] == 401
    assert (await r.send("DELETE", load, stale, key=ADMIN_TOKEN))[0] == 200
    assert (await r.send("DELETE", load, stale, key=ADMIN_TOKEN))[0] == 404
    assert (await r.send("DELETE", load, "/v1/suppression/Stale!", key=ADMIN_TOKEN))[0] == 422
    assert (await r.send("DELETE", load, one, key=None))[0] == 401


async def _answers_with_the_database_away(r: Recorder, pg: ControlledPostgres) -> None:
    pg.stop("fast")
    for _ in range(100):
        if (await r.send("GET", "/readyz", key=None))[0] == 503:
            break
        await asyncio.sleep(0.05)
    ping = {"vertical": "auto_insurance", "lead": PING_LEAD}
    for op, body in (
        ("/v1/ping", ping),
        ("/v1/post", {"ping_id": str(uuid.uuid4()), "lead": FULL_LEAD}),
        ("/v1/leads", {**ping, "lead": FULL_LEAD}),
    ):
        assert (await r.send("POST", op, body=body))[0] == 503
    story = f"/v1/auctions/{r.sold_ping_id}"
    assert (await r.send("GET", "/v1/auctions/{ping_id}", story, key=ADMIN_TOKEN))[0] == 503
    returned = {"ping_id": r.direct_ping_id, "reason": "wrong number"}
    assert (await r.send("POST", "/v1/returns", body=returned, key=RETURN_KEY))[0] == 503
    for report in ("/v1/reports/buyers", "/v1/reports/sellers", "/v1/auctions"):
        assert (await r.send("GET", report, key=ADMIN_TOKEN))[0] == 503
    assert (await r.send("GET", "/v1/pool", key=BUYER_KEY))[0] == 503
    claim = f"/v1/pool/{r.pooled_ping_id}/claim"
    assert (await r.send("POST", "/v1/pool/{lead_id}/claim", claim, key=BUYER_KEY))[0] == 503
    load, one = "/v1/suppression/{list}", "/v1/suppression/dnc"
    assert (await r.send("POST", load, one, body=["a@b.co"], key=ADMIN_TOKEN))[0] == 503
    assert (await r.send("DELETE", load, one, key=ADMIN_TOKEN))[0] == 503
    assert (await r.send("GET", "/v1/suppression", key=ADMIN_TOKEN))[0] == 503


def test_the_checker_refuses_answers_that_drift() -> None:
    c = contract()
    json_headers = {"Content-Type": "application/json"}
    good = {"ping_id": str(uuid.uuid4()), "status": "sold", "price": 17.0}
    assert c.problems("POST", "/v1/post", 200, json_headers, orjson.dumps(good)) == []
    extra = orjson.dumps({**good, "buyer": "big-insurer"})
    assert c.problems("POST", "/v1/post", 200, json_headers, extra)
    assert c.problems("POST", "/v1/post", 418, json_headers, orjson.dumps(good))
    wrong_code = orjson.dumps({"error": {"code": "forbidden", "message": "no"}})
    assert c.problems("POST", "/v1/post", 404, json_headers, wrong_code)
    no_retry_after = orjson.dumps({"error": {"code": "not_ready", "message": "later"}})
    assert c.problems("POST", "/v1/ping", 503, json_headers, no_retry_after)
    assert (
        c.problems("POST", "/v1/ping", 503, {**json_headers, "Retry-After": "1"}, no_retry_after)
        == []
    )
    assert c.problems("POST", "/v1/ping", 400, {"Content-Type": "text/plain"}, b"Bad Request")
