"""Writing old day partitions to files before the retention drops them (`lead-exchange
archive --before DATE`): one gzip-compressed CSV file per table and day, and a record of
each in ``ledger_archives``, which the retention reads when ``exchange.archive_before_drop``
is on (docs/scaling.md, "Archive files" has the files' schema).

Files: ``<output>/<table>/<table>-YYYY-MM-DD.csv.gz``, each the day partition's rows as
PostgreSQL's CSV (a header row naming the columns, then one line per row; times in UTC),
written to a ``.partial`` file, flushed to disk, then renamed, so a file under its final
name is whole. ``<output>/MANIFEST.jsonl`` gets one JSON line per file: table, day, file,
rows, sha256 of the file, columns.

The archive holds the maintenance lock (exchange/ledger/partitions.py) while it works, so
no partition is dropped under it; rows of the days it covers still waiting in a default
partition are first moved into their day's partition. A partition already archived (the
same partition, and its file still there) is not written again.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import orjson

from exchange.ledger.bounded import row_count
from exchange.ledger.partitions import (
    PARTITIONED_TABLES,
    DayPartition,
    adopt_default_rows,
    day_partitions,
    maintenance_lock,
)
from exchange.ledger.pool import create_pool, migrate

MANIFEST = "MANIFEST.jsonl"


@dataclass(frozen=True, slots=True)
class ArchivedPartition:
    table: str
    day: date
    file: Path
    rows: int
    sha256: str
    written: bool  # False: archived before, left as it was


async def archive_ledger(dsn: str, before: date, output: Path) -> list[ArchivedPartition]:
    """Archive every day partition older than ``before`` into ``output``."""
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        await migrate(pool)
        async with pool.acquire() as conn:
            return await archive_before(conn, before, output)
    finally:
        await pool.close()


async def archive_before(
    conn: asyncpg.Connection, before: date, output: Path
) -> list[ArchivedPartition]:
    done: list[ArchivedPartition] = []
    async with maintenance_lock(conn, wait=True):
        for table in PARTITIONED_TABLES:
            await adopt_default_rows(conn, table)
            recorded = {
                r["day"]: r
                for r in await conn.fetch(
                    "SELECT day, partition_oid, file, rows, sha256 FROM ledger_archives"
                    " WHERE table_name = $1",
                    table,
                )
            }
            for partition in await day_partitions(conn, table):
                if partition.day >= before:
                    break
                earlier = recorded.get(partition.day)
                if (
                    earlier is not None
                    and earlier["partition_oid"] == partition.oid
                    and _exists(earlier["file"])
                ):
                    done.append(
                        ArchivedPartition(table, partition.day, Path(earlier["file"]),
                                          earlier["rows"], earlier["sha256"], written=False)
                    )  # fmt: skip
                    continue
                done.append(await _write(conn, partition, output))
    return done


async def _write(
    conn: asyncpg.Connection, partition: DayPartition, output: Path
) -> ArchivedPartition:
    folder = output / partition.table
    folder.mkdir(parents=True, exist_ok=True)
    final = (folder / f"{partition.table}-{partition.day.isoformat()}.csv.gz").resolve()
    partial = final.with_name(final.name + ".partial")
    with partial.open("wb") as raw:
        # mtime 0: the same rows make the same bytes, so a checksum can be compared.
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:

            async def sink(chunk: bytes) -> None:
                packed.write(chunk)

            async with conn.transaction():
                # Times in UTC and ISO 8601, whatever the server's or role's defaults.
                await conn.execute(
                    "SELECT set_config('TimeZone', 'UTC', true),"
                    " set_config('DateStyle', 'ISO, YMD', true)"
                )
                status = await conn.copy_from_table(
                    partition.name, output=sink, format="csv", header=True
                )
        raw.flush()
        os.fsync(raw.fileno())
    rows = row_count(status)
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    partial.replace(final)
    _sync_folder(folder)
    columns = await _columns(conn, partition.oid)
    await conn.execute(
        "INSERT INTO ledger_archives (table_name, day, partition_oid, file, rows, sha256)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (table_name, day) DO UPDATE SET partition_oid = EXCLUDED.partition_oid,"
        " file = EXCLUDED.file, rows = EXCLUDED.rows, sha256 = EXCLUDED.sha256,"
        " archived_at = now()",
        partition.table,
        partition.day,
        partition.oid,
        str(final),
        rows,
        digest,
    )
    entry = {
        "table": partition.table,
        "day": partition.day.isoformat(),
        "file": f"{partition.table}/{final.name}",
        "rows": rows,
        "sha256": digest,
        "columns": columns,
        "archived_at": datetime.now(UTC).isoformat(),
    }
    _append_line(output / MANIFEST, orjson.dumps(entry))
    return ArchivedPartition(partition.table, partition.day, final, rows, digest, written=True)


async def _columns(conn: asyncpg.Connection, oid: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        oid,
    )
    return [r["attname"] for r in rows]


def _exists(file: str) -> bool:
    return Path(file).exists()


def _append_line(path: Path, line: bytes) -> None:
    with path.open("ab") as out:
        out.write(line + b"\n")


def _sync_folder(folder: Path) -> None:
    """The rename itself on disk (POSIX: fsync of the directory)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
