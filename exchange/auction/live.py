"""Live settings (SPEC section 11): the one owner of which buyers and sellers version
this process runs, and the way every change is made.

- **One source of truth for validity.** A change is merged into the stored document
  (exchange/core/settings.py) and the whole config is built from it, the YAML's
  ``exchange`` and ``verticals`` with the document's ``sellers`` and ``buyers``, through
  exchange/config.py's ``validate_config``: the models and every cross check, as a file is.
- **Durable, versioned.** Each change is a new row of settings_versions
  (exchange/ledger/settings.py) numbered the version it was made against plus one; when
  another process took that number first, the change is merged again onto the newer
  document (no change is lost, none overwrites another unseen).
- **Everywhere within a second.** The row's NOTIFY wakes every process's follower, which
  reads the newest version and adopts it; a version check every CHECK_S seconds covers
  a notice missed while the listening connection was away. Nothing is read per ping.
- **Auctions keep their version.** Adopting replaces the context's settings in one
  step; a request runs on a context pinned when it started (ExchangeContext.pinned).
  Unchanged buyers keep their compiled adapter (SettingsSnapshot.build); the transport's
  keep-alive pools are per buyer and host, so they stay warm.
- **The YAML is the bootstrap.** The first process to start on an empty database
  records the YAML's buyers and sellers as version 1. A process that starts later runs
  the newest stored version, live changes included, as long as its YAML's buyers and
  sellers are those last recorded from a file; a YAML whose buyers or sellers were
  edited since is recorded as the newest version and wins (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from exchange.auction.context import ExchangeContext, SettingsSnapshot
from exchange.config import ConfigError, validate_config
from exchange.core.config import LoadedConfig
from exchange.core.errors import Conflict, Invalid
from exchange.core.settings import (
    Change,
    Section,
    document_of,
    entry_index,
    problem_fields,
    resolve,
)
from exchange.ledger.faults import DATABASE_DOWN
from exchange.ledger.settings import (
    NewChange,
    SettingsChange,
    SettingsLedger,
    SettingsListener,
    StoredSettings,
)

log = structlog.get_logger("exchange.live")

# The fallback version check's period (the NOTIFY is the fast path).
CHECK_S = 3.0
# A change made against a version someone else took first is merged again, this often.
MAX_ATTEMPTS = 8
BOOTSTRAP_ACTOR = "yaml"


class LiveSettings:
    """This process's settings version: adopted at start, followed while running, and
    changed through ``change``. Owns the app context's settings part (adopt) and the
    LISTEN connection."""

    def __init__(
        self, ctx: ExchangeContext, ledger: SettingsLedger, dsn: str, check_s: float = CHECK_S
    ) -> None:
        self._ctx = ctx
        self._ledger = ledger
        self._bootstrap = ctx.loaded  # the YAML: its exchange and verticals always apply
        self._document: dict[str, Any] = document_of(ctx.loaded.raw)
        self._listener = SettingsListener(dsn, self._heard)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._check_s = check_s
        self._task: asyncio.Task[None] | None = None
        self._adopted: list[Callable[[SettingsSnapshot], None]] = []

    @property
    def version(self) -> int:
        return self._ctx.settings_version

    @property
    def document(self) -> dict[str, Any]:
        """The buyers and sellers in force here, as stored (the YAML's secrets masked)."""
        return self._document

    def on_adopt(self, callback: Callable[[SettingsSnapshot], None]) -> None:
        """Call ``callback`` with every version this process puts in force."""
        self._adopted.append(callback)

    async def start(self) -> None:
        """Put the newest stored version in force (recording the YAML's first on an
        empty database, or when the file was edited), then follow. Raises ConfigError
        when the stored version does not fit this process's YAML (a vertical it uses is
        gone, say)."""
        await self._listener.listen()  # before reading: a change made meanwhile is heard
        stored = await self._record_the_file_if_edited()
        assert stored is not None
        self._adopt(self._loaded_from(stored.document, stored.version), stored)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _record_the_file_if_edited(self) -> StoredSettings | None:
        """The newest version, after recording the YAML's buyers and sellers as a new one
        when the database has none, or when they differ from those last recorded from a
        file (the YAML was edited since): then the file's win."""
        stored = None
        for _ in range(MAX_ATTEMPTS):
            stored = await self._ledger.latest()
            last_file = await self._ledger.last_bootstrap()
            if (
                stored is not None
                and last_file is not None
                and last_file.document == self._document
            ):
                return stored
            reason = f"from {self._bootstrap.source}"
            change = NewChange(BOOTSTRAP_ACTOR, "bootstrap", None, None, reason, None, None,
                               self._document)  # fmt: skip
            await self._ledger.append(0 if stored is None else stored.version, change)
        return stored

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._listener.close()

    def _heard(self, version: int) -> None:
        if version > self.version:
            self._wake.set()

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._check_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if not self._listener.listening:
                    await self._listener.listen()
                await self.refresh()
            except DATABASE_DOWN as exc:
                # The database watcher reports it; the version in force stays.
                log.warning("settings_check_failed", error=type(exc).__name__)

    async def refresh(self) -> None:
        """Adopt the newest stored version if it is newer than the one in force."""
        async with self._lock:
            await self._refresh()

    async def _refresh(self) -> None:
        if await self._ledger.latest_version() <= self.version:
            return
        stored = await self._ledger.latest()
        if stored is None or stored.version <= self.version:
            return
        try:
            loaded = self._loaded_from(stored.document, stored.version)
        except ConfigError as exc:
            # Valid where it was made, not against this process's YAML: keep running
            # the version in force, loudly.
            log.error("settings_version_refused", version=stored.version, problems=exc.found)
            return
        self._adopt(loaded, stored)

    def _loaded_from(self, document: dict[str, Any], version: int) -> LoadedConfig:
        source = f"{self._bootstrap.source} (settings version {version})"
        filled, problems = resolve(document, self._bootstrap.raw)
        raw = {**self._bootstrap.raw, "sellers": filled["sellers"], "buyers": filled["buyers"]}
        return validate_config(raw, source, problems)

    def _adopt(self, loaded: LoadedConfig, stored: StoredSettings) -> None:
        if stored.version <= self.version:
            return
        snapshot = SettingsSnapshot.build(loaded, stored.version, self._ctx.snapshot())
        self._ctx.adopt(snapshot)
        self._document = stored.document
        self._ctx.metrics.start_series(loaded.config)
        self._ctx.metrics.record_buyers_paused({b.id: not b.enabled for b in loaded.config.buyers})
        for callback in self._adopted:
            callback(snapshot)
        log.info("settings_adopted", version=stored.version, by=stored.actor)

    async def change(
        self,
        actor: str,
        make: Callable[[dict[str, Any]], Change],
        reason: str | None = None,
        action: str | None = None,
    ) -> tuple[int, Change]:
        """Make a change: ``make`` works it out against the newest document (raising the
        client's error when it cannot be made); it is validated as the YAML is (Invalid,
        422, naming each problem's key path), recorded, and in force here on return.
        Returns the new version and the change."""
        async with self._lock:
            for _ in range(MAX_ATTEMPTS):
                await self._refresh()
                base = self.version
                change = make(self._document)
                loaded = self._validated(change)
                version = await self._ledger.append(
                    base,
                    NewChange(actor, action or change.action, change.section, change.target_id,
                              reason, change.before, change.after, change.document),
                )  # fmt: skip
                if version is None:
                    continue  # another change took this version: merge onto it
                stored = StoredSettings(version, self._ctx.clock.now(), actor, change.document)
                self._adopt(loaded, stored)
                return version, change
        raise Conflict("the settings kept changing under this change; try again")

    async def history(
        self, limit: int, before: int | None, section: str | None, target_id: str | None
    ) -> list[SettingsChange]:
        return await self._ledger.changes(limit, before, section, target_id)

    def _validated(self, change: Change) -> LoadedConfig:
        """The config with the change, validated with the entry as given (a key in clear
        is checked as a key before it is kept as a hash; both run alike)."""
        try:
            return self._loaded_from(change.checked, self.version + 1)
        except ConfigError as exc:
            index = entry_index(change.checked, change.section, change.target_id)
            fields = problem_fields(exc.found, change.section, -1 if index is None else index)
            raise Invalid(f"the {_noun(change.section)}'s settings are not valid", fields) from None


def _noun(section: Section) -> str:
    return section[:-1]
