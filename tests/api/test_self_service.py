"""Self-service (SPEC section 11): a buyer's own ``api_key`` reads its own row of the
buyer report and nothing of another buyer's; a seller's key reads its own auctions and
report only, whatever id, filter or cursor it sends."""

from __future__ import annotations

import base64
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

from exchange.tools.simulator import SimulatedBuyerSpec
from tests.api.market import running_market
from tests.support.harness import (
    ADMIN_TOKEN,
    OTHER_SELLER_KEY,
    PING_LEAD,
    SELLER_KEY,
    Exchange,
)

HIGH_KEY = "high-buyer-api-key-0123456789"
LOW_KEY = "low-buyer-api-key-0123456789"


def market(database_url: str) -> AbstractAsyncContextManager[Exchange]:
    return running_market(
        database_url,
        [
            SimulatedBuyerSpec("high", secret=b"s-high", bid_cents=(3000, 3000)),
            SimulatedBuyerSpec("low", secret=b"s-low", bid_cents=(1000, 1000)),
            SimulatedBuyerSpec("keyless", secret=b"s-keyless", bid_cents=(500, 500)),
        ],
        {"high": {"api_key": HIGH_KEY}, "low": {"api_key": LOW_KEY}},
    )


async def _get(ex: Exchange, path: str, key: str) -> tuple[int, Any]:
    status, body, _ = await ex.call("GET", path, key=key)
    return status, body


async def _sold(ex: Exchange, key: str = SELLER_KEY) -> str:
    status, body, _ = await ex.call(
        "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD}, key=key
    )
    assert status == 200, body
    if key == SELLER_KEY:
        assert (await ex.post(body["ping_id"]))["status"] == "sold"
    return str(body["ping_id"])


async def test_a_buyer_key_reads_its_own_buyer_report_row_and_no_other(
    database_url: str,
) -> None:
    async with market(database_url) as ex:
        for _ in range(3):
            await _sold(ex)
        status, everyone = await _get(ex, "/v1/reports/buyers", ADMIN_TOKEN)
        assert status == 200
        assert sorted(r["buyer"] for r in everyone["buyers"]) == ["high", "keyless", "low"]
        admin_rows = {r["buyer"]: r for r in everyone["buyers"]}
        for key, buyer in ((HIGH_KEY, "high"), (LOW_KEY, "low")):
            for query in ("", "?from=2000-01-01T00:00:00Z", "?buyer=high&buyer=low"):
                status, own = await _get(ex, f"/v1/reports/buyers{query}", key)
                assert status == 200, own
                assert [r["buyer"] for r in own["buyers"]] == [buyer], (key, query)
                if not query:
                    assert own["buyers"][0] == admin_rows[buyer]
        assert admin_rows["high"]["revenue"] == 90.0


async def test_other_keys_cannot_read_the_buyer_report(database_url: str) -> None:
    async with market(database_url) as ex:
        await _sold(ex)
        status, refused = await _get(ex, "/v1/reports/buyers", SELLER_KEY)
        assert status == 403
        assert "seller" in refused["error"]["message"]
        status, _ = await _get(ex, "/v1/reports/buyers", "no-such-key-0123456789")
        assert status == 401
        # A buyer's key opens neither the sellers' report nor the auctions.
        for path in ("/v1/reports/sellers", "/v1/auctions"):
            status, _ = await _get(ex, path, HIGH_KEY)
            assert status == 401, path


def _cursor_of(ping_id: str) -> str:
    return base64.urlsafe_b64encode(uuid.UUID(ping_id).bytes).decode().rstrip("=")


async def test_a_seller_never_reads_another_sellers_auctions(database_url: str) -> None:
    async with market(database_url) as ex:
        mine = [await _sold(ex) for _ in range(3)]
        theirs = [await _sold(ex, OTHER_SELLER_KEY) for _ in range(3)]
        newest = str(uuid.UUID(int=(1 << 128) - 1))

        # By id: an auction's record is the operator's.
        for ping_id in (theirs[0], mine[0]):
            status, body = await _get(ex, f"/v1/auctions/{ping_id}", SELLER_KEY)
            assert status == 403, body
        # By search naming the other seller, or filtering on its auctions' traits.
        status, _ = await _get(ex, "/v1/auctions?seller=other-seller", SELLER_KEY)
        assert status == 403
        status, page = await _get(ex, "/v1/auctions?buyer=high&limit=500", SELLER_KEY)
        assert status == 200
        assert {a["ping_id"] for a in page["auctions"]} == set(mine)
        # By cursor: made from the other seller's ids, from any id, or from the
        # operator's own pages, a cursor is a position only: the page is still its own.
        for cursor_id in (*theirs, newest):
            status, page = await _get(
                ex, f"/v1/auctions?cursor={_cursor_of(cursor_id)}&limit=500", SELLER_KEY
            )
            assert status == 200, page
            assert {a["seller"] for a in page["auctions"]} <= {"acme-media"}
            assert {a["ping_id"] for a in page["auctions"]} <= set(mine)
        status, admin_page = await _get(ex, "/v1/auctions?limit=1", ADMIN_TOKEN)
        cursor = admin_page["next_cursor"]
        assert cursor is not None
        seen: list[str] = []
        while cursor is not None:
            status, page = await _get(ex, f"/v1/auctions?limit=1&cursor={cursor}", SELLER_KEY)
            assert status == 200
            seen.extend(a["ping_id"] for a in page["auctions"])
            cursor = page["next_cursor"]
        assert set(seen) <= set(mine)
        # The seller report and its sub-ID split: its own rows only.
        for query in ("", "?by=sub_id"):
            status, report = await _get(ex, f"/v1/reports/sellers{query}", OTHER_SELLER_KEY)
            assert status == 200
            assert {r["seller"] for r in report["sellers"]} == {"other-seller"}
