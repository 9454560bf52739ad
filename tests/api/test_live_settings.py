"""Live settings (SPEC section 11): buyers and sellers changed over the operator API on
one process are in force on every process sharing the database, validated as the YAML
is, recorded with who and when, and never show a secret back."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from exchange.core.config import hash_key
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

OPERATOR_TOKEN = "dana-operator-token-0123456789"
NEW_SELLER_KEY = "new-seller-key-0123456789abcdef"


def _config(sim: BuyerSimulator, **exchange: Any) -> str:
    return config_text(
        [
            realtime_buyer(sim, "steady", caps={"hourly": 1000}),
            realtime_buyer(sim, "high"),
        ],
        exchange={"admin_tokens": [{"name": "dana", "token": OPERATOR_TOKEN}], **exchange},
    )


def _specs() -> list[SimulatedBuyerSpec]:
    return [
        SimulatedBuyerSpec("steady", secret=b"steady-secret", bid_cents=(2000, 2000)),
        SimulatedBuyerSpec("high", secret=b"high-secret", bid_cents=(3000, 3000)),
    ]


async def _admin(
    ex: Exchange, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN
) -> tuple[int, Any]:
    status, answer, _ = await ex.call(method, path, body, key=token)
    return status, answer


async def _within(seconds: float, arrived: Callable[[], bool]) -> bool:
    """Poll until ``arrived`` holds or ``seconds`` pass; whether it arrived."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while not arrived():
        if loop.time() >= give_up:
            return False
        await asyncio.sleep(0.005)
    return True


async def test_pausing_a_buyer_on_one_process_stops_it_on_another_within_a_second_under_load(
    database_url: str,
) -> None:
    async with (
        BuyerSimulator(_specs()) as sim,
        running_exchange(_config(sim), database_url) as a,
        running_exchange(_config(sim), database_url) as b,
    ):
        before = b.ctx.settings_version
        results: list[tuple[int, Any]] = []
        stop = asyncio.Event()

        async def traffic() -> None:
            while not stop.is_set():
                status, body, _ = await b.call(
                    "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD}
                )
                results.append((status, body))

        senders = [asyncio.create_task(traffic()) for _ in range(4)]
        await asyncio.sleep(0.3)
        status, changed = await _admin(a, "PATCH", "/v1/buyers/high", {"enabled": False})
        assert status == 200, changed
        assert changed["buyer"]["enabled"] is False
        assert changed["version"] == before + 1
        assert await _within(1.0, lambda: b.ctx.settings_version == changed["version"])
        adopted_at = len(results)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*senders)

        assert results and all(status == 200 for status, _ in results), results[:3]
        after = [body for _, body in results[adopted_at + 8 :]]
        assert after, "no pings ran after the change"
        # Before the change the 30.00 buyer wins (payout 25.50); after, only the 20.00 one.
        assert {body["price"] for body in after} == {17.0}
        # Every auction ran on one version: both buyers considered and the higher bid won,
        # or only the steady buyer considered.
        for _, body in results:
            story = await b.story(body["ping_id"])
            considered = {row["buyer"] for row in story["buyers"]}
            assert considered in ({"steady", "high"}, {"steady"}), story
            expected = 25.5 if considered == {"steady", "high"} else 17.0
            assert body["price"] == expected, story


async def test_a_process_started_later_runs_the_latest_version(database_url: str) -> None:
    async with BuyerSimulator(_specs()) as sim:
        text = _config(sim)
        async with running_exchange(text, database_url) as a:
            status, _ = await _admin(a, "PATCH", "/v1/buyers/high", {"enabled": False})
            assert status == 200
            status, changed = await _admin(a, "PATCH", "/v1/buyers/steady", {"caps": {"daily": 10}})
            assert status == 200
        # The same YAML, which still has both buyers on and no daily cap: the stored wins.
        async with running_exchange(text, database_url) as later:
            assert later.ctx.settings_version == changed["version"]
            assert "high" not in later.ctx.buyers
            caps = {b.id: b.caps for b in later.ctx.loaded.config.buyers}
            assert caps["steady"].daily == 10 and caps["steady"].hourly == 1000
            ping = await later.ping()
            assert ping["price"] == 17.0


async def test_a_yaml_whose_buyers_were_edited_wins_at_the_next_start(database_url: str) -> None:
    async with BuyerSimulator(_specs()) as sim:
        async with running_exchange(_config(sim), database_url) as a:
            status, _ = await _admin(a, "PATCH", "/v1/buyers/steady", {"priority": 7})
            assert status == 200
        edited = config_text(
            [realtime_buyer(sim, "steady", caps={"hourly": 5})],
            exchange={"admin_tokens": [{"name": "dana", "token": OPERATOR_TOKEN}]},
        )
        async with running_exchange(edited, database_url) as later:
            assert set(later.ctx.buyers) == {"steady"}
            steady = later.ctx.loaded.config.buyers[0]
            assert (steady.priority, steady.caps.hourly) == (0, 5)
            status, listed = await _admin(later, "GET", "/v1/changes")
            assert [(c["action"], c["by"]) for c in listed["changes"]] == [
                ("bootstrap", "yaml"), ("update", "admin"), ("bootstrap", "yaml")
            ]  # fmt: skip


async def test_a_change_is_validated_as_the_yaml_is_and_refused_whole(database_url: str) -> None:
    async with (
        BuyerSimulator(_specs()) as sim,
        running_exchange(_config(sim), database_url) as ex,
    ):
        version = ex.ctx.settings_version
        status, answer = await _admin(
            ex, "PATCH", "/v1/buyers/steady",
            {"caps": {"daily": -1}, "timeout_ms": 5000, "colour": "red"},
        )  # fmt: skip
        assert status == 422, answer
        error = answer["error"]
        assert error["code"] == "invalid_request"
        locs = {tuple(f["loc"]): f for f in error["fields"]}
        assert ("caps", "daily") in locs
        assert locs[("caps", "daily")]["path"] == "buyers[0].caps.daily"
        assert ("colour",) in locs
        status, answer = await _admin(ex, "PATCH", "/v1/buyers/steady", {"timeout_ms": 5000})
        assert status == 422
        assert answer["error"]["fields"][0]["loc"] == ["timeout_ms"]
        assert "beyond exchange.tmax_ms" in answer["error"]["fields"][0]["msg"]
        newcomer = {"id": "newcomer", "api_key": "short", "payout_share": 0.8}
        status, answer = await _admin(ex, "POST", "/v1/sellers", newcomer)
        assert status == 422
        assert [f["loc"] for f in answer["error"]["fields"]] == [["api_key"]]
        # The cross checks too, as for a file: a vertical that does not exist.
        newcomer = {**newcomer, "api_key": NEW_SELLER_KEY, "verticals": ["boats"]}
        status, answer = await _admin(ex, "POST", "/v1/sellers", newcomer)
        assert status == 422
        assert answer["error"]["fields"] == [
            {"loc": ["verticals"], "msg": "unknown vertical 'boats'",
             "path": "sellers[2].verticals"}
        ]  # fmt: skip
        assert (await _admin(ex, "PATCH", "/v1/buyers/nobody", {"enabled": False}))[0] == 404
        assert (await _admin(ex, "PATCH", "/v1/buyers/steady", {"id": "other"}))[0] == 422
        status, _ = await _admin(ex, "POST", "/v1/buyers", {"id": "steady", "verticals": []})
        assert status == 409
        assert ex.ctx.settings_version == version
        status, listed = await _admin(ex, "GET", "/v1/changes")
        assert [c["action"] for c in listed["changes"]] == ["bootstrap"]


async def test_secrets_and_keys_are_never_shown_back(database_url: str) -> None:
    async with (
        BuyerSimulator(_specs()) as sim,
        running_exchange(_config(sim), database_url) as ex,
    ):
        status, shown = await _admin(ex, "GET", "/v1/buyers/steady")
        assert status == 200
        assert shown["buyer"]["secret"] == "********"
        # Sent back as shown, the masked secret keeps the real one: the buyer still bids.
        status, _ = await _admin(
            ex, "PATCH", "/v1/buyers/steady", {**shown["buyer"], "priority": 5}
        )
        assert status == 200
        assert (await ex.ping())["price"] == 25.5
        status, _ = await _admin(ex, "PATCH", "/v1/buyers/high", {"secret": "rotated-secret-xyz"})
        assert status == 200
        status, _ = await _admin(
            ex, "POST", "/v1/sellers",
            {"id": "newcomer", "api_key": NEW_SELLER_KEY, "payout_share": 0.8},
        )  # fmt: skip
        assert status == 201
        texts = []
        for path in ("/v1/buyers", "/v1/sellers", "/v1/settings", "/v1/changes",
                     "/v1/buyers/high", "/v1/sellers/newcomer"):  # fmt: skip
            status, answer = await _admin(ex, "GET", path)
            assert status == 200, answer
            texts.append(orjson.dumps(answer).decode())
        everything = "\n".join(texts)
        for secret in ("steady-secret", "high-secret", "rotated-secret-xyz", NEW_SELLER_KEY,
                       SELLER_KEY):  # fmt: skip
            assert secret not in everything
        assert "********" in everything
        # The rotated secret is in force: the simulator refuses its pings as unsigned.
        ping = await ex.ping()
        story = await ex.story(ping["ping_id"])
        outcomes = {row["buyer"]: row["outcome"] for row in story["buyers"]}
        assert outcomes == {"steady": "bid", "high": "error"}


async def test_changes_are_listed_with_version_time_and_the_token_name(database_url: str) -> None:
    async with (
        BuyerSimulator(_specs()) as sim,
        running_exchange(_config(sim), database_url) as ex,
    ):
        status, _ = await _admin(
            ex, "PATCH", "/v1/buyers/steady", {"caps": {"daily": 10}}, token=OPERATOR_TOKEN
        )
        assert status == 200
        status, _ = await _admin(ex, "PATCH", "/v1/buyers/steady", {"caps": {"hourly": None}})
        assert status == 200
        status, _ = await _admin(ex, "GET", "/v1/changes", token="not-a-token-at-all-000")
        assert status == 401
        status, listed = await _admin(ex, "GET", "/v1/changes?section=buyers&id=steady")
        assert status == 200
        latest, earlier = listed["changes"]
        assert (latest["by"], earlier["by"]) == ("admin", "dana")
        assert latest["version"] == earlier["version"] + 1
        assert earlier["before"]["caps"] == {"hourly": 1000}
        assert earlier["after"]["caps"] == {"hourly": 1000, "daily": 10}
        # Merge patch: null removes a key, back to its default.
        assert latest["after"]["caps"] == {"daily": 10}
        assert latest["at"].endswith("Z")
        status, page = await _admin(ex, "GET", "/v1/changes?limit=1")
        assert [c["version"] for c in page["changes"]] == [latest["version"]]
        status, rest = await _admin(ex, "GET", f"/v1/changes?before={page['next_before']}")
        assert [c["version"] for c in rest["changes"]] == [earlier["version"], 1]


async def test_a_new_seller_can_ping_every_process_within_a_second(database_url: str) -> None:
    async with (
        BuyerSimulator(_specs()) as sim,
        running_exchange(_config(sim), database_url) as a,
        running_exchange(_config(sim), database_url) as b,
    ):
        status, created = await _admin(
            a, "POST", "/v1/sellers",
            {"id": "newcomer", "api_key": NEW_SELLER_KEY, "payout_share": 0.5},
        )  # fmt: skip
        assert status == 201, created
        assert created["seller"]["api_key_sha256"] == "********"
        assert await _within(1.0, lambda: b.ctx.settings_version == created["version"])
        status, body, _ = await b.call(
            "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD},
            key=NEW_SELLER_KEY,
        )  # fmt: skip
        assert status == 200 and body["price"] == 15.0


async def test_changes_made_at_once_on_two_processes_are_both_kept(database_url: str) -> None:
    async with (
        BuyerSimulator(_specs()) as sim,
        running_exchange(_config(sim), database_url) as a,
        running_exchange(_config(sim), database_url) as b,
    ):
        answers = await asyncio.gather(
            *(
                _admin(ex, "PATCH", "/v1/buyers/steady", {"caps": {key: n}})
                for n, (ex, key) in enumerate(
                    [(a, "daily"), (b, "weekly"), (a, "monthly"), (b, "hourly")], start=100
                )
            )
        )
        assert [status for status, _ in answers] == [200] * 4
        versions = sorted(answer["version"] for _, answer in answers)
        assert versions == list(range(versions[0], versions[0] + 4))
        assert await _within(1.0, lambda: b.ctx.settings_version == versions[-1])
        caps = {x.id: x.caps for x in b.ctx.loaded.config.buyers}["steady"]
        assert (caps.daily, caps.weekly, caps.monthly, caps.hourly) == (100, 101, 102, 103)


async def test_the_yamls_secrets_never_reach_the_settings_table(database_url: str) -> None:
    async with (
        BuyerSimulator(_specs()) as sim,
        running_exchange(_config(sim), database_url) as ex,
    ):
        status, _ = await _admin(ex, "PATCH", "/v1/buyers/steady", {"priority": 4})
        assert status == 200
        status, _ = await _admin(ex, "PATCH", "/v1/sellers/acme-media", {"floor": 1.5})
        assert status == 200
        # Filled in from the YAML: the buyer still signs its pings with its secret, and
        # the seller's key is still its key.
        assert (await ex.ping())["price"] == 25.5
        rows = await ex.ctx.store.pool.fetch("SELECT document::text AS d FROM settings_versions")
    stored = "\n".join(r["d"] for r in rows)
    for secret in ("steady-secret", "high-secret", SELLER_KEY, hash_key(SELLER_KEY)):
        assert secret not in stored


async def test_a_paused_seller_is_refused_on_every_process_until_resumed(
    database_url: str,
) -> None:
    async with (
        BuyerSimulator(_specs()) as sim,
        running_exchange(_config(sim), database_url) as a,
        running_exchange(_config(sim), database_url) as b,
    ):
        pinged = await b.ping()
        status, changed = await _admin(a, "PATCH", "/v1/sellers/acme-media", {"enabled": False})
        assert status == 200, changed
        assert changed["seller"]["enabled"] is False
        assert await _within(1.0, lambda: b.ctx.settings_version == changed["version"])
        calls = (
            ("/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD}),
            ("/v1/post", {"ping_id": pinged["ping_id"], "lead": FULL_LEAD}),
            ("/v1/leads", {"vertical": "auto_insurance", "lead": FULL_LEAD}),
        )
        for path, body in calls:
            status, refused, _ = await b.call("POST", path, body)
            assert status == 403, (path, refused)
            assert refused["error"]["code"] == "forbidden"
            assert "acme-media is paused" in refused["error"]["message"]
        # Its own reads still work while paused.
        status, _, _ = await b.call("GET", "/v1/reports/sellers")
        assert status == 200
        status, changed = await _admin(a, "PATCH", "/v1/sellers/acme-media", {"enabled": True})
        assert status == 200
        assert await _within(1.0, lambda: b.ctx.settings_version == changed["version"])
        assert (await b.post(pinged["ping_id"]))["status"] == "sold"


async def _cli(ex: Exchange, *argv: str) -> tuple[int, str, str]:
    env = {**os.environ, "LEAD_EXCHANGE_ADMIN_TOKEN": OPERATOR_TOKEN}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", "admin", "--url", ex.url, *argv,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_adds_a_buyer_and_a_seller_from_files_and_pauses_a_seller(
    database_url: str, tmp_path: Path
) -> None:
    async with BuyerSimulator(_specs()) as sim, running_exchange(_config(sim), database_url) as ex:
        buyer = tmp_path / "buyer.yaml"
        buyer.write_text(
            "id: newcomer\nverticals: [auto_insurance]\nprice: 4.00\n"
            f"post_url: {sim.post_url('steady')}\nsecret: steady-secret\n"
            "sub_ids_deny: [bad-src]\n"
        )
        code, out, err = await _cli(ex, "add", "buyer", str(buyer), "--reason", "ticket 7")
        assert code == 0, err
        assert "buyer newcomer: added" in out
        assert "newcomer" in ex.ctx.buyers
        seller = tmp_path / "seller.json"
        seller.write_text(orjson.dumps({"id": "fresh", "api_key": NEW_SELLER_KEY,
                                        "payout_share": 0.5}).decode())  # fmt: skip
        code, out, err = await _cli(ex, "add", "seller", str(seller))
        assert code == 0, err
        status, body, _ = await ex.call(
            "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD},
            key=NEW_SELLER_KEY,
        )  # fmt: skip
        assert status == 200, body

        # A refused entry: every problem with its key path, nothing added.
        bad = tmp_path / "bad.yaml"
        bad.write_text("buyers:\n  - id: broken\n    verticals: [home]\n    price: -1\n")
        code, out, err = await _cli(ex, "add", "buyer", str(bad))
        assert code == 1
        assert "422" in err and "buyers[3].price" in err and "negative" in err
        code, _, err = await _cli(ex, "add", "buyer", str(tmp_path / "missing.yaml"))
        assert code == 1 and "cannot read it" in err

        code, out, err = await _cli(ex, "pause", "fresh", "--reason", "fraud check")
        assert code == 0, err
        status, refused, _ = await ex.call(
            "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD},
            key=NEW_SELLER_KEY,
        )  # fmt: skip
        assert status == 403, refused
        code, out, _ = await _cli(ex, "list", "sellers")
        assert code == 0
        assert next(r for r in out.splitlines() if r.startswith("fresh")).split()[1] == "paused"
        code, out, err = await _cli(ex, "resume", "fresh")
        assert code == 0, err
        status, _, _ = await ex.call(
            "POST", "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD},
            key=NEW_SELLER_KEY,
        )  # fmt: skip
        assert status == 200
