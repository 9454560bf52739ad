"""The scratch PostgreSQL of a ledger benchmark (ledger_ids, ledger_partitions,
search_explain): an embedded server in a temp dir, or DATABASE_URL's server, with
databases of the benchmark's own that are gone when it ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg

from benchmarks.runner import Database
from exchange.ledger.pool import create_pool, init_connection, migrate


@contextmanager
def scratch_databases(prefix: str, names: Sequence[str]) -> Iterator[tuple[Database, list[str]]]:
    """The server started (embedded, its data directory under a temp dir named with
    ``prefix``, unless DATABASE_URL names one) and a fresh, empty database per name; yields
    the server and the databases' URLs, in the order of ``names``. On the way out a given
    server's databases are dropped; an embedded server is stopped, its data going with it."""
    server_url = os.environ.get("DATABASE_URL")
    database = Database(Path(tempfile.mkdtemp(prefix=prefix)), server_url)
    database.start()
    try:
        yield database, [database.create(name) for name in names]
    finally:
        if server_url:  # an embedded server goes with its data directory
            for name in names:
                asyncio.run(_drop(server_url, name))
        database.stop()


async def _drop(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def migrated_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """The exchange's migrations applied to ``url``'s database, then a connection of its
    own there, set up as the ledger's are: the pool's command timeout is shorter than a
    benchmark's prefill."""
    pool = await create_pool(url)
    await migrate(pool)
    await pool.close()
    conn = await asyncpg.connect(url)
    try:
        await init_connection(conn)
        yield conn
    finally:
        await conn.close()
