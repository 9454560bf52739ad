"""Sealing PII at rest: AES-256-GCM under a key ring whose retired keys only open."""

from __future__ import annotations

import base64
import os

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from exchange.config import ConfigError, parse_config
from exchange.core.sealing import PiiKeyRing, Sealed, SealingError, key_id, key_ring
from tests.support.harness import config_text

PII = {"phone": "+14155552671", "email": "ada@example.com", "first_name": "Ada"}
PING = b"018f2a6e-0000-7000-8000-000000000001"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_sealed_pii_opens_to_the_same_fields_and_holds_none_of_them_in_clear() -> None:
    ring = PiiKeyRing.from_text(new_key())
    sealed = ring.seal(PII, PING)
    assert sealed.key_id == ring.current_id
    for value in PII.values():
        assert value.encode() not in sealed.blob
    assert ring.open(sealed, PING) == PII


def test_two_seals_of_one_lead_differ_because_each_has_its_own_nonce() -> None:
    ring = PiiKeyRing.from_text(new_key())
    assert ring.seal(PII, PING).blob != ring.seal(PII, PING).blob


def test_a_value_moved_to_another_lead_does_not_open() -> None:
    ring = PiiKeyRing.from_text(new_key())
    sealed = ring.seal(PII, PING)
    with pytest.raises(SealingError, match="not this lead's"):
        ring.open(sealed, b"another-ping-id")


KEY = new_key()


@given(position=st.integers(min_value=0, max_value=200), bit=st.integers(0, 7))
def test_any_flipped_bit_is_refused(position: int, bit: int) -> None:
    ring = PiiKeyRing.from_text(KEY)
    sealed = ring.seal(PII, PING)
    i = position % len(sealed.blob)
    tampered = bytearray(sealed.blob)
    tampered[i] ^= 1 << bit
    with pytest.raises(SealingError):
        ring.open(Sealed(sealed.key_id, bytes(tampered)), PING)


def test_a_retired_key_opens_but_never_seals_and_reseal_moves_to_the_current_key() -> None:
    old, new = new_key(), new_key()
    sealed = PiiKeyRing.from_text(old).seal(PII, PING)
    ring = PiiKeyRing.from_text(new, [old])
    assert ring.knows(sealed.key_id) and sealed.key_id != ring.current_id
    moved = ring.reseal(sealed, PING)
    assert moved.key_id == ring.current_id
    assert PiiKeyRing.from_text(new).open(moved, PING) == PII


def test_an_unknown_key_id_is_named_in_the_error() -> None:
    sealed = PiiKeyRing.from_text(new_key()).seal(PII, PING)
    with pytest.raises(SealingError, match=f"sealed under key {sealed.key_id}"):
        PiiKeyRing.from_text(new_key()).open(sealed, PING)


def test_the_key_id_names_the_key_without_revealing_it() -> None:
    raw = os.urandom(32)
    assert len(key_id(raw)) == 16
    assert key_id(raw) != key_id(os.urandom(32))
    assert key_id(raw) not in raw.hex()


def test_the_config_refuses_a_key_that_is_not_32_bytes_of_base64() -> None:
    doc = yaml.safe_load(config_text([]))
    doc["exchange"]["pii_key"] = base64.b64encode(b"short").decode()
    doc["exchange"]["pii_keys_retired"] = ["not base64!"]
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(doc), "bad.yaml", env={})
    text = "\n".join(caught.value.problems)
    assert "exchange.pii_key" in text and "not 5" in text
    assert "exchange.pii_keys_retired" in text and "[0]" in text
    assert "short" not in repr(caught.value.problems)


def test_a_configured_key_gives_the_exchange_a_key_ring() -> None:
    doc = yaml.safe_load(config_text([]))
    assert key_ring(parse_config(yaml.safe_dump(doc), "a.yaml", env={}).settings) is None
    key = new_key()
    doc["exchange"]["pii_key"] = key
    loaded = parse_config(yaml.safe_dump(doc), "b.yaml", env={})
    ring = key_ring(loaded.settings)
    assert ring is not None and ring.current_id == key_id(base64.b64decode(key))
    assert key not in repr(loaded.config.exchange)
