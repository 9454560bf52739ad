"""exchange/core/storable.py against a real PostgreSQL: whatever it lets through is stored
and read back unchanged (as text, as jsonb, as bigint), what it cleans is storable, and
what it refuses PostgreSQL really refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.core.storable import (
    INT64_MAX,
    INT64_MIN,
    MAX_REASON_CHARS,
    clean_text,
    integer_problem,
    text_problem,
)
from exchange.ledger.pool import create_pool

# Every code point, surrogates and NUL included: what a buyer's JSON escapes can make.
ANY_TEXT = st.text(alphabet=st.characters(codec=None, categories=None), max_size=40)
EXAMPLES = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    await pool.execute("CREATE TABLE kept (t text, j jsonb, n bigint)")
    try:
        yield pool
    finally:
        await pool.close()


async def _stores(db: asyncpg.Pool, text: str | None = None, number: int | None = None) -> bool:
    try:
        row = await db.fetchrow(
            "INSERT INTO kept (t, j, n) VALUES ($1, $2, $3) RETURNING t, j, n",
            text,
            {"v": text, "n": number},
            number,
        )
    except (asyncpg.DataError, asyncpg.exceptions._base.DataError, TypeError, UnicodeError):
        return False
    assert row is not None
    assert row["t"] == text and row["j"] == {"v": text, "n": number} and row["n"] == number
    return True


@given(ANY_TEXT)
@EXAMPLES
async def test_text_is_refused_exactly_when_postgresql_would_refuse_it(
    db: asyncpg.Pool, text: str
) -> None:
    assert (text_problem(text) is None) == await _stores(db, text=text)


@given(ANY_TEXT)
@EXAMPLES
async def test_cleaned_free_text_is_always_stored(db: asyncpg.Pool, text: str) -> None:
    cleaned = clean_text(text, MAX_REASON_CHARS)
    assert cleaned is None or text_problem(cleaned) is None
    assert cleaned is None or len(cleaned) <= MAX_REASON_CHARS
    assert await _stores(db, text=cleaned)


@given(st.integers(min_value=-(2**70), max_value=2**70))
@EXAMPLES
async def test_integers_are_refused_exactly_when_bigint_would_refuse_them(
    db: asyncpg.Pool, number: int
) -> None:
    assert (integer_problem(number) is None) == await _stores(db, number=number)


async def test_the_int64_edges_are_stored(db: asyncpg.Pool) -> None:
    for number in (INT64_MIN, INT64_MAX):
        assert integer_problem(number) is None and await _stores(db, number=number)
    for number in (INT64_MIN - 1, INT64_MAX + 1):
        assert integer_problem(number) is not None and not await _stores(db, number=number)
