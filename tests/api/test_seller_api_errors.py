"""Every client mistake of SPEC section 4 gets its status and a JSON error naming it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    FULL_LEAD,
    OTHER_SELLER_KEY,
    PING_LEAD,
    Exchange,
    make_config,
    realtime_buyer,
    running_exchange,
)


@pytest.fixture
async def ex(database_url: str) -> AsyncIterator[Exchange]:
    async with BuyerSimulator([SimulatedBuyerSpec("b", bid_cents=(2000, 2000))]) as sim:
        config = make_config(
            [realtime_buyer(sim, "b")],
            sellers=[
                {"id": "acme-media", "api_key": "acme-test-key-0123456789", "payout_share": 0.85,
                 "floor": 2.0},
                {"id": "other-seller", "api_key": OTHER_SELLER_KEY, "payout_share": 0.8,
                 "verticals": []},
                {"id": "limited", "api_key": "limited-test-key-012345", "payout_share": 0.8,
                 "rate_limit_per_s": 1},
            ],
            exchange={"max_body_bytes": 4096},
        )  # fmt: skip
        async with running_exchange(config, database_url) as exchange:
            yield exchange


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def locs(body: Any) -> set[tuple[Any, ...]]:
    return {tuple(f["loc"]) for f in body["error"]["fields"]}


async def test_malformed_json_is_400(ex: Exchange) -> None:
    status, body, _ = await ex.call("POST", "/v1/ping", raw=b'{"vertical": ')
    assert_error(status, body, 400, "malformed_json")


async def test_body_that_is_not_an_object_is_400(ex: Exchange) -> None:
    status, body, _ = await ex.call("POST", "/v1/ping", [1, 2])
    assert_error(status, body, 400, "malformed_json")


async def test_missing_or_unknown_key_is_401(ex: Exchange) -> None:
    status, body, _ = await ex.call("POST", "/v1/ping", {}, key=None)
    assert_error(status, body, 401, "unauthorized")
    status, body, _ = await ex.call("POST", "/v1/ping", {}, key="not-a-key-at-all-xxxxxx")
    assert_error(status, body, 401, "unauthorized")


async def test_vertical_not_allowed_for_seller_is_403(ex: Exchange) -> None:
    status, body, _ = await ex.call(
        "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD}, key=OTHER_SELLER_KEY
    )
    assert_error(status, body, 403, "forbidden")


async def test_unknown_ping_is_404(ex: Exchange) -> None:
    status, body, _ = await ex.call(
        "POST", "/v1/post", {"ping_id": "8d3c4a8e-3a38-4f4e-9d0e-3e1d2f1a0b7c", "lead": FULL_LEAD}
    )
    assert_error(status, body, 404, "not_found")


async def test_another_sellers_ping_is_404(ex: Exchange) -> None:
    answer = await ex.ping()
    status, body, _ = await ex.call(
        "POST", "/v1/post", {"ping_id": answer["ping_id"], "lead": FULL_LEAD},
        key="limited-test-key-012345",
    )  # fmt: skip
    assert_error(status, body, 404, "not_found")


async def test_post_that_disagrees_with_ping_is_409_and_names_the_field(ex: Exchange) -> None:
    answer = await ex.ping()
    status, body, _ = await ex.call(
        "POST", "/v1/post", {"ping_id": answer["ping_id"], "lead": {**FULL_LEAD, "state": "TX"}}
    )
    assert_error(status, body, 409, "conflict")
    assert locs(body) == {("lead", "state")}
    # Nothing was sold: the right lead can still be posted.
    assert (await ex.post(answer["ping_id"]))["status"] == "sold"


async def test_post_after_ttl_is_410(ex: Exchange) -> None:
    answer = await ex.ping()
    ex.ctx.clock.advance(timedelta(seconds=121))
    status, body, _ = await ex.call(
        "POST", "/v1/post", {"ping_id": answer["ping_id"], "lead": FULL_LEAD}
    )
    assert_error(status, body, 410, "ping_expired")


async def test_post_after_ttl_of_an_already_sold_ping_returns_the_sale(ex: Exchange) -> None:
    answer = await ex.ping()
    sold = await ex.post(answer["ping_id"])
    ex.ctx.clock.advance(timedelta(seconds=500))
    status, body, _ = await ex.call(
        "POST", "/v1/post", {"ping_id": answer["ping_id"], "lead": FULL_LEAD}
    )
    assert status == 200
    assert body == sold


async def test_body_over_the_limit_is_413(ex: Exchange) -> None:
    big = {"vertical": "auto_insurance", "lead": {**PING_LEAD, "pad": "x" * 8000}}
    status, body, _ = await ex.call("POST", "/v1/ping", big)
    assert_error(status, body, 413, "body_too_large")


async def test_invalid_lead_is_422_naming_every_bad_field(ex: Exchange) -> None:
    lead = {"zip": "9021", "state": "Atlantis", "age": 12, "credit_rating": "superb",
            "favourite_colour": "blue"}  # fmt: skip
    status, body, _ = await ex.call(
        "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": lead, "tmax_ms": "soon"}
    )
    assert_error(status, body, 422, "invalid_request")
    assert locs(body) == {
        ("lead", "zip"), ("lead", "state"), ("lead", "age"), ("lead", "credit_rating"),
        ("lead", "favourite_colour"), ("tmax_ms",),
    }  # fmt: skip


async def test_missing_required_fields_and_unknown_vertical_are_422(ex: Exchange) -> None:
    status, body, _ = await ex.call("POST", "/v1/ping", {"vertical": "pets", "lead": {}})
    assert_error(status, body, 422, "invalid_request")
    assert ("vertical",) in locs(body)
    status, body, _ = await ex.call("POST", "/v1/ping", {"vertical": "auto_insurance", "lead": {}})
    assert locs(body) == {("lead", "zip"), ("lead", "state")}


async def test_post_missing_pii_is_422(ex: Exchange) -> None:
    answer = await ex.ping()
    lead = {k: v for k, v in FULL_LEAD.items() if k != "phone"}
    status, body, _ = await ex.call(
        "POST", "/v1/post", {"ping_id": answer["ping_id"], "lead": lead}
    )
    assert_error(status, body, 422, "invalid_request")
    assert locs(body) == {("lead", "phone")}


async def test_bad_ping_id_and_min_price_are_422(ex: Exchange) -> None:
    status, body, _ = await ex.call(
        "POST", "/v1/post", {"ping_id": "nope", "lead": FULL_LEAD, "min_price": 1.234}
    )
    assert_error(status, body, 422, "invalid_request")
    assert locs(body) == {("ping_id",), ("min_price",)}


async def test_seller_over_its_rate_is_429_with_retry_after(ex: Exchange) -> None:
    statuses = []
    for _ in range(4):
        status, body, headers = await ex.call(
            "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD},
            key="limited-test-key-012345",
        )  # fmt: skip
        statuses.append(status)
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]
    assert_error(status, body, 429, "rate_limited")
    assert int(headers["Retry-After"]) >= 1


async def test_database_unavailable_is_503_with_retry_after_and_recovers(
    ex: Exchange, server_dsn: str, database_url: str
) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(server_dsn)
    try:
        # A real outage of this database: no new connections, existing ones killed.
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        status = 200
        for _ in range(40):
            status, body, headers = await ex.call(
                "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD}
            )
            if status == 503:
                break
            await asyncio.sleep(0.1)
        assert_error(status, body, 503, "not_ready")
        assert headers["Retry-After"] == "1"
        # A ping can meet the outage before the periodic database check does (its row
        # late, or its connection refused): readiness follows within the check's period.
        for _ in range(40):
            status, _, _ = await ex.call("GET", "/readyz", key=None)
            if status == 503:
                break
            await asyncio.sleep(0.1)
        assert status == 503
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    for _ in range(40):
        status, _, _ = await ex.call("GET", "/readyz", key=None)
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert status == 200
    assert (await ex.ping())["status"] == "bid"


async def test_unknown_route_and_method_are_json_errors(ex: Exchange) -> None:
    status, body, _ = await ex.call("GET", "/v1/nothing-here")
    assert_error(status, body, 404, "not_found")
    status, body, _ = await ex.call("GET", "/v1/ping")
    assert_error(status, body, 405, "method_not_allowed")


async def test_operator_api_needs_the_admin_token(ex: Exchange) -> None:
    answer = await ex.ping()
    status, body, _ = await ex.call("GET", f"/v1/auctions/{answer['ping_id']}", key=None)
    assert_error(status, body, 401, "unauthorized")
    # A seller's own key is known but not the operator's: the record is refused.
    status, body, _ = await ex.call("GET", f"/v1/auctions/{answer['ping_id']}")
    assert_error(status, body, 403, "forbidden")


async def test_ping_after_the_ledger_connections_were_dropped_still_answers(
    ex: Exchange, server_dsn: str, database_url: str
) -> None:
    """The batch writer keeps its connections between batches; one the server dropped
    meanwhile costs a reconnect, not the seller's answer."""
    assert (await ex.ping())["status"] == "bid"
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
    finally:
        await admin.close()
    await asyncio.sleep(0.1)
    answers = [await ex.ping() for _ in range(3)]
    assert [a["status"] for a in answers] == ["bid"] * 3
