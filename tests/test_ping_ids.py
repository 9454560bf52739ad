"""Ping ids are random version-4 UUIDs in canonical text form, never repeated."""

from __future__ import annotations

import uuid

from exchange.context import new_ping_id


def test_ping_ids_are_canonical_random_uuids() -> None:
    ids = [new_ping_id() for _ in range(3000)]  # several refills of the random pool
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_ping_id_variant_nibble_takes_all_four_values() -> None:
    assert {new_ping_id()[19] for _ in range(400)} == set("89ab")
