"""Replaying dead letters (exchange/ledger/dead_letters.py) once their cause is fixed:
through a batch writer, so the rollups count them and a row already in the ledger counts
once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from exchange.ledger import dead_letters
from exchange.ledger.batch import BatchWriter


@dataclass(frozen=True)
class Replayed:
    written: int  # rows in the ledger now (some may have been there already)
    refused: int  # rows refused again: new dead letters
    skipped: list[str]  # "id 17", "path:3": no JSON array to write; fix or delete by hand


async def replay_dead_letters(
    pool: asyncpg.Pool, ids: Sequence[int] | None = None, files: Sequence[Path] = ()
) -> Replayed:
    """Write set-aside rows again: the dead letters ``ids`` (every one when None) and the
    rows of dead-letter files written at stop. Rows still refused become new dead
    letters. A dead letter is deleted only after its row was written (or set aside
    again); files are left as they are."""
    writer = BatchWriter(pool)
    letters: list[dead_letters.Letter] = []
    skipped: list[str] = []
    if ids is None or ids:
        letters, skipped = await dead_letters.read_table(pool, ids)
    for path in files:
        in_file, unreadable = dead_letters.read_file(path)
        letters += in_file
        skipped += unreadable
    for letter in letters:
        await writer.add(letter.table, letter.row)
    total = writer.queued
    try:
        await writer.flush()
    except BaseException:
        writer.discard()  # nothing was lost: the rows are still where they came from
        raise
    finally:
        await writer.close()
    taken = [letter.letter_id for letter in letters if letter.letter_id is not None]
    await dead_letters.delete(pool, taken)
    return Replayed(total - writer.rejected_rows, writer.rejected_rows, skipped)
