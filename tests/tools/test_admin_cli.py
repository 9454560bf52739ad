"""``lead-exchange admin`` against a running exchange: tables an operator can read, the
API's JSON with --json, changes made under the token's name, and an export that loads
back as the same settings."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import yaml

from exchange.config import parse_config
from exchange.tools.admin_cli import diff_text, parse_assignments
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    Exchange,
    config_text,
    realtime_buyer,
    running_exchange,
)

OPERATOR_TOKEN = "sam-operator-token-0123456789"


async def _admin(ex: Exchange, *argv: str, token: str = OPERATOR_TOKEN) -> tuple[int, str, str]:
    env = {**os.environ, "LEAD_EXCHANGE_ADMIN_TOKEN": token}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", "admin", "--url", ex.url, *argv,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_assignments_are_dotted_keys_with_yaml_values() -> None:
    patch = parse_assignments(["caps.daily=10", "filters.state.in=[CA, TX]", "caps.hourly=null"])
    assert patch == {
        "caps": {"daily": 10, "hourly": None},
        "filters": {"state": {"in": ["CA", "TX"]}},
    }
    assert diff_text({"caps": {"daily": 500}}, {"caps": {"daily": 10}}) == "caps.daily: 500 -> 10"


async def test_the_admin_command_lists_changes_and_exports_a_running_exchange(
    database_url: str, tmp_path: Path
) -> None:
    specs = [SimulatedBuyerSpec("big-insurer", secret=b"big-insurer-secret")]
    async with BuyerSimulator(specs) as sim:
        text = config_text(
            [realtime_buyer(sim, "big-insurer", caps={"daily": 500})],
            exchange={"admin_tokens": [{"name": "sam", "token": OPERATOR_TOKEN}]},
        )
        async with running_exchange(text, database_url) as ex:
            code, out, _ = await _admin(ex, "list", "buyers")
            assert code == 0
            header, row = out.splitlines()[:2]
            assert header.split() == ["ID", "STATUS", "VERTICALS", "BIDS", "CAPS", "PRIORITY"]
            assert row.split()[:2] == ["big-insurer", "active"]

            code, out, _ = await _admin(ex, "pause", "big-insurer", "--reason", "endpoint down")
            assert code == 0, out
            assert "big-insurer" not in ex.ctx.buyers
            code, out, _ = await _admin(ex, "resume", "big-insurer")
            assert code == 0
            code, out, err = await _admin(ex, "set", "big-insurer", "caps.daily=10", "priority=3")
            assert code == 0, err
            caps = ex.ctx.loaded.config.buyers[0].caps
            assert caps.daily == 10

            code, out, err = await _admin(ex, "set", "big-insurer", "caps.daily=-5")
            assert code == 1
            assert "buyers[0].caps.daily" in err

            code, out, _ = await _admin(ex, "changes")
            assert code == 0
            lines = out.splitlines()
            assert lines[0].split()[:5] == ["VERSION", "AT", "BY", "ACTION", "TARGET"]
            assert "caps.daily: 500 -> 10" in lines[1] and " sam " in lines[1]
            assert "enabled: false -> true" in lines[2]
            assert "endpoint down" in lines[3]

            code, out, _ = await _admin(ex, "--json", "show", "big-insurer")
            assert code == 0
            shown = json.loads(out)
            assert shown["buyer"]["secret"] == "********"
            assert shown["buyer"]["priority"] == 3

            code, out, _ = await _admin(ex, "list", "sellers", token="wrong-token-0000000000")
            assert code == 1 and out == ""

            (tmp_path / "base.yaml").write_text(text)
            exported = tmp_path / "live.yaml"
            code, _, err = await _admin(
                ex, "export", "--config", str(tmp_path / "base.yaml"), "-o", str(exported)
            )
            assert code == 0
            assert "BUYER_BIG_INSURER_SECRET" in err
            document = yaml.safe_load(exported.read_text())
            assert document["buyers"][0]["secret"] == "${BUYER_BIG_INSURER_SECRET}"
            loaded = parse_config(
                exported.read_text(), str(exported),
                env={"BUYER_BIG_INSURER_SECRET": "big-insurer-secret",
                     "SELLER_ACME_MEDIA_API_KEY": "acme-key-from-the-vault-01",
                     "SELLER_OTHER_SELLER_API_KEY": "other-key-from-the-vault-01"},
            )  # fmt: skip
            assert loaded.config.buyers[0].caps.daily == 10
            assert loaded.config.buyers[0].priority == 3
            # The base file's other sections are kept as they are.
            assert document["verticals"] == yaml.safe_load(text)["verticals"]
