"""Sub-IDs (SPEC section 11): a seller's traffic source on a ping, post or direct post is
checked, stored with the auction, refused by a buyer's ``sub_ids_deny`` as
``seller_blocked`` (also when set live), and reported per seller and sub-ID with the
seller report's figures."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from exchange.config import ConfigError
from exchange.core.subids import MAX_SUB_ID_CHARS
from exchange.tools.simulator import SimulatedBuyerSpec
from tests.api.market import running_market
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    OTHER_SELLER_KEY,
    PING_LEAD,
    SELLER_KEY,
    Exchange,
    make_config,
)

PICKY_KEY = "picky-buyer-api-key-0123456789"


def market(database_url: str, **picky: Any) -> AbstractAsyncContextManager[Exchange]:
    """Two buyers: ``picky`` (30.00, refuses the source ``bad-src``) and ``steady`` (20.00)."""
    return running_market(
        database_url,
        [
            SimulatedBuyerSpec("picky", secret=b"s-picky", bid_cents=(3000, 3000)),
            SimulatedBuyerSpec("steady", secret=b"s-steady", bid_cents=(2000, 2000)),
        ],
        {
            "picky": {
                "sub_ids_deny": ["bad-src"],
                "api_key": PICKY_KEY,
                "return_window_days": 30,
                **picky,
            },
        },
    )


async def _ping(ex: Exchange, key: str = SELLER_KEY, **extra: Any) -> dict[str, Any]:
    status, body, _ = await ex.call(
        "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD, **extra}, key=key
    )
    assert status == 200, body
    return dict(body)


def _outcomes(story: dict[str, Any]) -> dict[str, str]:
    return {row["buyer"]: row["outcome"] for row in story["buyers"]}


async def test_a_buyer_refuses_a_denied_sub_id_as_seller_blocked(database_url: str) -> None:
    async with market(database_url) as ex:
        blocked = await _ping(ex, sub_id="bad-src")
        story = await ex.story(blocked["ping_id"])
        assert _outcomes(story) == {"picky": "seller_blocked", "steady": "bid"}
        reason = next(r["reason"] for r in story["buyers"] if r["buyer"] == "picky")
        assert "sub_ids_deny" in reason
        assert blocked["price"] == 17.0  # steady's 20.00 at 0.85
        # Another source, or none, reaches the buyer; sub-IDs compare exactly.
        for extra in ({"sub_id": "good-src"}, {}, {"sub_id": "BAD-SRC"}):
            answer = await _ping(ex, **extra)
            assert answer["price"] == 25.5, extra
            assert _outcomes(await ex.story(answer["ping_id"]))["picky"] == "bid"
        # A direct post is screened the same way.
        status, sold, _ = await ex.call(
            "POST", "/v1/leads",
            {"vertical": "auto_insurance", "lead": FULL_LEAD, "sub_id": "bad-src"},
        )  # fmt: skip
        assert status == 200 and sold["status"] == "sold", sold
        story = await ex.story(sold["ping_id"])
        assert _outcomes(story)["picky"] == "seller_blocked"
        assert story["sub_id"] == "bad-src"
        assert story["sale"]["buyer"] == "steady"


async def test_a_sub_id_is_stored_with_the_auction_and_found_by_search(
    database_url: str,
) -> None:
    async with market(database_url) as ex:
        tagged = await _ping(ex, sub_id="fb campaign #3 été")
        untagged = await _ping(ex)
        assert (await ex.story(tagged["ping_id"]))["sub_id"] == "fb campaign #3 été"
        assert (await ex.story(untagged["ping_id"]))["sub_id"] is None
        status, page, _ = await ex.call(
            "GET", "/v1/auctions?sub_id=fb%20campaign%20%233%20%C3%A9t%C3%A9",
            key=ADMIN_TOKEN,
        )  # fmt: skip
        assert status == 200, page
        assert [a["ping_id"] for a in page["auctions"]] == [tagged["ping_id"]]
        assert page["auctions"][0]["sub_id"] == "fb campaign #3 été"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (17, "string"),
        ("", "1 to 64"),
        ("x" * (MAX_SUB_ID_CHARS + 1), "1 to 64"),
        ("line\nbreak", "printable"),
        ("nul\x00", "printable"),
        ("   ", "blank"),
    ],
)
async def test_a_bad_sub_id_is_refused_naming_it(database_url: str, value: Any, words: str) -> None:
    async with market(database_url) as ex:
        for path, body in (
            ("/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD}),
            ("/v1/leads", {"vertical": "auto_insurance", "lead": FULL_LEAD}),
        ):
            status, answer, _ = await ex.call("POST", path, {**body, "sub_id": value})
            assert status == 422, (path, answer)
            fields = answer["error"]["fields"]
            assert [f["loc"] for f in fields] == [["sub_id"]], fields
            assert words in fields[0]["msg"]
        pinged = await _ping(ex)
        status, answer, _ = await ex.call(
            "POST", "/v1/post", {"ping_id": pinged["ping_id"], "lead": FULL_LEAD, "sub_id": value}
        )
        assert status == 422, answer
        assert [f["loc"] for f in answer["error"]["fields"]] == [["sub_id"]]
        # Nothing was sold by the refused post: the ping is still there to post.
        assert (await ex.post(pinged["ping_id"]))["status"] == "sold"


async def test_a_sub_id_of_64_printable_characters_is_taken(database_url: str) -> None:
    async with market(database_url) as ex:
        longest = "Ω" + "a" * (MAX_SUB_ID_CHARS - 2) + "!"
        answer = await _ping(ex, sub_id=longest)
        assert (await ex.story(answer["ping_id"]))["sub_id"] == longest


async def test_a_post_may_repeat_or_leave_out_the_pings_sub_id_but_not_change_it(
    database_url: str,
) -> None:
    async with market(database_url) as ex:
        tagged = await _ping(ex, sub_id="src-a")
        status, answer, _ = await ex.call(
            "POST", "/v1/post", {"ping_id": tagged["ping_id"], "lead": FULL_LEAD, "sub_id": "src-b"}
        )
        assert status == 409, answer
        assert answer["error"]["fields"] == [{"loc": ["sub_id"], "msg": "differs from the ping"}]
        assert (await ex.post(tagged["ping_id"], sub_id="src-a"))["status"] == "sold"

        untagged = await _ping(ex)
        status, answer, _ = await ex.call(
            "POST", "/v1/post",
            {"ping_id": untagged["ping_id"], "lead": FULL_LEAD, "sub_id": "src-a"},
        )  # fmt: skip
        assert status == 409, answer
        assert (await ex.post(untagged["ping_id"]))["status"] == "sold"
        assert (await ex.story(untagged["ping_id"]))["sub_id"] is None

        left_out = await _ping(ex, sub_id="src-c")
        assert (await ex.post(left_out["ping_id"]))["status"] == "sold"
        assert (await ex.story(left_out["ping_id"]))["sub_id"] == "src-c"


FIGURES = ("pings", "bids", "posts", "sales", "revenue", "payout", "returns",
           "payout_reversed", "net_payout")  # fmt: skip


async def test_the_seller_report_by_sub_id_splits_the_seller_report_by_source(
    database_url: str,
) -> None:
    async with market(database_url) as ex:
        for sub_id, posted in (("src-a", True), ("src-a", True), ("src-a", False),
                               ("src-b", True), (None, True), (None, False)):  # fmt: skip
            extra = {"sub_id": sub_id} if sub_id is not None else {}
            answer = await _ping(ex, **extra)
            if posted:
                assert (await ex.post(answer["ping_id"]))["status"] == "sold"
                last_sold = answer["ping_id"]
        await _ping(ex, key=OTHER_SELLER_KEY, sub_id="src-a")  # another seller's src-a
        # The last sale (of a ping with no sub-ID) is returned by its buyer.
        status, returned, _ = await ex.call(
            "POST", "/v1/returns", {"ping_id": last_sold, "reason": "disconnected"}, key=PICKY_KEY
        )
        assert status == 201, returned

        status, report, _ = await ex.call("GET", "/v1/reports/sellers?by=sub_id", key=ADMIN_TOKEN)
        assert status == 200, report
        assert report["by"] == "sub_id"
        rows = {(r["seller"], r["sub_id"]): r for r in report["sellers"]}
        assert list(rows) == [
            ("acme-media", None), ("acme-media", "src-a"), ("acme-media", "src-b"),
            ("other-seller", "src-a"),
        ]  # fmt: skip
        a = rows[("acme-media", "src-a")]
        assert (a["pings"], a["bids"], a["posts"], a["sales"]) == (3, 3, 2, 2)
        assert (a["revenue"], a["payout"], a["acceptance_rate"]) == (60.0, 51.0, 1.0)
        none = rows[("acme-media", None)]
        assert (none["sales"], none["returns"], none["payout_reversed"]) == (1, 1, 25.5)
        assert none["net_payout"] == 0.0
        assert rows[("other-seller", "src-a")]["pings"] == 1

        # Summed over its sub-IDs, a seller's rows are its row of the seller report.
        _, by_seller, _ = await ex.call("GET", "/v1/reports/sellers", key=ADMIN_TOKEN)
        for seller in by_seller["sellers"]:
            mine = [r for r in report["sellers"] if r["seller"] == seller["seller"]]
            for figure in FIGURES:
                assert sum(r[figure] for r in mine) == pytest.approx(seller[figure]), figure

        # A seller's key reads its own rows only; a bad grouping is named.
        status, own, _ = await ex.call("GET", "/v1/reports/sellers?by=sub_id", key=SELLER_KEY)
        assert status == 200
        assert {r["seller"] for r in own["sellers"]} == {"acme-media"}
        status, bad, _ = await ex.call("GET", "/v1/reports/sellers?by=colour", key=ADMIN_TOKEN)
        assert status == 422
        assert bad["error"]["fields"][0]["loc"] == ["query", "by"]


async def test_sub_ids_deny_set_live_is_in_force_and_checked_like_the_yaml(
    database_url: str,
) -> None:
    async with market(database_url) as ex:
        status, changed, _ = await ex.call(
            "PATCH", "/v1/buyers/steady", {"sub_ids_deny": ["src-x"]}, key=ADMIN_TOKEN
        )
        assert status == 200, changed
        answer = await _ping(ex, sub_id="src-x")
        assert _outcomes(await ex.story(answer["ping_id"])) == {
            "picky": "bid",
            "steady": "seller_blocked",
        }
        status, refused, _ = await ex.call(
            "PATCH", "/v1/buyers/steady", {"sub_ids_deny": ["ok", "bad\tsrc"]}, key=ADMIN_TOKEN
        )
        assert status == 422, refused
        assert any("sub_ids_deny" in str(f) and "printable" in f["msg"]
                   for f in refused["error"]["fields"]), refused  # fmt: skip


def test_a_config_with_a_bad_sub_ids_deny_entry_names_it() -> None:
    buyer = {"id": "b", "verticals": ["auto_insurance"], "price": 5, "post_url": "http://x/p",
             "sub_ids_deny": ["fine", "x" * 65]}  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        make_config([buyer])
    assert "buyers[0].sub_ids_deny" in str(raised.value)
    assert "[1]" in str(raised.value)
