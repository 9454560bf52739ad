"""The embedded PostgreSQL used when no database URL is given: a real PostgreSQL 16
server shipped in the ``pgserver`` wheel, kept in a data directory of ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EmbeddedPostgres:
    """Starts (or reuses) a PostgreSQL server in ``data_dir``; ``stop()`` shuts it down."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._server: Any = None

    def start(self) -> str:
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # pgserver run as root creates a `pgserver` system user to own the cluster; the
        # data dir's parent must exist and be traversable by it.
        get_server = pgserver.get_server  # type: ignore[attr-defined]
        self._server = get_server(self.data_dir / "pg", cleanup_mode="stop")
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
