"""Suppression lists (SPEC section 10): operators load phones and emails, kept as keyed
hashes only; a lead on one of its vertical's lists is refused at post and direct post,
unsold with reason suppressed, and no buyer sees it (checked on the buyers' side)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from exchange.config import ConfigError, parse_config
from exchange.core.fields import FieldSpec, LeadInvalid, LeadSchema
from exchange.core.outcomes import UnsoldReason
from exchange.core.suppression import (
    MAX_ENTRIES,
    HashedEntries,
    contact_hash,
    key_id,
    lead_hashes,
    normalise_entry,
)
from exchange.core.verdicts import before_walk
from exchange.ledger.store import Store
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    ADMIN_TOKEN,
    FULL_LEAD,
    PING_LEAD,
    SELLER_KEY,
    Exchange,
    config_text,
    realtime_buyer,
    running_exchange,
)

HASH_KEY = "suppression-test-key-0123456789"
OTHER_KEY = "another-suppression-key-0123456789"
# FULL_LEAD's phone and email, as an operator's file may spell them.
LISTED_PHONE = "415.555.2671"
LISTED_EMAIL = "ADA.LOVELACE@example.COM"
OTHER_PERSON = {**FULL_LEAD, "phone": "(212) 555-0142", "email": "grace@example.com"}


def suppressing_config(
    buyers: list[dict[str, Any]], key: str | None = HASH_KEY, lists: tuple[str, ...] = ("dnc",)
) -> str:
    exchange = {"suppression_hash_key": key} if key else {}
    doc = yaml.safe_load(config_text(buyers, exchange=exchange))
    if lists:
        doc["verticals"]["auto_insurance"]["suppress"] = list(lists)
    return yaml.safe_dump(doc, sort_keys=False)


def buyers_of(sim: BuyerSimulator) -> list[dict[str, Any]]:
    """A real-time buyer and a fixed-price one: both would take any lead."""
    fixed = sim.spec("fixed")
    return [
        realtime_buyer(sim, "live"),
        {"id": "fixed", "verticals": ["auto_insurance"], "price": 3.0,
         "post_url": sim.post_url("fixed"), "secret": fixed.secret.decode()},
    ]  # fmt: skip


SPECS = [SimulatedBuyerSpec("live", bid_cents=(2000, 2000)), SimulatedBuyerSpec("fixed")]


async def load(
    ex: Exchange, entries: Any, list_name: str = "dnc", mode: str | None = None
) -> tuple[int, Any]:
    query = f"?mode={mode}" if mode else ""
    status, body, _ = await ex.call(
        "POST", f"/v1/suppression/{list_name}{query}", entries, key=ADMIN_TOKEN
    )
    return status, body


async def direct_post(ex: Exchange, lead: dict[str, Any]) -> Any:
    status, body, _ = await ex.call(
        "POST", "/v1/leads", {"vertical": "auto_insurance", "lead": lead}
    )
    assert status == 200, body
    return body


async def suppressed_count(ex: Exchange) -> float:
    _, text, _ = await ex.call("GET", "/metrics", key=None)
    for line in text.decode().splitlines():
        if line.startswith("exchange_leads_suppressed_total{") and 'list="dnc"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no exchange_leads_suppressed_total series for dnc")


# -- the check at post time ------------------------------------------------------------------


async def test_a_suppressed_direct_post_reaches_no_buyer_and_ends_unsold_suppressed(
    database_url: str,
) -> None:
    async with BuyerSimulator(SPECS) as sim:
        config = suppressing_config(buyers_of(sim))
        async with running_exchange(config, database_url) as ex:
            status, loaded = await load(ex, [LISTED_PHONE])
            assert (status, loaded["added"]) == (200, 1)

            answer = await direct_post(ex, FULL_LEAD)
            assert answer == {"ping_id": answer["ping_id"], "status": "unsold",
                              "price": None, "reason": "suppressed"}  # fmt: skip
            assert sim.received("live") == [] and sim.received("fixed") == []
            story = await ex.story(answer["ping_id"])
            assert story["post"]["reason"] == "suppressed"
            assert story["post"]["suppressed_by"] == "dnc"
            assert story["buyers"] == [] and story["post_attempts"] == []
            assert await suppressed_count(ex) == 1

            sold = await direct_post(ex, OTHER_PERSON)
            assert sold["status"] == "sold"
            assert [r.path for r in sim.received("live")] == ["/ping", "/post"]
            assert (await ex.story(sold["ping_id"]))["post"]["suppressed_by"] is None
            assert await suppressed_count(ex) == 1


async def test_a_post_after_a_ping_of_a_suppressed_email_is_posted_to_no_buyer(
    database_url: str,
) -> None:
    async with BuyerSimulator(SPECS) as sim:
        config = suppressing_config(buyers_of(sim))
        async with running_exchange(config, database_url) as ex:
            pinged = await ex.ping(PING_LEAD)
            assert pinged["status"] == "bid"  # the ping holds no email: nothing to match
            assert (await load(ex, [LISTED_EMAIL]))[0] == 200
            answer = await ex.post(pinged["ping_id"], FULL_LEAD)
            assert (answer["status"], answer["reason"]) == ("unsold", "suppressed")
            assert await ex.post(pinged["ping_id"], FULL_LEAD) == answer  # a retry: the same
            assert [r.path for r in sim.received("live")] == ["/ping"]
            assert sim.received("fixed") == []
            story = await ex.story(pinged["ping_id"])
            assert story["post_attempts"] == []
            assert story["post"]["suppressed_by"] == "dnc"


async def test_only_the_verticals_own_lists_suppress_and_the_first_match_is_named(
    database_url: str,
) -> None:
    async with BuyerSimulator(SPECS) as sim:
        config = suppressing_config(buyers_of(sim), lists=("litigators", "dnc"))
        async with running_exchange(config, database_url) as ex:
            assert (await load(ex, [LISTED_PHONE], "unused"))[0] == 200
            assert (await direct_post(ex, FULL_LEAD))["status"] == "sold"
            assert (await load(ex, [LISTED_PHONE], "dnc"))[0] == 200
            assert (await load(ex, [LISTED_EMAIL], "litigators"))[0] == 200
            answer = await direct_post(ex, {**FULL_LEAD, "first_name": "Augusta"})
            assert answer["reason"] == "suppressed"
            story = await ex.story(answer["ping_id"])
            assert story["post"]["suppressed_by"] == "litigators"


# -- loading lists ---------------------------------------------------------------------------


async def test_a_load_counts_what_it_received_added_found_and_refused(database_url: str) -> None:
    async with running_exchange(suppressing_config([]), database_url) as ex:
        entries = [LISTED_PHONE, LISTED_EMAIL, "+1 (415) 555-2671", "not a phone", True, "",
                   4155550100, "grace@example"]  # fmt: skip
        status, body = await load(ex, entries)
        assert status == 200
        invalid = {e["index"]: e["msg"] for e in body.pop("invalid_entries")}
        assert body == {"list": "dnc", "mode": "append", "received": 8, "invalid": 4,
                        "added": 3, "already_present": 1, "removed": 0, "total": 3,
                        "used_by": ["auto_insurance"], "pool_offers_withdrawn": 0,
                        "held_leads_rechecked": 0}  # fmt: skip
        assert set(invalid) == {3, 4, 5, 7}
        assert invalid[3] == "is not a valid phone number"
        assert invalid[7] == "is not a valid email address"
        assert not any("grace" in msg for msg in invalid.values())

        status, body = await load(ex, ["4155550100", "(212) 555-0142"])
        assert (body["added"], body["already_present"], body["total"]) == (1, 1, 4)

        status, body = await load(ex, ["212-555-0142", "new@example.com"], mode="replace")
        assert (status, body["mode"]) == (200, "replace")
        assert (body["added"], body["already_present"], body["removed"], body["total"]) == (
            1, 1, 3, 2,
        )  # fmt: skip

        status, listing, _ = await ex.call("GET", "/v1/suppression", key=ADMIN_TOKEN)
        assert status == 200
        [dnc] = listing["lists"]
        assert (dnc["name"], dnc["entries"], dnc["loaded"], dnc["current_key"]) == (
            "dnc", 2, True, True,
        )  # fmt: skip

        status, gone, _ = await ex.call("DELETE", "/v1/suppression/dnc", key=ADMIN_TOKEN)
        assert (status, gone) == (200, {"list": "dnc", "removed": 2, "used_by": ["auto_insurance"]})
        _, listing, _ = await ex.call("GET", "/v1/suppression", key=ADMIN_TOKEN)
        assert listing["lists"][0]["loaded"] is False
        assert listing["lists"][0]["entries"] == 0
        assert (await ex.call("DELETE", "/v1/suppression/dnc", key=ADMIN_TOKEN))[0] == 404


async def test_bad_loads_are_refused_naming_what_is_wrong(database_url: str) -> None:
    async with running_exchange(suppressing_config([]), database_url) as ex:
        status, body, _ = await ex.call(
            "POST", "/v1/suppression/dnc", {"phones": []}, key=ADMIN_TOKEN
        )
        assert status == 400 and "JSON array" in body["error"]["message"]
        status, body = await load(ex, [LISTED_PHONE], mode="sometimes")
        assert status == 422
        assert body["error"]["fields"] == [{"loc": ["query", "mode"],
                                            "msg": "must be append or replace"}]  # fmt: skip
        status, body = await load(ex, [LISTED_PHONE], list_name="DNC!")
        assert status == 422 and body["error"]["fields"][0]["loc"] == ["path", "list"]
        status, body = await load(ex, ["nobody", 7.5])
        assert status == 422
        assert [f["loc"] for f in body["error"]["fields"]] == [["body", 0], ["body", 1]]
        status, body = await load(ex, [], mode="replace")
        assert status == 422 and "DELETE" in body["error"]["message"]
        status, body = await load(ex, ["1"] * (MAX_ENTRIES + 1))
        assert status == 413 and str(MAX_ENTRIES) in body["error"]["message"]
        assert (await ex.call("POST", "/v1/suppression/dnc", [LISTED_PHONE], key=SELLER_KEY))[
            0
        ] == 401
        assert (await ex.call("GET", "/v1/suppression", key=None))[0] == 401
        _, listing, _ = await ex.call("GET", "/v1/suppression", key=ADMIN_TOKEN)
        assert listing["lists"][0]["loaded"] is False  # nothing of the above was loaded


async def test_a_load_without_a_suppression_hash_key_is_a_conflict(database_url: str) -> None:
    async with running_exchange(suppressing_config([], key=None, lists=()), database_url) as ex:
        status, body = await load(ex, [LISTED_PHONE])
        assert status == 409 and "suppression_hash_key" in body["error"]["message"]


async def test_entries_are_kept_only_as_keyed_hashes(database_url: str) -> None:
    async with running_exchange(suppressing_config([]), database_url) as ex:
        assert (await load(ex, [LISTED_PHONE, LISTED_EMAIL]))[0] == 200
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM suppression_entries")
        listed = await conn.fetch("SELECT * FROM suppression_lists")
    finally:
        await conn.close()
    dump = orjson.dumps([dict(r) for r in [*rows, *listed]], default=lambda v: v.hex())
    for value in (b"4155552671", b"415.555", b"ada.lovelace", b"ADA.LOVELACE"):
        assert value not in dump
    key = HASH_KEY.encode()
    expected = {
        hmac.new(key, b"phone:+14155552671", hashlib.sha256).digest(),
        hmac.new(key, b"email:ada.lovelace@example.com", hashlib.sha256).digest(),
    }
    assert {bytes(r["hash"]) for r in rows} == expected


async def test_a_list_loaded_under_another_key_is_flagged_and_must_be_replaced(
    database_url: str,
) -> None:
    async with running_exchange(suppressing_config([], key=OTHER_KEY), database_url) as ex:
        assert (await load(ex, [LISTED_PHONE]))[0] == 200
    async with running_exchange(suppressing_config([]), database_url) as ex:
        _, listing, _ = await ex.call("GET", "/v1/suppression", key=ADMIN_TOKEN)
        assert listing["lists"][0]["current_key"] is False
        status, body = await load(ex, [LISTED_EMAIL])
        assert status == 409 and "mode=replace" in body["error"]["message"]
        status, body = await load(ex, [LISTED_PHONE], mode="replace")
        assert (status, body["added"], body["removed"], body["total"]) == (200, 1, 1, 1)
        _, listing, _ = await ex.call("GET", "/v1/suppression", key=ADMIN_TOKEN)
        assert listing["lists"][0]["current_key"] is True


async def test_a_replace_is_atomic_to_a_concurrent_look_up(store: Store) -> None:
    key = b"k" * 32
    old = [os.urandom(32) for _ in range(30_000)]
    new = [os.urandom(32) for _ in range(30_000)]
    now = datetime.now(UTC)
    await store.load_suppression("dnc", old, False, key_id(key), now)
    probe = [old[0], new[0]]
    seen: list[str | None] = []
    replacing = asyncio.ensure_future(store.load_suppression("dnc", new, True, key_id(key), now))
    while not replacing.done():
        seen.append(await store.suppressed_in(probe, ("dnc",)))
    change = await replacing
    assert (change.added, change.removed, change.total) == (30_000, 30_000, 30_000)
    assert seen and set(seen) == {"dnc"}  # old or new, never neither
    assert await store.suppressed_in([old[0]], ("dnc",)) is None
    assert await store.suppressed_in([new[-1]], ("dnc",)) == "dnc"
    assert await store.suppressed_in([new[-1]], ("other",)) is None


# -- config ----------------------------------------------------------------------------------


def _config_problems(vertical_changes: dict[str, Any], key: str | None = None) -> list[str]:
    doc = yaml.safe_load(config_text([], exchange={"suppression_hash_key": key} if key else {}))
    doc["verticals"]["auto_insurance"].update(vertical_changes)
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(doc), "test.yaml", env={})
    return caught.value.found


def test_a_vertical_that_suppresses_needs_the_hash_key() -> None:
    assert _config_problems({"suppress": ["dnc"]}) == [
        "exchange.suppression_hash_key: required when any vertical has suppress lists"
    ]


def test_suppress_names_distinct_lists_of_a_vertical_with_contact_fields() -> None:
    [repeated] = _config_problems({"suppress": ["dnc", "dnc"]}, key=HASH_KEY)
    assert repeated.startswith("verticals.auto_insurance.suppress:")
    [bad_name] = _config_problems({"suppress": ["Do Not Call"]}, key=HASH_KEY)
    assert bad_name.startswith("verticals.auto_insurance.suppress[0]:")
    no_contacts = {"fields": {"zip": {"type": "zip"}}, "suppress": ["dnc"]}
    assert _config_problems(no_contacts, key=HASH_KEY) == [
        "verticals.auto_insurance.suppress: the vertical has no phone or email field"
    ]


# -- the core --------------------------------------------------------------------------------

SCHEMA = LeadSchema(
    "v",
    {"phone": FieldSpec(type="phone", pii=True), "alt_phone": FieldSpec(type="phone", pii=True),
     "email": FieldSpec(type="email", pii=True), "zip": FieldSpec(type="zip")},
)  # fmt: skip
PHONE_SPELLINGS = ["(415) 555-2671", "415-555-2671", "+1 415 555 2671", "14155552671",
                   "4155552671", 4155552671, " 415.555.2671 "]  # fmt: skip


@given(st.sampled_from(PHONE_SPELLINGS), st.sampled_from(PHONE_SPELLINGS))
def test_a_listed_phone_matches_the_lead_however_either_spells_it(
    listed: object, posted: object
) -> None:
    key = HASH_KEY.encode()
    entry = contact_hash(key, *normalise_entry(listed))
    lead = SCHEMA.validate_full({"alt_phone": posted, "zip": "90210"})
    assert lead_hashes(lead, SCHEMA, key) == [entry]


@given(st.emails(), st.booleans())
def test_a_listed_email_matches_the_lead_whatever_its_case(email: str, upper: bool) -> None:
    key = HASH_KEY.encode()
    try:
        lead = SCHEMA.validate_full({"email": email})
    except LeadInvalid:
        return  # an address the lead field refuses is never on a lead
    entry = contact_hash(key, *normalise_entry(email.upper() if upper else email))
    assert lead_hashes(lead, SCHEMA, key) == [entry]


@given(st.lists(st.one_of(st.sampled_from(PHONE_SPELLINGS), st.emails(), st.text(max_size=12),
                          st.integers(), st.none(), st.booleans()), max_size=40))  # fmt: skip
def test_every_entry_is_counted_once_as_invalid_or_hashed(entries: list[object]) -> None:
    hashed = HashedEntries(HASH_KEY.encode())
    hashed.add(entries[:7])
    hashed.add(entries[7:])
    assert hashed.received == len(entries)
    assert [e.index for e in hashed.invalid] == sorted({e.index for e in hashed.invalid})
    assert hashed.valid >= len(hashed.hashes)
    # Messages name the expectation, never the value: a fixed handful of them.
    assert {e.msg for e in hashed.invalid} <= {
        "is not a valid phone number",
        "is not a valid email address",
        "must be at most 254 characters",
        "must be a phone number or an email address",
        "is blank: must be a phone number or an email address",
    }


@given(st.booleans(), st.booleans(), st.booleans())
def test_a_suppressed_lead_is_refused_before_any_other_reason(
    sold: bool, had_bids: bool, walkable: bool
) -> None:
    verdict = before_walk(sold, had_bids, walkable, suppressed=True)
    assert verdict is not None and verdict.reason is UnsoldReason.SUPPRESSED
    unsuppressed = before_walk(sold, had_bids, walkable)
    assert unsuppressed is None or unsuppressed.reason is not UnsoldReason.SUPPRESSED
