"""How a buyer test is shown (``lead-exchange buyer-test``, exchange/tools/buyer_test.py):
what one run did, as text for an operator or as one JSON document.

Credentials never reach the output: the values of ``Authorization`` and
``X-Exchange-Signature``, and of every header or query parameter the buyer's adapter
names in its optional ``masked`` attribute (lower-case names), are shown as ``***``, in
the URL and in a form body too. Everything else is shown as sent and as received; an
answer's body up to SHOWN_BODY_BYTES.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus, urlsplit

from buyers.adapter import HttpRequest, HttpResponse
from exchange.core.money import dollars_json, dollars_text

EXIT_UNDERSTOOD = 0
EXIT_NOT_UNDERSTOOD = 1

MASK = "***"
# Masked whatever the adapter says: the json adapter's HMAC signature, and any
# credential scheme's Authorization.
ALWAYS_MASKED = frozenset({"authorization", "x-exchange-signature"})
# An answer's body is shown up to this many bytes (the transport reads up to
# exchange.max_response_bytes).
SHOWN_BODY_BYTES = 4096
SAMPLE = "sample"  # the lead source of a lead made from the vertical's fields

_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class Subject:
    """Who was tested, with what: the report's heading."""

    buyer_id: str
    adapter: str
    vertical: str
    enabled: bool
    fixed_price_cents: int | None
    lead_source: str  # the --lead file, or SAMPLE
    masked: frozenset[str]  # lower-case header and query parameter names, ALWAYS_MASKED too


@dataclass(frozen=True, slots=True)
class Reading:
    """How one answer was read: the adapter's reply (or the transport's failure), in the
    exchange's words."""

    outcome: str
    understood: bool
    price_cents: int | None = None
    bid_id: str | None = None
    reason: str | None = None
    buyer_lead_id: str | None = None
    redirect_url: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One request to the buyer and what came of it."""

    kind: Literal["ping", "post"]
    timeout_ms: int
    request: HttpRequest | None  # None: the adapter could not build one
    response: HttpResponse | None  # None: no answer (timeout, connection failure)
    latency_ms: float | None
    reading: Reading
    notes: tuple[str, ...] = ()


@dataclass(slots=True)
class Outcome:
    """Everything one run did."""

    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        understood = all(step.reading.understood for step in self.steps)
        return EXIT_UNDERSTOOD if understood else EXIT_NOT_UNDERSTOOD


# -- masking ----------------------------------------------------------------------------------


def masked_url(url: str, masked: frozenset[str]) -> str:
    """``url`` with the values of query parameters named in ``masked`` replaced; the rest
    exactly as sent."""
    base, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_, fragment = rest.partition("#")
    return f"{base}?{masked_query(query, masked)}{hash_}{fragment}"


def masked_query(query: str, masked: frozenset[str]) -> str:
    """A query string (or form body) with the values of the parameters in ``masked``
    replaced. Names are compared decoded and in lower case."""
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        if equals and unquote_plus(name).lower() in masked:
            part = f"{name}={MASK}"
        parts.append(part)
    return "&".join(parts)


def masked_header(name: str, value: str, masked: frozenset[str]) -> str:
    lower = name.lower()
    if lower not in masked:
        return value
    if lower == "authorization":  # the scheme (Basic, Bearer) helps; the credential not
        scheme, space, _ = value.partition(" ")
        return f"{scheme} {MASK}" if space else MASK
    if lower == "x-exchange-signature" and value.startswith("sha256="):
        return "sha256=" + MASK
    return MASK


def shown_headers(request: HttpRequest, masked: frozenset[str]) -> list[tuple[str, str]]:
    """Every header in the order the transport writes them (exchange/transport/request.py):
    Host, the fixed headers, Content-Length, the request's own; credentials masked."""
    parts = urlsplit(request.url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return [
        ("Host", host),
        *((n, masked_header(n, v, masked)) for n, v in request.fixed_headers),
        ("Content-Length", str(len(request.body))),
        *((n, masked_header(n, v, masked)) for n, v in request.headers),
    ]


def shown_body(request: HttpRequest, masked: frozenset[str]) -> str:
    text = request.body.decode("utf-8", "replace")
    content_type = next(
        (v for n, v in request.all_headers if n.lower() == "content-type"), ""
    ).lower()
    return masked_query(text, masked) if content_type.startswith(_FORM) else text


def _answer_body(response: HttpResponse) -> tuple[str, bool]:
    """The body as text, up to SHOWN_BODY_BYTES; and whether it was cut."""
    cut = len(response.body) > SHOWN_BODY_BYTES
    return response.body[:SHOWN_BODY_BYTES].decode("utf-8", "replace"), cut


# -- rendering --------------------------------------------------------------------------------


def render_text(subject: Subject, outcome: Outcome) -> str:
    price = subject.fixed_price_cents
    kind = "real-time bids" if price is None else f"fixed price {dollars_text(price)}"
    lead = (
        "a sample made from the vertical's fields (--lead FILE sends your own)"
        if subject.lead_source == SAMPLE
        else subject.lead_source
    )
    lines = [
        f"buyer {subject.buyer_id}: adapter {subject.adapter}, vertical {subject.vertical}, {kind}",
        f"lead: {lead}",
        *(f"note: {note}" for note in outcome.notes),
    ]
    for step in outcome.steps:
        lines.append("")
        lines.extend(_step_lines(step, subject.masked))
    lines.append("")
    if outcome.exit_code == EXIT_UNDERSTOOD:
        lines.append("result: every answer was understood")
    else:
        lines.append("result: an answer was not understood (see the reading above)")
    return "\n".join(lines)


def _step_lines(step: Step, masked: frozenset[str]) -> list[str]:
    lines = [f"== {step.kind} (timeout {step.timeout_ms} ms) =="]
    if step.request is None:
        lines.append("request: none (the adapter could not build it)")
    else:
        request = step.request
        lines.append(f"> {request.method} {masked_url(request.url, masked)}")
        lines.extend(f"> {n}: {v}" for n, v in shown_headers(request, masked))
        if request.body:
            lines.append(">")
            lines.extend(f"> {line}" for line in _text_lines(shown_body(request, masked)))
        lines.append("")
    if step.response is None:
        if step.request is not None:
            lines.append(f"answer: none after {step.latency_ms or 0:.1f} ms")
    else:
        response = step.response
        lines.append(f"< HTTP {response.status} ({step.latency_ms or 0:.1f} ms)")
        lines.extend(f"< {n}: {v}" for n, v in response.headers.items())
        body, cut = _answer_body(response)
        if body:
            lines.append("<")
            lines.extend(f"< {line}" for line in _text_lines(body))
        if cut:
            lines.append(
                f"(body cut: first {SHOWN_BODY_BYTES} of {len(response.body)} bytes shown)"
            )
    lines.extend(("", "read as:"))
    lines.extend(f"  {name}: {value}" for name, value in _reading_items(step))
    lines.extend(f"note: {note}" for note in step.notes)
    return lines


def _text_lines(text: str) -> list[str]:
    return text.splitlines() or [""]


def _reading_items(step: Step) -> list[tuple[str, str]]:
    reading = step.reading
    items = [("outcome", reading.outcome)]
    if reading.price_cents is not None:
        items.append(("price", dollars_text(reading.price_cents)))
    optional: Iterable[tuple[str, str | None]]
    if step.kind == "ping":
        optional = (("bid_id", reading.bid_id), ("reason", reading.reason))
    else:
        optional = (
            ("reason", reading.reason),
            ("buyer_lead_id", reading.buyer_lead_id),
            ("redirect_url", reading.redirect_url),
        )
    items.extend((name, value) for name, value in optional if value is not None)
    return items


def render_json(subject: Subject, outcome: Outcome) -> str:
    """The same report as one JSON document (prices in dollars, as the API writes them)."""
    document = {
        "buyer": subject.buyer_id,
        "adapter": subject.adapter,
        "vertical": subject.vertical,
        "enabled": subject.enabled,
        "fixed_price": dollars_json(subject.fixed_price_cents),
        "lead": subject.lead_source,
        "notes": outcome.notes,
        "steps": [_step_json(step, subject.masked) for step in outcome.steps],
        "understood": outcome.exit_code == EXIT_UNDERSTOOD,
        "exit_code": outcome.exit_code,
    }
    return json.dumps(document, indent=2)


def _step_json(step: Step, masked: frozenset[str]) -> dict[str, Any]:
    request: dict[str, Any] | None = None
    if step.request is not None:
        request = {
            "method": step.request.method,
            "url": masked_url(step.request.url, masked),
            "headers": [list(header) for header in shown_headers(step.request, masked)],
            "body": shown_body(step.request, masked),
        }
    response: dict[str, Any] | None = None
    if step.response is not None:
        body, cut = _answer_body(step.response)
        response = {
            "status": step.response.status,
            "headers": dict(step.response.headers),
            "body": body,
            "body_bytes": len(step.response.body),
            "body_truncated": cut,
        }
    reading = step.reading
    read: dict[str, Any] = {"outcome": reading.outcome, "price": dollars_json(reading.price_cents)}
    if step.kind == "ping":
        read.update(bid_id=reading.bid_id, reason=reading.reason)
    else:
        read.update(
            reason=reading.reason,
            buyer_lead_id=reading.buyer_lead_id,
            redirect_url=reading.redirect_url,
        )
    return {
        "step": step.kind,
        "timeout_ms": step.timeout_ms,
        "request": request,
        "response": response,
        "latency_ms": None if step.latency_ms is None else round(step.latency_ms, 3),
        "read": read,
        "understood": reading.understood,
        "notes": list(step.notes),
    }
