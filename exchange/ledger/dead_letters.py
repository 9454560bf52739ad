"""Dead letters: batched ledger rows set aside rather than lost.

Two places hold them. The table ``ledger_rejected_rows`` takes rows PostgreSQL refused for
their data (or that could not be encoded), written there by the batch writer
(exchange/ledger/batch.py) so one bad row never holds up the others. A dead-letter file
(JSON lines) takes the rows the database did not take before the process stopped. Either
keeps a row as a JSON array of its values in column order (exchange/ledger/rows.py), the
form docs/reliability.md tells an operator to read and fix; a row with no JSON form is
kept as its Python repr, to be fixed by hand. Replaying them is exchange/ledger/replay.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from exchange.ledger.rows import ROW_TYPES, LedgerRow, encode_row, from_values, values_of

INSERT_REJECTED = """
INSERT INTO ledger_rejected_rows (table_name, ping_id, sqlstate, error, row_data)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::bytea[])
"""


class RowRejected(Exception):
    """A row PostgreSQL refused (or that could not be encoded): it is in the dead-letter
    table ``ledger_rejected_rows``, not in ``table``. What a durable waiter
    (``BatchWriter.add_durable``) raises for its row; the rest of its batch committed."""

    def __init__(self, table: str, error: str) -> None:
        super().__init__(f"{table} row rejected: {error}")
        self.table = table
        self.error = error


@dataclass(frozen=True)
class Rejection:
    """One dead letter: the row as bytes (PostgreSQL may refuse its text), and why."""

    table: str
    ping_id: uuid.UUID | None
    sqlstate: str | None
    kind: str  # the exception's class: what the log says (the message may quote a value)
    error: str
    row_data: bytes


def _storable(text: str) -> str:
    """Text PostgreSQL takes: no NUL, no lone surrogate."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _row_bytes(row: LedgerRow) -> bytes:
    """The row as a JSON array of its values in column order, or its repr when it has none."""
    try:
        return encode_row(row)
    except TypeError:
        return repr(row).encode("utf-8", "backslashreplace")


def _ping_id(row: LedgerRow) -> uuid.UUID | None:
    """Every ledger row's ping id, when it is one at all."""
    try:
        return uuid.UUID(str(row.ping_id))
    except ValueError:
        return None


def rejection(table: str, row: LedgerRow, exc: BaseException) -> Rejection:
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    message = str(exc)
    if isinstance(exc, TypeError):
        message = f"not encodable as JSON: {message}"
    return Rejection(
        table, _ping_id(row), sqlstate, type(exc).__name__, _storable(message), _row_bytes(row)
    )


def rejected_args(found: Sequence[Rejection]) -> tuple[list[Any], ...]:
    """INSERT_REJECTED's parameters for these dead letters."""
    return (
        [r.table for r in found],
        [r.ping_id for r in found],
        [r.sqlstate for r in found],
        [r.error for r in found],
        [r.row_data for r in found],
    )


def new_file(directory: Path) -> Path:
    """A new dead-letter file's path under ``directory``: the time and this process."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return directory / f"ledger-{stamp}-{os.getpid()}.jsonl"


def write_file(path: Path, rows: Mapping[str, Sequence[LedgerRow]]) -> None:
    """Write rows to the new dead-letter file ``path``, as JSON lines of
    ``{"table_name", "row"}`` (``row`` the JSON array of its values, or ``row_repr`` for
    a row without one), flushed to disk. Raises OSError when it cannot."""
    lines = []
    for table, table_rows in rows.items():
        for row in table_rows:
            try:
                lines.append(orjson.dumps({"table_name": table, "row": values_of(row)}))
            except TypeError:
                text = repr(row).encode("utf-8", "backslashreplace").decode()
                lines.append(orjson.dumps({"table_name": table, "row_repr": text}))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The rows hold lead fields: readable by the exchange's own user only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as out:
        out.write(b"".join(line + b"\n" for line in lines))
        out.flush()
        os.fsync(out.fileno())


@dataclass(frozen=True)
class Letter:
    """A dead letter read back to be replayed: its table and row, and where it came from
    (the table's ``id``, or None for a file's line)."""

    table: str
    row: LedgerRow
    letter_id: int | None = None


def _row_of(table: Any, values: Any) -> LedgerRow | None:
    if not isinstance(values, list) or table not in ROW_TYPES:
        return None
    row_type = ROW_TYPES[table]
    try:
        return from_values(row_type, values)
    except TypeError:  # not as many values as columns: fixed by hand wrongly
        return None


async def read_table(
    pool: asyncpg.Pool, ids: Sequence[int] | None
) -> tuple[list[Letter], list[str]]:
    """The dead letters ``ids`` (every one when None) that hold a JSON array, and the
    names ("id 17") of those that do not (a repr, to be fixed or deleted by hand)."""
    letters: list[Letter] = []
    skipped: list[str] = []
    found = await pool.fetch(
        "SELECT id, table_name, row_data FROM ledger_rejected_rows"
        " WHERE $1::bigint[] IS NULL OR id = any($1) ORDER BY id",
        None if ids is None else list(ids),
    )
    for letter in found:
        try:
            values = orjson.loads(letter["row_data"])
        except orjson.JSONDecodeError:
            values = None
        row = _row_of(letter["table_name"], values)
        if row is None:
            skipped.append(f"id {letter['id']}")
        else:
            letters.append(Letter(letter["table_name"], row, letter["id"]))
    return letters, skipped


def read_file(path: Path) -> tuple[list[Letter], list[str]]:
    """The rows of a dead-letter file, and the lines ("path:3") without a JSON array."""
    letters: list[Letter] = []
    skipped: list[str] = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        entry = orjson.loads(line)
        row = _row_of(entry.get("table_name"), entry.get("row"))
        if row is None:
            skipped.append(f"{path}:{number}")
        else:
            letters.append(Letter(entry["table_name"], row))
    return letters, skipped


async def delete(pool: asyncpg.Pool, ids: Sequence[int]) -> None:
    await pool.execute("DELETE FROM ledger_rejected_rows WHERE id = any($1::bigint[])", ids)
