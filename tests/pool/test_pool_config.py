"""The pool's configuration: checked whole at load like every other key, each problem
named by its key path."""

from __future__ import annotations

import pytest
import yaml

from exchange.config import ConfigError, parse_config
from tests.pool.pooling import POOL, pool_config


def problems_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "pool.yaml", env={})
    return "\n".join(caught.value.problems)


def test_a_pool_needs_the_pii_key() -> None:
    doc = yaml.safe_load(pool_config([]))
    del doc["exchange"]["pii_key"]
    found = problems_of(yaml.safe_dump(doc))
    assert "pool.yaml: verticals.auto_insurance.pool: needs exchange.pii_key" in found


def test_a_switched_off_pool_needs_no_key() -> None:
    doc = yaml.safe_load(pool_config([], pool={**POOL, "enabled": False}))
    del doc["exchange"]["pii_key"]
    assert parse_config(yaml.safe_dump(doc), "pool.yaml", env={}).config


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"floor_price": 30.00}, "floor_price must not exceed start_price"),
        ({"floor_price": 0}, "floor_price must be above zero"),
        ({"start_price": 20.001}, "verticals.auto_insurance.pool.start_price"),
        ({"visibility": "peek"}, "verticals.auto_insurance.pool.visibility"),
        ({"max_age_hours": 0}, "verticals.auto_insurance.pool.max_age_hours"),
    ],
)
def test_bad_pool_settings_are_named(change: dict[str, object], named: str) -> None:
    assert named in problems_of(pool_config([], pool={**POOL, **change}))
