"""PII at rest: sealing a lead's personal fields with AES-256-GCM before they are stored.

The ledger keeps no PII, with two exceptions that need the full lead later: a lead
waiting in the pool (SPEC §10) and a lead held for a buyer that is off schedule. Their
PII is kept sealed here, under ``exchange.pii_key``.

- **Keys.** ``exchange.pii_key`` is the current key (base64 of 32 random bytes); keys
  in ``exchange.pii_keys_retired`` can still open what they sealed but never seal. A
  key's id is the first 16 hex characters of SHA-256 over a fixed label and the key:
  stored next to each sealed value, it names the key to open it with and reveals nothing
  of it. ``lead-exchange rotate-key`` re-seals every value whose key id is not the
  current key's, after which the retired key can be removed from the config.
- **Values.** A sealed value is a 12-byte random nonce followed by the AES-GCM
  ciphertext and its 16-byte tag. With random nonces one key is good for about 2^32
  seals; rotate well before that.
- **Context.** Each seal binds associated data (the lead's ping id): a sealed value
  copied onto another row fails to open instead of handing over another lead's PII.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID_LABEL = b"lead-exchange pii key id v1\x00"


class SealingError(Exception):
    """A sealed value that cannot be opened: unknown key, wrong context or tampered."""


@dataclass(frozen=True, slots=True)
class Sealed:
    key_id: str
    blob: bytes  # nonce, then ciphertext and tag


def decode_key(text: str) -> bytes:
    """A configured key: base64 (standard or URL-safe) of exactly 32 bytes."""
    cleaned = text.strip()
    try:
        raw = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        hint = "e.g. `openssl rand -base64 32`"
        raise ValueError(f"must be base64 of {KEY_BYTES} random bytes ({hint})") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"must be base64 of {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def key_id(key: bytes) -> str:
    return hashlib.sha256(_KEY_ID_LABEL + key).hexdigest()[:16]


class PiiKeyRing:
    """The current key, which seals, and the retired keys, which only open."""

    __slots__ = ("_ciphers", "current_id")

    def __init__(self, current: bytes, retired: Sequence[bytes] = ()) -> None:
        self.current_id = key_id(current)
        self._ciphers: dict[str, AESGCM] = {key_id(k): AESGCM(k) for k in retired}
        self._ciphers[self.current_id] = AESGCM(current)

    @classmethod
    def from_text(cls, current: str, retired: Sequence[str] = ()) -> PiiKeyRing:
        return cls(decode_key(current), [decode_key(k) for k in retired])

    def knows(self, key_id: str) -> bool:
        return key_id in self._ciphers

    def seal(self, pii: Mapping[str, Any], context: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        plain = orjson.dumps(dict(pii))
        blob = nonce + self._ciphers[self.current_id].encrypt(nonce, plain, context)
        return Sealed(self.current_id, blob)

    def open(self, sealed: Sealed, context: bytes) -> dict[str, Any]:
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise SealingError(
                f"sealed under key {sealed.key_id}, which is neither exchange.pii_key "
                "nor in exchange.pii_keys_retired"
            )
        if len(sealed.blob) < NONCE_BYTES + 16:
            raise SealingError("sealed value too short to be AES-GCM output")
        nonce, body = sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, body, context)
        except InvalidTag:
            raise SealingError("sealed value does not open: tampered, or not this lead's") from None
        value = orjson.loads(plain)
        if not isinstance(value, dict):
            raise SealingError("sealed value is not a set of fields")
        return value

    def reseal(self, sealed: Sealed, context: bytes) -> Sealed:
        """The same fields sealed under the current key (rotation)."""
        return self.seal(self.open(sealed, context), context)


class KeySettings(Protocol):
    """What the key ring is built from (exchange.core.config.ExchangeSettings)."""

    @property
    def pii_key(self) -> str | None: ...

    @property
    def pii_keys_retired(self) -> Sequence[str]: ...


def key_ring(settings: KeySettings) -> PiiKeyRing | None:
    """The configured key ring, or None when no ``exchange.pii_key`` is set."""
    if settings.pii_key is None:
        return None
    return PiiKeyRing.from_text(settings.pii_key, settings.pii_keys_retired)
