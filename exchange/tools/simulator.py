"""Simulated buyers: real HTTP servers on loopback speaking SPEC section 5, or the
formats of real buyer APIs (SPEC section 8).

Used by the demo, the tests and the benchmarks. Each buyer gets its own server and port;
its behaviour (bid range, no-bid, latency, hangs, errors, rejects) comes from a
``SimulatedBuyerSpec`` and may be swapped at runtime with ``set_spec``. What each buyer
received is recorded (unless ``record=False``) so a test can check, say, that no PII
reached a ping endpoint.

A spec's ``dialect`` picks the wire format: ``json`` (ours, the default and the fast
path) or one of exchange/tools/dialects.py (form-encoded with XML answers, XML, custom
JSON). Whatever the format, a request is read in full before anything is decided, and
what to answer is decided here, the same way for every dialect.

The handler is kept minimal (aiohttp's low-level server, no router, no middleware, no
access log) because in benchmarks it shares the CPU with the exchange.

CLI: ``python -m exchange.tools.simulator --buyers N --base-port 9001 [--config sim.yaml]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import signal
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import yaml
from aiohttp import web

from buyers.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from exchange.core.money import dollars_json
from exchange.tools.dialects import (
    OUR_JSON,
    Dialect,
    Phase,
    PingAnswer,
    PostAnswer,
    Refused,
    Speaker,
)

PING_PATH = "/ping"
POST_PATH = "/post"
HANG_SECONDS = 3600.0  # far beyond any auction deadline; hangs end when the server stops
REJECT_REASON = "simulated reject"
OUT_OF_AREA = "out of area"
UNKNOWN_BID = "unknown bid id"
MAX_REMEMBERED_BIDS = 100_000  # bid ids a dialect buyer still recognises in a post

_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class SimulatedBuyerSpec:
    """How one simulated buyer behaves. Rates are probabilities, ranges are inclusive."""

    buyer_id: str
    secret: bytes = b""  # if set, requests without a good signature get 401
    bid_cents: tuple[int, int] = (500, 2500)
    no_bid_rate: float = 0.0
    latency_ms: tuple[float, float] = (0.0, 0.0)
    hang_rate: float = 0.0
    error_rate: float = 0.0
    reject_rate: float = 0.0
    post_latency_ms: tuple[float, float] = (0.0, 0.0)
    post_error_rate: float = 0.0
    post_hang_rate: float = 0.0
    seed: int | None = None
    bid_id_prefix: str = "bid-"
    lead_id_prefix: str = "lead-"
    # The wire format: our json, or form, xml, custom_json (exchange/tools/dialects.py).
    # A post naming a bid id this buyer never gave (those formats only) is rejected.
    dialect: Dialect = OUR_JSON
    states: tuple[str, ...] = ()  # bids only on leads in these states (empty: any)

    def __post_init__(self) -> None:
        if not self.buyer_id:
            raise ValueError("buyer_id must not be empty")
        for name in ("bid_cents", "latency_ms", "post_latency_ms"):
            low, high = getattr(self, name)
            if low < 0 or high < low:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high")
        for name in (
            "no_bid_rate",
            "hang_rate",
            "error_rate",
            "reject_rate",
            "post_error_rate",
            "post_hang_rate",
        ):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as a simulated buyer received it. ``body`` is the JSON body of a
    ``json`` buyer (None if not JSON, or another dialect); ``fields`` what a buyer of
    another dialect read from the request, under our field names (None if refused)."""

    path: str
    headers: Mapping[str, str]
    body: Any
    raw: bytes
    fields: Mapping[str, str] | None = None
    method: str = "POST"
    query_string: str = ""


@dataclass
class BuyerCounters:
    """What one simulated buyer has done since start."""

    pings: int = 0
    bids: int = 0
    no_bids: int = 0
    posts: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: int = 0
    hangs: int = 0
    unauthorized: int = 0


@dataclass
class _Buyer:
    spec: SimulatedBuyerSpec
    rng: random.Random
    record: bool
    counters: BuyerCounters = field(default_factory=BuyerCounters)
    received: list[ReceivedRequest] = field(default_factory=list)
    in_flight: set[asyncio.Task[Any]] = field(default_factory=set)
    runner: web.ServerRunner | None = None
    port: int = 0
    serial: int = 0
    speaker: Speaker | None = None  # None: our own JSON
    issued_bids: dict[str, None] = field(default_factory=dict)  # oldest first

    def __post_init__(self) -> None:
        self.speaker = self.spec.dialect.speaker()

    def remember_bid(self, bid_id: str) -> None:
        self.issued_bids[bid_id] = None
        if len(self.issued_bids) > MAX_REMEMBERED_BIDS:
            del self.issued_bids[next(iter(self.issued_bids))]


def _chance(rng: random.Random, rate: float) -> bool:
    # No draw for the common 0 and 1 cases: cheaper, and still reproducible per seed.
    return rate >= 1.0 or (rate > 0.0 and rng.random() < rate)


def _json(status: int, payload: Mapping[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), headers=_JSON_HEADERS)


class BuyerSimulator:
    """A set of simulated buyers, one loopback HTTP server each."""

    def __init__(
        self,
        specs: Iterable[SimulatedBuyerSpec] = (),
        *,
        host: str = "127.0.0.1",
        base_port: int = 0,
        record: bool = True,
    ) -> None:
        self._initial_specs = tuple(specs)
        self._host = host
        self._base_port = base_port
        self._record = record
        self._buyers: dict[str, _Buyer] = {}
        self._running = False

    async def __aenter__(self) -> BuyerSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(
        self,
        specs: Iterable[SimulatedBuyerSpec] | None = None,
        host: str | None = None,
        base_port: int | None = None,
    ) -> None:
        """Serve every buyer. ``base_port`` 0 picks free ports; else buyer i gets base + i."""
        if self._running:
            raise RuntimeError("simulator already started")
        self._running = True
        self._buyers = {}
        specs = self._initial_specs if specs is None else tuple(specs)
        host = self._host if host is None else host
        base_port = self._base_port if base_port is None else base_port
        self._host = host
        try:
            for index, spec in enumerate(specs):
                if spec.buyer_id in self._buyers:
                    raise ValueError(f"duplicate simulated buyer {spec.buyer_id!r}")
                buyer = _Buyer(spec, random.Random(spec.seed), self._record)
                self._buyers[spec.buyer_id] = buyer
                await self._serve(buyer, host, base_port + index if base_port else 0)
        except BaseException:
            await self.stop()
            raise

    async def _serve(self, buyer: _Buyer, host: str, port: int) -> None:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await self._handle(buyer, request)

        # handler_cancellation: a request the exchange gave up on (and disconnected)
        # stops sleeping instead of piling up as a hung task.
        server = web.Server(handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        buyer.runner = runner
        await web.TCPSite(runner, host, port).start()
        buyer.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop every server now; requests still hanging or sleeping are cancelled. What
        the buyers received and their counters stay readable until the next start."""
        self._running = False
        runners = []
        for buyer in self._buyers.values():
            for task in list(buyer.in_flight):
                task.cancel()
            if buyer.runner is not None:
                runners.append(buyer.runner)
                buyer.runner = None
        await asyncio.gather(*(runner.cleanup() for runner in runners), return_exceptions=True)

    def buyer_ids(self) -> list[str]:
        return list(self._buyers)

    def _buyer(self, buyer_id: str) -> _Buyer:
        try:
            return self._buyers[buyer_id]
        except KeyError:
            raise KeyError(f"no simulated buyer {buyer_id!r}") from None

    def port(self, buyer_id: str) -> int:
        return self._buyer(buyer_id).port

    def ping_url(self, buyer_id: str) -> str:
        return f"http://{self._host}:{self.port(buyer_id)}{PING_PATH}"

    def post_url(self, buyer_id: str) -> str:
        return f"http://{self._host}:{self.port(buyer_id)}{POST_PATH}"

    def exchange_buyer(
        self, buyer_id: str, lead_fields: Collection[str] = (), pii: Collection[str] = ()
    ) -> dict[str, Any]:
        """How the exchange's config reaches this buyer: ``ping_url``, ``post_url`` and
        ``secret`` for a ``json`` buyer; ``adapter: http`` with ``ping:`` and ``post:``
        templates in the buyer's dialect otherwise (see ``Speaker.exchange_buyer``)."""
        buyer = self._buyer(buyer_id)
        urls = (self.ping_url(buyer_id), self.post_url(buyer_id))
        secret = buyer.spec.secret.decode()
        if buyer.speaker is None:
            return {"ping_url": urls[0], "post_url": urls[1], "secret": secret}
        return buyer.speaker.exchange_buyer(*urls, lead_fields, pii, secret)

    def spec(self, buyer_id: str) -> SimulatedBuyerSpec:
        return self._buyer(buyer_id).spec

    def set_spec(self, buyer_id: str, spec: SimulatedBuyerSpec) -> None:
        """Change a buyer's behaviour from its next request on. A spec with a seed reseeds
        the buyer's random source; without one, the current source carries on."""
        if spec.buyer_id != buyer_id:
            raise ValueError(f"spec is for {spec.buyer_id!r}, not {buyer_id!r}")
        buyer = self._buyer(buyer_id)
        buyer.spec = spec
        buyer.speaker = spec.dialect.speaker()
        if spec.seed is not None:
            buyer.rng = random.Random(spec.seed)

    def received(self, buyer_id: str) -> list[ReceivedRequest]:
        return list(self._buyer(buyer_id).received)

    def counters(self, buyer_id: str) -> BuyerCounters:
        return dataclasses.replace(self._buyer(buyer_id).counters)

    def clear(self, buyer_id: str | None = None) -> None:
        """Forget recorded requests and zero the counters (of one buyer, or all)."""
        targets = [self._buyer(buyer_id)] if buyer_id else list(self._buyers.values())
        for buyer in targets:
            buyer.received.clear()
            buyer.counters = BuyerCounters()

    async def _handle(self, buyer: _Buyer, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            buyer.in_flight.add(task)
        try:
            return await self._answer(buyer, request)
        finally:
            if task is not None:
                buyer.in_flight.discard(task)

    async def _answer(self, buyer: _Buyer, request: web.BaseRequest) -> web.StreamResponse:
        if buyer.speaker is not None:
            return await self._answer_dialect(buyer, buyer.speaker, request)
        path = request.path
        if path not in (PING_PATH, POST_PATH):
            return _json(404, {"error": "not found"})
        if request.method != "POST":
            return _json(405, {"error": "method not allowed"})
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if buyer.record:
            buyer.received.append(ReceivedRequest(path, dict(request.headers), body, raw))
        spec = buyer.spec
        if spec.secret:
            problem = _signature_problem(spec.secret, request, raw)
            if problem is not None:
                buyer.counters.unauthorized += 1
                return _json(401, {"error": problem})
        if not isinstance(body, dict):
            buyer.counters.errors += 1
            return _json(400, {"error": "body must be a JSON object"})
        if path == PING_PATH:
            lead = body.get("lead") if spec.states else None
            state = lead.get("state") if isinstance(lead, dict) else None
            bid = await _decide_ping(buyer, spec, state if isinstance(state, str) else None)
            if bid.error:
                return _json(500, {"error": "simulated error"})
            if bid.bid_cents is None:
                return web.Response(status=204)
            return _json(200, {"bid": dollars_json(bid.bid_cents), "bid_id": bid.bid_id})
        verdict = await _decide_post(buyer, spec, None)
        if verdict.error:
            return _json(500, {"error": "simulated error"})
        if not verdict.accepted:
            return _json(200, {"accepted": False, "reason": verdict.reason})
        return _json(200, {"accepted": True, "buyer_lead_id": verdict.lead_id})

    async def _answer_dialect(
        self, buyer: _Buyer, speaker: Speaker, request: web.BaseRequest
    ) -> web.StreamResponse:
        path = request.path
        if path not in (PING_PATH, POST_PATH):
            return speaker.refusal(404, "not found")
        if request.method not in speaker.methods:
            return speaker.refusal(405, "method not allowed")
        raw = await request.read()
        phase: Phase = "ping" if path == PING_PATH else "post"
        spec = buyer.spec
        fields: dict[str, str] | None = None
        try:
            if spec.secret:
                problem = _signature_problem(spec.secret, request, raw)
                if problem is not None:
                    raise Refused(401, problem)
            fields = speaker.read(phase, request.headers, request.query, raw)
        except Refused as refused:
            if refused.status == 401:
                buyer.counters.unauthorized += 1
            else:
                buyer.counters.errors += 1
            return speaker.refusal(refused.status, refused.reason)
        finally:
            if buyer.record:
                seen = (path, dict(request.headers), None, raw, fields)
                buyer.received.append(ReceivedRequest(*seen, request.method, request.query_string))
        if phase == "ping":
            bid = await _decide_ping(buyer, spec, fields.get("state"))
            if bid.bid_id is not None and speaker.reference_field is not None:
                buyer.remember_bid(bid.bid_id)
            return speaker.ping_response(bid)
        known = fields.get("bid_id") in buyer.issued_bids
        verdict = await _decide_post(buyer, spec, known if speaker.reference_field else None)
        return speaker.post_response(verdict)


def _signature_problem(secret: bytes, request: web.BaseRequest, raw: bytes) -> str | None:
    return verify(
        secret,
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(SIGNATURE_HEADER),
        raw,
        time.time(),
    )


async def _decide_ping(buyer: _Buyer, spec: SimulatedBuyerSpec, state: str | None) -> PingAnswer:
    """Whether and what to bid, for every dialect alike. ``state``: the lead's, as read."""
    counters, rng = buyer.counters, buyer.rng
    counters.pings += 1
    if _chance(rng, spec.hang_rate):
        counters.hangs += 1
        await asyncio.sleep(HANG_SECONDS)
    await _pause(rng, spec.latency_ms)
    if _chance(rng, spec.error_rate):
        counters.errors += 1
        return PingAnswer(error=True)
    if spec.states and (state or "").upper() not in spec.states:
        counters.no_bids += 1
        return PingAnswer(reason=OUT_OF_AREA)
    if _chance(rng, spec.no_bid_rate):
        counters.no_bids += 1
        return PingAnswer(reason="no match")
    counters.bids += 1
    buyer.serial += 1
    return PingAnswer(rng.randint(*spec.bid_cents), f"{spec.bid_id_prefix}{buyer.serial}")


async def _decide_post(
    buyer: _Buyer, spec: SimulatedBuyerSpec, bid_known: bool | None
) -> PostAnswer:
    """Whether to take a post, for every dialect alike. ``bid_known``: whether the post
    names a bid this buyer made (None: the buyer's format names none)."""
    counters, rng = buyer.counters, buyer.rng
    counters.posts += 1
    if _chance(rng, spec.post_hang_rate):
        counters.hangs += 1
        await asyncio.sleep(HANG_SECONDS)
    await _pause(rng, spec.post_latency_ms)
    if _chance(rng, spec.post_error_rate):
        counters.errors += 1
        return PostAnswer(error=True)
    if bid_known is False:
        counters.rejected += 1
        return PostAnswer(reason=UNKNOWN_BID)
    if _chance(rng, spec.reject_rate):
        counters.rejected += 1
        return PostAnswer(reason=REJECT_REASON)
    counters.accepted += 1
    buyer.serial += 1
    return PostAnswer(True, f"{spec.lead_id_prefix}{buyer.serial}")


async def _pause(rng: random.Random, range_ms: tuple[float, float]) -> None:
    low, high = range_ms
    if high > 0:
        await asyncio.sleep((low if low == high else rng.uniform(low, high)) / 1000)


# ---------------------------------------------------------------------------------------
# CLI


def _range(value: Any, key: str) -> tuple[Any, Any]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{key} must be a list of two numbers [low, high]")
    return (value[0], value[1])


_FIELDS = {f.name: f for f in dataclasses.fields(SimulatedBuyerSpec)}
_RANGE_FIELDS = {"bid_cents", "latency_ms", "post_latency_ms"}


def spec_from_mapping(buyer_id: str, settings: Mapping[str, Any]) -> SimulatedBuyerSpec:
    """A spec from config keys named like the dataclass fields (``secret`` as text,
    ``dialect`` as a format's name or a mapping of ``Dialect``'s fields)."""
    values: dict[str, Any] = {}
    try:
        for key, value in settings.items():
            if key not in _FIELDS or key == "buyer_id":
                raise ValueError(f"unknown key {key!r}")
            values[key] = _CONVERSIONS.get(key, _as_is)(value, key)
        return SimulatedBuyerSpec(buyer_id=buyer_id, **values)
    except (TypeError, ValueError) as problem:
        raise ValueError(f"buyer {buyer_id!r}: {problem}") from None


def _as_is(value: Any, key: str) -> Any:
    return value


def _states(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{key} must be a list of state codes")
    return tuple(str(state).upper() for state in value)


_CONVERSIONS: Mapping[str, Callable[[Any, str], Any]] = {
    **{key: _range for key in _RANGE_FIELDS},
    "secret": lambda value, key: str(value).encode(),
    "dialect": lambda value, key: Dialect.from_config(value),
    "states": _states,
}


def load_specs(path: Path, count: int = 0) -> list[SimulatedBuyerSpec]:
    """Specs from a YAML file, topped up with default buyers to ``count``.

    Format: ``defaults: {...}`` applied to every buyer, ``buyers: {buyer_id: {...}}``,
    keys named like ``SimulatedBuyerSpec``'s fields (``dialect: form``, ``fields: {...}``).
    """
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    defaults = document.get("defaults") or {}
    buyers = document.get("buyers") or {}
    if not isinstance(defaults, dict) or not isinstance(buyers, dict):
        raise ValueError(f"{path}: 'defaults' and 'buyers' must be mappings")
    specs = [
        spec_from_mapping(str(buyer_id), {**defaults, **(settings or {})})
        for buyer_id, settings in buyers.items()
    ]
    return specs + default_specs(count - len(specs), defaults, start=len(specs) + 1)


def default_specs(
    count: int, settings: Mapping[str, Any] | None = None, start: int = 1
) -> list[SimulatedBuyerSpec]:
    return [
        spec_from_mapping(f"sim-buyer-{number}", settings or {})
        for number in range(start, start + max(count, 0))
    ]


async def _serve_forever(specs: Sequence[SimulatedBuyerSpec], host: str, base_port: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    async with BuyerSimulator(specs, host=host, base_port=base_port, record=False) as sim:
        for buyer_id in sim.buyer_ids():
            print(f"{buyer_id} ping={sim.ping_url(buyer_id)} post={sim.post_url(buyer_id)}")
        sys.stdout.flush()
        await stopping.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exchange.tools.simulator", description="Serve simulated buyers on loopback."
    )
    parser.add_argument("--buyers", type=int, default=3, help="number of buyers (default 3)")
    parser.add_argument("--base-port", type=int, default=9001, help="0 picks free ports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", type=Path, help="YAML file of buyer specs")
    args = parser.parse_args(argv)
    try:
        if args.config is not None:
            specs = load_specs(args.config, args.buyers)
        else:
            specs = default_specs(args.buyers)
    except (OSError, ValueError, yaml.YAMLError) as problem:
        print(f"simulator: {problem}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(specs, args.host, args.base_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
