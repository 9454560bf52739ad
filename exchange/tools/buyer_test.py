"""`lead-exchange buyer-test`: trying one buyer's integration before it goes live
(SPEC section 8).

One ping goes to the buyer's real endpoint (and, with ``--post``, one post of the full
lead at the price it bid) the way the exchange sends it: the buyer's adapter built by
buyers.registry.adapter_for, the lead validated by its vertical's schema and redacted for
the ping, the request sent by the exchange's own transport under the buyer's timeout.
For each request the operator sees the exact request (credentials masked), the raw
answer, and how the adapter read it (exchange/tools/buyer_report.py shows them). A
fixed-price buyer takes no ping: ``--post`` posts to it at its price.

Exit codes: 0 when every answer was understood (a bid or no bid; accepted or rejected),
1 when one was not (an error, a timeout, an unreadable answer, a connection that
failed), 2 for a usage or config error. A network failure is an outcome, not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from buyers.adapter import Adapter, HttpRequest, HttpResponse, PingOffer, PostOffer
from buyers.registry import adapter_for
from exchange.app import build_transport
from exchange.config import ConfigError, load_config
from exchange.core.classify import bid_problem
from exchange.core.config import BuyerConfig, LoadedConfig, VerticalConfig
from exchange.core.fields import LeadInvalid
from exchange.core.money import dollars_text
from exchange.core.outcomes import BidOutcome, PostOutcome
from exchange.tools.buyer_report import (
    ALWAYS_MASKED,
    SAMPLE,
    Outcome,
    Reading,
    Step,
    Subject,
    render_json,
    render_text,
)
from exchange.tools.sample_lead import sample_lead
from exchange.transport.base import Transport, deliver

EXIT_USAGE = 2

_UNDERSTOOD_BIDS = frozenset({BidOutcome.BID, BidOutcome.NO_BID})
_UNDERSTOOD_POSTS = frozenset({PostOutcome.ACCEPTED, PostOutcome.REJECTED})


class UsageProblem(Exception):
    """The command cannot run as asked (exit 2); the message says why."""


@dataclass(frozen=True, slots=True)
class BuyerTest:
    """What one run tests: the buyer and its adapter, the vertical and the lead."""

    loaded: LoadedConfig
    buyer: BuyerConfig
    adapter: Adapter
    vertical: str
    ping_lead: dict[str, Any]  # validated and redacted, as buyers are pinged with
    full_lead: dict[str, Any] | None  # validated, PII included: what a post sends
    lead_source: str  # the --lead file, or SAMPLE

    @property
    def subject(self) -> Subject:
        names: frozenset[str] = getattr(self.adapter, "masked", frozenset())
        buyer = self.buyer
        return Subject(
            buyer.id, buyer.adapter, self.vertical, buyer.enabled, buyer.price,
            self.lead_source, ALWAYS_MASKED | frozenset(name.lower() for name in names),
        )  # fmt: skip


# -- the command ------------------------------------------------------------------------------


def run_buyer_test(args: argparse.Namespace) -> int:
    """The command: prepare, send, print. Returns the exit code."""
    try:
        test = prepare(
            args.config, args.buyer, lead_file=args.lead, vertical=args.vertical, post=args.post
        )
    except UsageProblem as problem:
        print(f"buyer-test: {problem}", file=sys.stderr)
        return EXIT_USAGE
    outcome = asyncio.run(send(test))
    render = render_json if args.json else render_text
    print(render(test.subject, outcome))
    return outcome.exit_code


def prepare(
    config_path: str,
    buyer_id: str,
    *,
    lead_file: str | None = None,
    vertical: str | None = None,
    post: bool = False,
) -> BuyerTest:
    """The buyer, its adapter and the lead, checked; UsageProblem says what is wrong."""
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        raise UsageProblem(
            f"configuration error ({len(exc.problems)} problem(s)):\n  " + "\n  ".join(exc.problems)
        ) from None
    buyers = {buyer.id: buyer for buyer in loaded.config.buyers}
    buyer = buyers.get(buyer_id)
    if buyer is None:
        known = ", ".join(buyers) or "none"
        raise UsageProblem(f"no buyer {buyer_id!r} in {config_path} (known buyers: {known})")
    if buyer.price is not None and not post:
        raise UsageProblem(
            f"buyer {buyer.id} has a fixed price ({dollars_text(buyer.price)}) and takes no "
            "ping: add --post to send it a post"
        )
    if vertical is None:
        vertical = buyer.verticals[0]
    elif vertical not in buyer.verticals:
        raise UsageProblem(
            f"buyer {buyer.id} does not buy in vertical {vertical!r} "
            f"(its verticals: {', '.join(buyer.verticals)})"
        )
    try:
        adapter = adapter_for(buyer, loaded.config.verticals)
    except (ValueError, KeyError) as exc:
        raise UsageProblem(f"buyer {buyer.id}: {exc}") from None
    raw, source = _raw_lead(loaded, vertical, lead_file)
    schema = loaded.schemas[vertical]
    try:
        # As the seller API does: a post's lead whole, its ping the redacted part of it;
        # a ping alone validated as a ping (PII fields dropped unread).
        full = schema.validate_full(raw) if post else None
        ping_lead = schema.redact(full) if full is not None else schema.validate_ping(raw)
    except LeadInvalid as exc:
        where = (
            f"the lead in {lead_file}"
            if lead_file
            else "the sample lead (give one with --lead FILE)"
        )
        raise UsageProblem(f"{where} is not valid: {exc}") from None
    return BuyerTest(loaded, buyer, adapter, vertical, ping_lead, full, source)


def _raw_lead(loaded: LoadedConfig, vertical: str, lead_file: str | None) -> tuple[Any, str]:
    if lead_file is None:
        return sample_lead(loaded.config.verticals[vertical].fields), SAMPLE
    try:
        raw = json.loads(Path(lead_file).read_text())
    except OSError as exc:
        raise UsageProblem(f"cannot read {lead_file}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"{lead_file} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UsageProblem(f"{lead_file} must hold one JSON object of lead fields")
    return raw, lead_file


# -- sending ----------------------------------------------------------------------------------


async def send(test: BuyerTest, transport: Transport | None = None) -> Outcome:
    """Ping the buyer (unless it has a fixed price) and, when posting and it bid, post to
    it; through ``transport``, or the exchange's own built for this run."""
    own = transport is None
    transport = transport or build_transport(test.loaded)
    try:
        return await _steps(test, transport)
    finally:
        if own:
            await transport.close()


async def _steps(test: BuyerTest, transport: Transport) -> Outcome:
    outcome = Outcome()
    buyer = test.buyer
    if not buyer.enabled:
        outcome.notes.append(
            f"buyer {buyer.id} is disabled (enabled: false): the exchange does not call it; "
            "tested anyway"
        )
    ping_id = str(uuid.uuid4())
    if buyer.fixed_price:
        assert buyer.price is not None  # a buyer with no ping_url has a price (the config)
        outcome.notes.append(f"fixed price {dollars_text(buyer.price)}: no ping, posted at once")
        bid_id, price_cents = None, buyer.price
    else:
        ping = await _ping(test, transport, ping_id)
        outcome.steps.append(ping)
        reading = ping.reading
        if test.full_lead is None:
            return outcome
        if reading.outcome != BidOutcome.BID.value or reading.price_cents is None:
            outcome.notes.append(f"not posted: the ping's answer was {reading.outcome}, not a bid")
            return outcome
        bid_id, price_cents = reading.bid_id, reading.price_cents
    assert test.full_lead is not None
    offer = PostOffer(ping_id, bid_id, price_cents, test.vertical, test.full_lead)
    outcome.steps.append(await _post(test, transport, offer))
    return outcome


async def _ping(test: BuyerTest, transport: Transport, ping_id: str) -> Step:
    settings = test.loaded.settings
    vertical = test.loaded.config.verticals[test.vertical]
    # The buyer's own timeout_ms cuts its request shorter than the auction's tmax.
    timeout_ms = min(test.buyer.timeout_ms or settings.tmax_ms, settings.tmax_ms)
    offer = PingOffer(ping_id, test.vertical, settings.tmax_ms, vertical.floor, test.ping_lead)

    def read(response: HttpResponse) -> tuple[Reading, tuple[str, ...]]:
        return _bid_reading(test.adapter, response, vertical)

    return await _call(
        test, transport, "ping", timeout_ms, lambda now: test.adapter.ping_request(offer, now), read
    )


def _bid_reading(
    adapter: Adapter, response: HttpResponse, vertical: VerticalConfig
) -> tuple[Reading, tuple[str, ...]]:
    reply = adapter.read_bid(response)
    if reply.outcome is BidOutcome.BID:
        # The exchange holds a bid to its rules (exchange.core.classify): one it refuses
        # is that buyer's error, an answer the exchange cannot use.
        problem = bid_problem(reply.price_cents, reply.bid_id, vertical.max_bid)
        if problem is not None:
            reason = f"the exchange refuses this bid: {problem}"
            refused = Reading(
                BidOutcome.ERROR.value, False, reply.price_cents, reply.bid_id, reason
            )
            return refused, ()
    reading = Reading(
        reply.outcome.value,
        reply.outcome in _UNDERSTOOD_BIDS,
        price_cents=reply.price_cents,
        bid_id=reply.bid_id,
        reason=reply.reason,
    )
    if reply.outcome is BidOutcome.BID and (reply.price_cents or 0) < vertical.floor:
        floor = dollars_text(vertical.floor)
        return reading, (f"under the vertical's floor ({floor}): recorded as below_floor",)
    return reading, ()


async def _post(test: BuyerTest, transport: Transport, offer: PostOffer) -> Step:
    timeout_ms = min(test.buyer.post_timeout_ms, test.loaded.settings.post_deadline_ms)

    def read(response: HttpResponse) -> tuple[Reading, tuple[str, ...]]:
        reply = test.adapter.read_post(response)
        reading = Reading(
            reply.outcome.value,
            reply.outcome in _UNDERSTOOD_POSTS,
            price_cents=offer.price_cents,
            reason=reply.reason,
            buyer_lead_id=reply.buyer_lead_id,
            redirect_url=reply.redirect_url,
        )
        return reading, ()

    return await _call(
        test, transport, "post", timeout_ms, lambda now: test.adapter.post_request(offer, now), read
    )


async def _call(
    test: BuyerTest,
    transport: Transport,
    kind: Literal["ping", "post"],
    timeout_ms: int,
    build: Callable[[int], HttpRequest],
    read: Callable[[HttpResponse], tuple[Reading, tuple[str, ...]]],
) -> Step:
    """Build one request, send it as the exchange does, read the answer. An adapter that
    raises, a timeout and a failed connection are outcomes, as in the exchange."""
    ping = kind == "ping"
    error = (BidOutcome.ERROR if ping else PostOutcome.ERROR).value
    timeout = (BidOutcome.TIMEOUT if ping else PostOutcome.TIMEOUT).value
    try:
        request = build(int(time.time()))
    except Exception as exc:
        return Step(kind, timeout_ms, None, None, None, Reading(error, False, reason=_failed(exc)))
    sent = await deliver(transport, request, timeout_ms / 1000, buyer=test.buyer.id)
    latency_ms = sent.latency_us / 1000
    response = sent.response
    if response is None:
        if sent.timed_out:
            reading = Reading(timeout, False, reason=f"no answer within {timeout_ms} ms")
        else:
            reading = Reading(error, False, reason=sent.error)
        return Step(kind, timeout_ms, request, None, latency_ms, reading)
    try:
        reading, notes = read(response)
    except Exception as exc:  # an adapter must not raise; the exchange counts it an error
        reading, notes = Reading(error, False, reason=_failed(exc)), ()
    return Step(kind, timeout_ms, request, response, latency_ms, reading, notes)


def _failed(exc: Exception) -> str:
    detail = str(exc)
    return f"adapter failed: {type(exc).__name__}" + (f": {detail}" if detail else "")
