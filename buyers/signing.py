"""HMAC request signing (SPEC section 5), and the verifier buyers can use on their side.

Every request carries ``X-Exchange-Timestamp: <unix seconds>`` and
``X-Exchange-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``.
A buyer checks the signature over the raw body bytes and refuses timestamps outside a
small window, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Exchange-Timestamp"
SIGNATURE_HEADER = "X-Exchange-Signature"
SIGNATURE_PREFIX = "sha256="
DEFAULT_MAX_SKEW_S = 300


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Exchange-Signature`` header value for a body sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def signed_headers(secret: bytes, timestamp: int, body: bytes) -> tuple[tuple[str, str], ...]:
    """Both signing headers for one request."""
    return (
        (TIMESTAMP_HEADER, str(timestamp)),
        (SIGNATURE_HEADER, sign(secret, timestamp, body)),
    )


def verify(
    secret: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    now: float,
    max_skew_s: int = DEFAULT_MAX_SKEW_S,
) -> str | None:
    """Check a request's signature. Returns None when it is good, else why it is not.

    ``now`` is the buyer's clock (unix seconds); requests older or newer than
    ``max_skew_s`` are refused to stop replays.
    """
    if not timestamp_header or not signature_header:
        return "missing signature headers"
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        return "timestamp is not an integer"
    if abs(now - timestamp) > max_skew_s:
        return "timestamp outside the allowed window"
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected, signature_header):
        return "signature does not match"
    return None
