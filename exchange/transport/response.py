"""What a buyer answered, as the caller gets it: the HttpResponse built from what the
parser read, its headers decoded only if someone reads them, and an answer that came
after its deadline handed to the caller's `on_late` in the caller's own context.

The parser's state lives on the request's `_Call` (connection.py); the functions here
take the parts they need of it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from typing import Protocol

import structlog

from buyers.adapter import HttpResponse
from exchange.transport.base import LateAnswer

log = structlog.get_logger("exchange.transport")


class _Headers(Mapping[str, str]):
    """Response headers, decoded only if someone reads them (the JSON protocol does not)."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        if self._decoded is None:
            self._decoded = {
                name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self._raw
            }
        return self._decoded

    def __getitem__(self, name: str) -> str:
        return self._dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"_Headers({self._dict()!r})"


class _Read(Protocol):
    """What the parser read of one response (connection.py's `_Call`), and when its
    request was written (time.perf_counter_ns)."""

    status: int
    raw_headers: list[tuple[bytes, bytes]]
    chunks: list[bytes]
    sent_ns: int


def _response(read: _Read, complete_ns: int) -> HttpResponse:
    """The response, with the buyer's time from its request written to ``complete_ns``
    (time.perf_counter_ns when its last byte was parsed), in whole microseconds rounded
    up: an answer always took some time, and a sub-microsecond one reads as 1."""
    chunks = read.chunks
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    elapsed_us = -(-(complete_ns - read.sent_ns) // 1000) if read.sent_ns else None
    return HttpResponse(read.status, _Headers(read.raw_headers), body, elapsed_us)


def _ends_at_close(raw_headers: list[tuple[bytes, bytes]]) -> bool:
    """A response with neither Content-Length nor chunking ends when the server closes."""
    names = {name.lower() for name, _ in raw_headers}
    return b"content-length" not in names and b"transfer-encoding" not in names


def _hand_late_answer(
    context: contextvars.Context | None, on_late: LateAnswer, response: HttpResponse
) -> None:
    """Run `on_late` in the context the request was sent in, not the connection's."""
    if context is None:
        _run_late_answer(on_late, response)
    else:
        context.run(_run_late_answer, on_late, response)


def _run_late_answer(on_late: LateAnswer, response: HttpResponse) -> None:
    try:
        on_late(response)
    except Exception:  # the caller's bookkeeping must not break this connection
        log.exception("late_answer_handler_failed")
