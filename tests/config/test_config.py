"""Configuration: validated whole at start, every problem named with file and key path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exchange.config import ConfigError, load_config, parse_config
from exchange.core.config import hash_key
from exchange.core.outcomes import BidOutcome, ClaimStatus, PostOutcome
from exchange.ledger.pool import create_pool, migrate
from tests.support.harness import SELLER_KEY, config_text

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid_and_uses_every_control() -> None:
    loaded = load_config(ROOT / "config" / "example.yaml", env={})
    config = loaded.config
    buyers = {b.id: b for b in config.buyers}
    assert any(b.caps.hourly and b.caps.daily_budget for b in buyers.values())
    assert any(b.schedule and b.schedule.holidays for b in buyers.values())
    assert any(b.delayed and b.schedule for b in buyers.values())
    assert any(b.dedupe_days for b in buyers.values())
    assert any(b.sellers_deny for b in buyers.values())
    assert any(b.sellers_allow for b in buyers.values())
    assert any(b.return_api_key for b in buyers.values())
    assert {b.tier for b in buyers.values()} >= {1, 2}
    vertical = config.verticals["auto_insurance"]
    assert vertical.tiers and vertical.dedupe_days and vertical.floor
    assert vertical.score and vertical.floor_by_score and loaded.scorers["auto_insurance"]
    assert any("score" in f for b in buyers.values() for f in b.vertical_filters.values())
    assert vertical.delivery == "shotgun" and vertical.reject_reasons_allowed
    assert vertical.suppress and config.exchange.suppression_hash_key
    assert vertical.pool and vertical.pool.enabled and config.exchange.pii_key
    assert any(s.pool for s in config.sellers) and any(b.api_key for b in buyers.values())
    assert {f.type for f in vertical.fields.values()} >= {"trustedform_url", "leadid_token"}
    assert any(s.max_sales == 2 for s in config.sellers)
    ops = {op for b in buyers.values() for f in b.filters.values() for op in f.model_fields_set}
    assert ops >= {"in_", "not_in", "gte", "lte", "prefix", "exists"}


def test_env_vars_expand_anywhere_with_defaults() -> None:
    text = config_text([]).replace("acme-test-key-0123456789", "${ACME_KEY}")
    loaded = parse_config(text, "x.yaml", env={"ACME_KEY": "from-the-environment-123"})
    assert loaded.config.sellers[0].api_key == "from-the-environment-123"
    text = text.replace("${ACME_KEY}", "${ACME_KEY:-default-key-0123456789}")
    assert parse_config(text, "x.yaml", env={}).config.sellers[0].api_key == (
        "default-key-0123456789"
    )


def test_missing_env_var_names_the_key_path() -> None:
    text = config_text([]).replace("acme-test-key-0123456789", "${NOT_SET_ANYWHERE}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "x.yaml", env={})
    assert any(
        p.startswith("x.yaml: sellers[0].api_key: environment variable NOT_SET_ANYWHERE")
        for p in caught.value.problems
    ), caught.value.problems


def test_every_problem_is_reported_together_with_file_and_path() -> None:
    doc = yaml.safe_load(config_text([]))
    doc["exchange"]["tmax_ms"] = 5
    doc["sellers"][0]["payout_share"] = 1.5
    doc["buyers"] = [
        {"id": "b", "verticals": ["pets"], "post_url": "ftp://x/post", "price": 1},
        {"id": "c", "verticals": ["auto_insurance"], "ping_url": "http://u:p@h/ping",
         "post_url": "http://h/post", "filters": {"phone": {"in": ["1"]}}},
    ]  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(doc), "bad.yaml", env={})
    problems = caught.value.problems
    assert all(p.startswith("bad.yaml: ") for p in problems)
    text = "\n".join(problems)
    assert "exchange.tmax_ms" in text
    assert "sellers[0].payout_share" in text
    assert "buyers[0].post_url" in text
    assert "buyers[1].ping_url" in text and "credentials" in text


def test_cross_references_are_checked() -> None:
    doc = yaml.safe_load(config_text([]))
    doc["buyers"] = [
        {"id": "b", "verticals": ["pets"], "post_url": "http://h/post", "price": 1},
        {"id": "c", "verticals": ["auto_insurance"], "ping_url": "http://h/ping",
         "post_url": "http://h/post", "timeout_ms": 5000, "filters": {"phone": {"in": ["1"]}},
         "sellers_deny": ["nobody"], "dedupe_days": 3},
    ]  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(doc), "bad.yaml", env={})
    text = "\n".join(caught.value.problems)
    assert "buyers[0].verticals: unknown vertical 'pets'" in text
    assert "buyers[1].timeout_ms: 5000 is beyond exchange.tmax_ms" in text
    assert "buyers[1].filters.phone: PII fields" in text
    assert "unknown seller 'nobody'" in text
    assert "exchange.dedupe_hash_key: required" in text


def test_buyer_api_keys_are_kept_as_hashes_and_never_shared() -> None:
    key = "buyer-own-key-0123456789"
    fixed = {"verticals": ["auto_insurance"], "post_url": "http://h/post", "price": 1}
    doc = yaml.safe_load(config_text([{"id": "b", "api_key": key, **fixed}]))
    loaded = parse_config(yaml.safe_dump(doc), "ok.yaml", env={})
    assert set(loaded.buyers_by_key_hash) == {hash_key(key)}
    assert key not in repr(loaded.config.buyers[0])
    doc["buyers"] = [
        {"id": "b", "api_key": key, **fixed},
        {"id": "c", "api_key_sha256": hash_key(key), **fixed},
        {"id": "d", "api_key": SELLER_KEY, **fixed},
    ]
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(doc), "bad.yaml", env={})
    text = "\n".join(caught.value.problems)
    assert "buyers: two buyers share one api_key" in text
    assert "buyers: a buyer's api_key is also a seller's api key" in text


def test_check_config_command_exits_non_zero_and_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(config_text([]).replace("tmax_ms: 1000", "tmax_ms: -1"))
    result = subprocess.run(
        [sys.executable, "-m", "exchange", "check-config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{bad}: exchange.tmax_ms" in result.stderr
    good = subprocess.run(
        [sys.executable, "-m", "exchange", "check-config", str(ROOT / "config" / "example.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr


def test_serve_refuses_a_bad_config_before_listening(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("verticals: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "exchange", "serve", "--config", str(bad), "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "verticals" in result.stderr


async def test_database_outcome_words_match_the_enums(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        assert await migrate(pool) == []  # idempotent
        checks = {
            r["table"]: r["def"]
            for r in await pool.fetch(
                "SELECT conrelid::regclass::text AS table, pg_get_constraintdef(oid) AS def"
                " FROM pg_constraint WHERE conname LIKE '%outcome_check'"
            )
        }
    finally:
        await pool.close()
    for outcome in BidOutcome:
        assert f"'{outcome.value}'" in checks["bid_outcomes"]
    for post_outcome in PostOutcome:
        assert f"'{post_outcome.value}'" in checks["post_attempts"]
    assert checks["bid_outcomes"].count("'") == 2 * len(BidOutcome)
    assert checks["post_attempts"].count("'") == 2 * len(PostOutcome)


async def test_database_post_statuses_match_the_claim_statuses(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        check = await pool.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'posts'::regclass AND conname = 'posts_status_check'"
        )
    finally:
        await pool.close()
    assert set(re.findall(r"'([a-z_]+)'", check)) == {status.value for status in ClaimStatus}
