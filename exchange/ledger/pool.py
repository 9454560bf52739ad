"""Connecting to the ledger and bringing its schema up to date: the connection pool with
its codecs (jsonb through orjson), and the migrations in exchange/ledger/migrations/.
"""

from __future__ import annotations

from importlib import resources

import asyncpg
import orjson

MIGRATIONS_PACKAGE = "exchange.ledger.migrations"
# A migration that moves rows (0011 partitions the ledger's tables) takes as long as
# the rows it moves, and a process starting meanwhile waits for it: far beyond the
# pool's command timeout, which is for the request path.
MIGRATION_TIMEOUT_S = 24 * 3600.0


async def init_connection(conn: asyncpg.Connection) -> None:
    """What every ledger connection is set up with (a pool's, or one of its own)."""
    # Binary jsonb (a version byte, then the JSON text), encoded by orjson.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset: the exchange leaves no session state behind (no SET, LISTEN,
    cursors or held advisory locks), so a connection goes back to the pool without
    asyncpg's default reset query, one round trip less per pooled use. (An open
    transaction is still rolled back by asyncpg before this runs.)"""


async def create_pool(
    dsn: str, min_size: int = 2, max_size: int = 10, synchronous_commit: bool = True
) -> asyncpg.Pool:
    """A pool of ledger connections. ``synchronous_commit=False`` is for the batch writer
    alone (exchange/ledger/batch.py): its commits return once PostgreSQL has the rows, before
    they reach the disk. They survive the exchange crashing, not PostgreSQL crashing
    (that loses at most the last ~0.6 s of batched rows, never money: sales and post
    results go through a synchronous pool)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={} if synchronous_commit else {"synchronous_commit": "off"},
        init=init_connection,
        reset=_keep_session,
        command_timeout=10,
        max_inactive_connection_lifetime=60,
    )
    assert pool is not None
    return pool


def _migration_files() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text()))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; returns their names.

    An advisory lock serialises concurrent starters (several workers, several nodes).
    """
    applied: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(72150001)", timeout=MIGRATION_TIMEOUT_S)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in _migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql, timeout=MIGRATION_TIMEOUT_S)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        name,
                    )
                applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(72150001)")
    return applied
