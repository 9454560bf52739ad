"""Request heads: a buyer URL parsed once into where to connect and the fixed bytes of
its request head, and each request encoded onto that head.

A URL, method and fixed headers come from buyer config and repeat every auction, so
H1Transport caches the `_Target` built here and each request only adds its length, its
per-request headers and its body. Header names and values are checked here, once, for
line breaks that would smuggle extra headers in.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from buyers.adapter import HttpRequest
from exchange.transport.base import TransportError

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Everything RFC 3986 allows unescaped in a path and query, plus "%" so that
# already-escaped URLs pass unchanged; spaces, controls and non-ASCII get escaped.
_URL_SAFE = "/?:@!$&'()*+,;=-._~%"
# The caller's headers cannot override the framing we write ourselves.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
_ORIGIN = tuple[str, str, int]  # scheme, host, port


@dataclass(frozen=True, slots=True)
class _Target:
    """One URL, parsed once: where to connect, and the fixed part of the request head."""

    origin: _ORIGIN
    host: str
    port: int
    tls: bool
    # b"POST /path?q HTTP/1.1\r\nHost: h\r\n<fixed headers>Content-Length: "
    head: bytes


def _header_lines(headers: tuple[tuple[str, str], ...]) -> bytes:
    lines = [f"{name}: {value}\r\n" for name, value in headers if name.lower() not in _OWN_HEADERS]
    text = "".join(lines)
    # Exactly one CR and one LF per line, else a name or value carried its own line
    # break and would smuggle extra headers into the request.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise TransportError("line break in a request header")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise TransportError("request header not encodable") from None


def _parse_target(request: HttpRequest) -> _Target:
    try:
        parts = urlsplit(request.url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise TransportError("invalid url") from None
    if parts.scheme not in _DEFAULT_PORTS or not host:
        raise TransportError("url must be absolute http or https")
    default_port = _DEFAULT_PORTS[parts.scheme]
    port = port or default_port
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header = f"{host_header}:{port}"
    path = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        path = f"{path}?{quote(parts.query, safe=_URL_SAFE)}"
    try:
        line = f"{request.method} {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii")
    except UnicodeEncodeError:
        raise TransportError("request method or host name not ascii") from None
    head = line + _header_lines(request.fixed_headers) + b"Content-Length: "
    return _Target((parts.scheme, host, port), host, port, parts.scheme == "https", head)


_UNUSABLE = _Target(("", "", 0), "", 0, False, b"")


def _encode(request: HttpRequest, target: _Target) -> bytes:
    body = request.body
    return b"%s%d\r\n%s\r\n%s" % (target.head, len(body), _header_lines(request.headers), body)
