"""Ping ids are time-ordered version-7 UUIDs (RFC 9562) in canonical text form, never
repeated: the ledger's keys then grow at their right edge."""

from __future__ import annotations

import time
import uuid

from exchange.auction.context import new_ping_id


def test_ping_ids_are_canonical_version_7_uuids_never_repeated() -> None:
    ids = [new_ping_id() for _ in range(3000)]  # several refills of the random pool
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)


def test_a_ping_id_carries_its_creation_millisecond_and_later_ids_sort_later() -> None:
    before = time.time_ns() // 1_000_000
    first = new_ping_id()
    after = time.time_ns() // 1_000_000
    assert before <= uuid.UUID(first).int >> 80 <= after
    time.sleep(0.002)
    later = [new_ping_id() for _ in range(50)]
    assert all(first < text for text in later)  # as text, as PostgreSQL's uuid order does
    assert all(uuid.UUID(first).int < uuid.UUID(text).int for text in later)


def test_ping_id_variant_nibble_takes_all_four_values() -> None:
    assert {new_ping_id()[19] for _ in range(400)} == set("89ab")
