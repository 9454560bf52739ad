"""Live settings in the ledger: the versions of the buyers and sellers document
(table settings_versions, migration 0015), and the LISTEN connection that hears of a new
one at once.

A version is written in one transaction with a NOTIFY on ``CHANNEL`` carrying its
number; PostgreSQL delivers the notice at commit, to every process listening. The
listener is a connection of its own (a pooled one goes back to the pool and would stop
hearing); a process also reads the newest version number every few seconds, so a notice
missed while its listener was reconnecting delays a change, never loses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from exchange.ledger.pool import init_connection

CHANNEL = "lead_exchange_settings"
_COLUMNS = "version, created_at, actor, action, section, target_id, reason, before, after"


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """One row of the history, without its document (GET /v1/changes)."""

    version: int
    created_at: datetime
    actor: str
    action: str
    section: str | None
    target_id: str | None
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class StoredSettings:
    """The document in force from ``version`` on."""

    version: int
    created_at: datetime
    actor: str
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewChange:
    actor: str
    action: str
    section: str | None
    target_id: str | None
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    document: dict[str, Any]


def _change(row: asyncpg.Record) -> SettingsChange:
    return SettingsChange(
        version=row["version"], created_at=row["created_at"], actor=row["actor"],
        action=row["action"], section=row["section"], target_id=row["target_id"],
        reason=row["reason"], before=row["before"], after=row["after"],
    )  # fmt: skip


class SettingsLedger:
    """Reading and appending settings versions."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def latest(self) -> StoredSettings | None:
        row = await self.pool.fetchrow(
            "SELECT version, created_at, actor, document FROM settings_versions"
            " ORDER BY version DESC LIMIT 1"
        )
        if row is None:
            return None
        return StoredSettings(row["version"], row["created_at"], row["actor"], row["document"])

    async def last_bootstrap(self) -> StoredSettings | None:
        """The newest version recorded from a YAML file."""
        row = await self.pool.fetchrow(
            "SELECT version, created_at, actor, document FROM settings_versions"
            " WHERE action = 'bootstrap' ORDER BY version DESC LIMIT 1"
        )
        if row is None:
            return None
        return StoredSettings(row["version"], row["created_at"], row["actor"], row["document"])

    async def latest_version(self) -> int:
        version = await self.pool.fetchval("SELECT max(version) FROM settings_versions")
        return int(version or 0)

    async def append(self, base_version: int, change: NewChange) -> int | None:
        """Write ``change`` as version ``base_version + 1``; None when that version is
        already taken (someone changed the settings first: merge again onto theirs)."""
        version = base_version + 1
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO settings_versions (version, actor, action, section, target_id,"
                " reason, before, after, document)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (version) DO NOTHING RETURNING version",
                version, change.actor, change.action, change.section, change.target_id,
                change.reason, change.before, change.after, change.document,
            )  # fmt: skip
            if inserted is None:
                return None
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(version))
        return version

    async def changes(
        self,
        limit: int,
        before_version: int | None = None,
        section: str | None = None,
        target_id: str | None = None,
        actions: tuple[str, ...] | None = None,
    ) -> list[SettingsChange]:
        """Newest first; ``before_version`` continues a page."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM settings_versions"
            " WHERE ($1::bigint IS NULL OR version < $1)"
            " AND ($2::text IS NULL OR section = $2)"
            " AND ($3::text IS NULL OR target_id = $3)"
            " AND ($4::text[] IS NULL OR action = ANY($4))"
            " ORDER BY version DESC LIMIT $5",
            before_version, section, target_id, list(actions) if actions else None, limit,
        )  # fmt: skip
        return [_change(r) for r in rows]

    async def buyer_failures(
        self, since: dict[str, datetime], called: list[str], failed: list[str]
    ) -> dict[str, tuple[int, int]]:
        """Per buyer, its failed and called pings (bid outcomes) recorded since its own time:
        what auto-pause judges a buyer by, across every process."""
        if not since:
            return {}
        ids, times = list(since), list(since.values())
        rows = await self.pool.fetch(
            "SELECT w.buyer_id, count(*) FILTER (WHERE b.outcome = ANY($4)) AS failed,"
            " count(*) AS called"
            " FROM unnest($1::text[], $2::timestamptz[]) AS w(buyer_id, since)"
            " JOIN bid_outcomes b ON b.buyer_id = w.buyer_id AND b.created_at >= w.since"
            " WHERE b.created_at >= $3 AND b.outcome = ANY($5)"
            " GROUP BY w.buyer_id",
            ids, times, min(times), failed, called,
        )  # fmt: skip
        return {r["buyer_id"]: (r["failed"], r["called"]) for r in rows}

    async def last_changes(self, section: str, ids: list[str]) -> dict[str, SettingsChange]:
        """Each entry's newest change."""
        if not ids:
            return {}
        rows = await self.pool.fetch(
            f"SELECT DISTINCT ON (target_id) {_COLUMNS} FROM settings_versions"
            " WHERE section = $1 AND target_id = ANY($2) ORDER BY target_id, version DESC",
            section, ids,
        )  # fmt: skip
        return {r["target_id"]: _change(r) for r in rows}


class SettingsListener:
    """A connection of its own, LISTENing on CHANNEL; ``on_version`` is called with each
    new version's number (from the connection's reader: it must not block)."""

    def __init__(self, dsn: str, on_version: Callable[[int], None]) -> None:
        self._dsn = dsn
        self._on_version = on_version
        self._conn: asyncpg.Connection | None = None

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def listen(self) -> None:
        """Connect and LISTEN (again, after a lost connection)."""
        await self.close()
        conn = await asyncpg.connect(self._dsn)
        await init_connection(conn)
        await conn.add_listener(CHANNEL, self._heard)
        self._conn = conn

    def _heard(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            version = int(payload)
        except ValueError:
            return
        self._on_version(version)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                conn.terminate()
