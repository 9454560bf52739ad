"""Shared fixtures: a real PostgreSQL (embedded pgserver, or DATABASE_URL when set) with a
fresh database per test, the ledger store on it, and the loopback exchange harness."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, settings

from exchange.ledger.pool import create_pool, migrate
from exchange.ledger.store import Store
from exchange.server.embedded import EmbeddedPostgres
from exchange.telemetry.logs import configure_logging
from tests.support.faults import ControlledPostgres, controlled_postgres, create_database
from tests.support.harness import with_database

configure_logging(json=False, level="debug")

# Hypothesis profiles. "ci", the default, keeps Hypothesis' own example counts (tests that
# set max_examples keep theirs); the live fuzzers, tests/faults/test_fuzz_buyer_answers.py and
# tests/faults/test_fuzz_seller_bodies.py, run a bounded count of their own under it (see
# tests/support/fuzzing.py). "deep" (`pytest --hypothesis-profile=deep`) runs thousands of
# examples with no deadline, the live fuzzers included.
settings.register_profile("ci", print_blob=True)
settings.register_profile(
    "deep",
    max_examples=3000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    # pgserver run as root hands the cluster to a `pgserver` user: its directory must be
    # reachable by that user, which pytest's private tmp dirs are not.
    parent = Path(tempfile.mkdtemp(prefix="lead-exchange-test-"))
    parent.chmod(0o755)
    embedded = EmbeddedPostgres(parent)
    try:
        yield embedded.start()
    finally:
        embedded.stop()


@pytest.fixture
async def database_url(server_dsn: str) -> AsyncIterator[str]:
    """A new, empty database on the shared server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(server_dsn, name)
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """The ledger store on a migrated fresh database, without an exchange around it."""
    pool = await create_pool(database_url, min_size=1, max_size=8)
    try:
        await migrate(pool)
        yield Store(pool, timeout_s=5.0)
    finally:
        await pool.close()


# A PostgreSQL cluster the test controls (stop, restart, freeze), one per test module that
# asks for it, and a fresh database on it per test.
@pytest.fixture(scope="module")
def pg() -> Iterator[ControlledPostgres]:
    with controlled_postgres() as server:
        yield server


@pytest.fixture
async def fault_db(pg: ControlledPostgres) -> str:
    pg.ensure_running()
    return await create_database(pg.dsn)
