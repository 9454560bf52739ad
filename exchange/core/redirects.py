"""A buyer's redirect: where it wants the consumer sent after a sale (SPEC section 8),
passed to the seller in the answer to its post and kept with the sale.

The seller may put it straight into a ``Location`` header or a link, so only a plain
absolute URL passes; anything else is dropped, never mended, and never turns the sale
into an error (the buyer has taken the lead whatever came with its verdict):

- a ``str``, trimmed of surrounding whitespace (XML answers pad their text), of at most
  ``MAX_REDIRECT_CHARS`` characters;
- only the characters RFC 3986 allows in a URL (letters, digits, ``-._~:/?#[]@!$&'()*+,;=``
  and ``%`` escapes; everything else is percent-encoded), so no space, quote, angle
  bracket, control character, CR or LF that could split a header or break out of an HTML
  attribute, and nothing the ledger refuses (exchange/core/storable.py);
- scheme ``http`` or ``https`` with a host and a valid port, and no user or password
  (``https://bank.example@elsewhere.example`` is a well-known disguise);
- none of the lead's own PII values in it, as written or percent-decoded: the ledger
  keeps no PII (docs/reliability.md), and a redirect with a PII value stripped out would
  send the consumer to a broken page, so such a redirect is dropped whole. A value counts
  only as a whole word (``Ada`` is found in ``?name=Ada``, not in ``canada``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus, urlsplit

MAX_REDIRECT_CHARS = 2048
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def clean_redirect(value: object, pii: Iterable[str] = ()) -> str | None:
    """``value`` when it is a redirect the seller can be given (the rules above), trimmed;
    else None."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    if len(url) > MAX_REDIRECT_CHARS or _URL_CHARACTERS.fullmatch(url) is None:
        return None
    try:
        parts = urlsplit(url)
        if parts.port == 0:  # .port raises ValueError for a port out of range or not a number
            return None
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    if carries_any(url, pii):
        return None
    return url


def carries_any(url: str, values: Iterable[str]) -> bool:
    """Whether any of ``values`` is a whole word of ``url``, as written or percent-decoded,
    ignoring case."""
    texts = (url, unquote_plus(url))
    for value in values:
        if not value.strip():
            continue
        word = re.compile(rf"(?<![0-9a-z]){re.escape(value)}(?![0-9a-z])", re.IGNORECASE)
        if any(word.search(text) for text in texts):
            return True
    return False
