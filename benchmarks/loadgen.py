"""The load generator: seller traffic at a fixed rate (open loop) or as fast as the server
answers (closed loop), from its own process, on raw keep-alive connections.

    python -m benchmarks.loadgen '<JSON options>'     (see LoadOptions)

Open loop is wrk2's discipline: request i is due at ``start + i / rate`` whatever the
server does; a request finding no idle connection waits for one. Connections are opened
before the run, in small batches: opening hundreds at once while the server is busy
overflows its listen backlog, and the kernel's one-second SYN retry would then be
charged to the server. Latency is measured from the time a request was *due*,
not from when it was written, so a server that falls behind is charged for the queue it
causes (no coordinated omission). The event loop's timers fire with ~1 ms granularity,
so a request is written up to ~1 ms after it was due; that lag is part of every number
(the same for every server measured) and is reported separately as ``lag_us``.

Protocol on stdout: a line ``GO`` when the measured window starts (after the warm-up),
``DONE`` when its last answer came in (or the drain time ran out), then one JSON line
of results. The benchmark reads server CPU between GO and DONE.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httptools
import orjson
import uvloop

from benchmarks.histogram import LatencyHistogram, new_histogram
from benchmarks.scenario import SELLER_KEY, full_leads_json, ping_bodies


@dataclass
class LoadOptions:
    port: int
    # "open" (fixed rate), "closed" (concurrency, as fast as answered) or "probe" (closed
    # loop at each of probe_steps' concurrencies in turn, to find the saturation point)
    mode: str = "open"
    rate: float = 100.0  # open loop: pings per second
    concurrency: int = 64  # closed loop: requests in flight
    duration_s: float = 3.0  # the measured window
    warmup_s: float = 0.5  # same load before the window, not recorded
    tmax_ms: int = 250
    late_slack_ms: float = 5.0  # an answer later than tmax + this is late
    # Connections opened before the run, like a load balancer's pool (0: enough for the
    # rate at 400 ms per answer, or the concurrency). Lost ones are replaced; past that,
    # requests queue in the generator, measured from when they were due.
    connections: int = 0
    drain_s: float = 2.0  # after the window, how long to wait for answers still out
    post_share: float = 0.0  # share of bid answers followed by a /v1/post (exchange only)
    host: str = "127.0.0.1"
    seed: int = 5
    probe_steps: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)
    probe_p99_limit_ms: float = 150.0  # a probe step with a slower p99 is past saturation


@dataclass
class _Request:
    kind: str  # "ping" or "post"
    due: float  # perf_counter seconds
    payload: bytes
    measured: bool
    lead_index: int
    written: float = 0.0


@dataclass
class Outcome:
    sent: int = 0
    completed: int = 0
    ok: int = 0
    bid: int = 0
    no_bid: int = 0
    late: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    posts_sent: int = 0
    sold: int = 0
    unsold: int = 0
    post_other: int = 0
    connections_opened: int = 0


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, on_answer: Callable[[_Connection, _Request, int, bytes, float], None],
                 on_lost: Callable[[_Connection, _Request | None], None]) -> None:  # fmt: skip
        self._on_answer = on_answer
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._status = 0
        self.request: _Request | None = None
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def send(self, request: _Request) -> None:
        assert self._transport is not None
        self.request = request
        request.written = time.perf_counter()
        self._transport.write(request.payload)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        request, self.request = self.request, None
        body, self._body = b"".join(self._body), []
        if request is not None:
            self._on_answer(self, request, self._status, body, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep_alive = False
        self._transport = None
        request, self.request = self.request, None
        self._on_lost(self, request)

    @property
    def usable(self) -> bool:
        return self.keep_alive and self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


_MIN_SLEEP_S = 0.001


class LoadGenerator:
    def __init__(self, options: LoadOptions) -> None:
        self.options = options
        self.outcome = Outcome()
        self.latency: LatencyHistogram = new_histogram()
        self.service: LatencyHistogram = new_histogram()
        self.lag: LatencyHistogram = new_histogram()
        self.post_latency: LatencyHistogram = new_histogram()
        self._rng = random.Random(options.seed)
        self._late_s = (options.tmax_ms + options.late_slack_ms) / 1000
        head = (
            f"POST /v1/ping HTTP/1.1\r\nHost: {options.host}:{options.port}\r\n"
            f"Authorization: Bearer {SELLER_KEY}\r\nContent-Type: application/json\r\n"
            "Content-Length: "
        ).encode()
        self._pings = [b"%s%d\r\n\r\n%s" % (head, len(b), b) for b in ping_bodies()]
        self._post_head = head.replace(b"/v1/ping", b"/v1/post")
        self._leads = full_leads_json()
        self._idle: list[_Connection] = []
        self._queue: deque[_Request] = deque()
        self._open = 0
        self._in_flight = 0
        self._measured_out = 0
        self._all_answered = asyncio.Event()
        self._closing = False
        self._connections: set[_Connection] = set()
        self._connecting: set[asyncio.Task[None]] = set()
        self._pool_size = options.connections or self._auto_pool_size()
        self._serial = 0
        self._window_start = 0.0
        self._window_end = 0.0
        self._closed_until = 0.0  # closed loop: refill until then

    def _auto_pool_size(self) -> int:
        options = self.options
        if options.mode == "open":
            return min(2048, int(options.rate * 0.4) + 16)
        if options.mode == "probe":
            return max(options.probe_steps)
        return options.concurrency

    async def _preopen(self) -> None:
        loop = asyncio.get_running_loop()
        options = self.options
        while self._open < self._pool_size:
            batch = min(32, self._pool_size - self._open)
            opened = await asyncio.gather(
                *(loop.create_connection(lambda: _Connection(self._on_answer, self._on_lost),
                                         options.host, options.port) for _ in range(batch)),
                return_exceptions=True,
            )  # fmt: skip
            for item in opened:
                if isinstance(item, BaseException):
                    raise SystemExit(f"load generator: cannot connect: {item}")
                connection = item[1]
                self._open += 1
                self.outcome.connections_opened += 1
                self._connections.add(connection)
                self._idle.append(connection)

    # -- dispatching ------------------------------------------------------------------

    def _ping(self, due: float, measured: bool, serial: int) -> _Request:
        index = serial % len(self._pings)
        return _Request("ping", due, self._pings[index], measured, index)

    def _dispatch(self, request: _Request) -> None:
        self._in_flight += 1
        if request.measured:
            self._measured_out += 1
            if request.kind == "ping":
                self.outcome.sent += 1
            else:
                self.outcome.posts_sent += 1
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                connection.send(request)
                return
        if self._open < self._pool_size:
            self._spawn_connection(request)
        else:
            self._queue.append(request)

    def _spawn_connection(self, request: _Request) -> None:
        self._open += 1
        task = asyncio.get_running_loop().create_task(self._connect_and_send(request))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_and_send(self, request: _Request) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._on_answer, self._on_lost),
                self.options.host, self.options.port,
            )  # fmt: skip
        except OSError:
            self._open -= 1
            self._fail(request)
            return
        self.outcome.connections_opened += 1
        self._connections.add(connection)
        connection.send(request)

    def _next_for(self, connection: _Connection) -> None:
        if self._queue and connection.usable:
            connection.send(self._queue.popleft())
        elif connection.usable:
            self._idle.append(connection)

    def _finish(self, request: _Request) -> None:
        self._in_flight -= 1
        if request.measured:
            self._measured_out -= 1
            if self._measured_out == 0 and self._closing:
                self._all_answered.set()
        if self._closed_until:
            self._refill(request)

    def _fail(self, request: _Request) -> None:
        if request.measured:
            self.outcome.errors += 1
        self._finish(request)

    # -- answers ------------------------------------------------------------------------

    def _on_answer(
        self, connection: _Connection, request: _Request, status: int, body: bytes, now: float
    ) -> None:
        self._next_for(connection)
        if request.measured:
            self._record(request, status, body, now)
        self._finish(request)

    def _on_lost(self, connection: _Connection, request: _Request | None) -> None:
        self._connections.discard(connection)
        self._open -= 1
        if request is not None:
            self._fail(request)
        if self._queue and self._open < self._pool_size:
            # Keep the queue moving through a fresh connection.
            self._spawn_connection(self._queue.popleft())

    def _record(self, request: _Request, status: int, body: bytes, now: float) -> None:
        outcome = self.outcome
        latency_us = int((now - request.due) * 1e6)
        key = str(status)
        outcome.statuses[key] = outcome.statuses.get(key, 0) + 1
        if request.kind == "post":
            self.post_latency.record(latency_us)
            if status == 200 and b'"status":"sold"' in body:
                outcome.sold += 1
            elif status == 200:
                outcome.unsold += 1
            else:
                outcome.post_other += 1
            return
        outcome.completed += 1
        self.latency.record(latency_us)
        self.service.record(int((now - request.written) * 1e6))
        self.lag.record(int((request.written - request.due) * 1e6))
        if now - request.due > self._late_s:
            outcome.late += 1
        if status != 200:
            return
        outcome.ok += 1
        if b'"status":"bid"' in body:
            outcome.bid += 1
            if self.options.post_share and self._rng.random() < self.options.post_share:
                self._post(body, request.lead_index, now)
        else:
            outcome.no_bid += 1

    def _post(self, ping_answer: bytes, lead_index: int, now: float) -> None:
        ping_id = orjson.loads(ping_answer)["ping_id"]
        body = b'{"ping_id":"%s","lead":%s}' % (ping_id.encode(), self._leads[lead_index])
        payload = b"%s%d\r\n\r\n%s" % (self._post_head, len(body), body)
        self._dispatch(_Request("post", now, payload, True, lead_index))

    # -- the two disciplines ----------------------------------------------------------

    async def run_open(self) -> tuple[float, float]:
        """Returns the measured window (start, end) in perf_counter seconds."""
        options = self.options
        rate = options.rate
        start = time.perf_counter()
        window_start = start + options.warmup_s
        total = int(rate * (options.warmup_s + options.duration_s))
        announced = False
        serial = 0
        while serial < total:
            now = time.perf_counter()
            due_count = min(total, int((now - start) * rate) + 1)
            while serial < due_count:
                due = start + serial / rate
                if not announced and due >= window_start:
                    _say("GO")
                    announced = True
                self._dispatch(self._ping(due, due >= window_start, serial))
                serial += 1
            next_due = start + serial / rate
            # uvloop's timers count whole milliseconds: a shorter sleep is no sleep at
            # all, and the generator would spin a core between sends. Requests due within
            # the millisecond go out together; latency still counts from each one's due.
            await asyncio.sleep(max(_MIN_SLEEP_S, next_due - time.perf_counter()))
        return window_start, start + options.warmup_s + options.duration_s

    async def run_closed(self) -> tuple[float, float]:
        """``concurrency`` requests always in flight: each answer sends the next one."""
        options = self.options
        start = time.perf_counter()
        self._window_start = window_start = start + options.warmup_s
        self._closed_until = window_end = window_start + options.duration_s
        self._window_end = window_end
        for _ in range(options.concurrency):
            self._dispatch(self._ping(start, False, self._serial))
            self._serial += 1
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        _say("GO")
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        return window_start, window_end

    def _refill(self, request: _Request) -> None:
        now = time.perf_counter()
        if request.kind == "ping" and now < self._closed_until:
            measured = self._window_start <= now < self._window_end
            self._dispatch(self._ping(now, measured, self._serial))
            self._serial += 1

    async def run_probe(self) -> list[dict[str, Any]]:
        """Closed loop at rising concurrency until the throughput stops growing (under 5%
        more) or p99 passes ``probe_p99_limit_ms``; one result per step."""
        options = self.options
        steps: list[dict[str, Any]] = []
        best = 0.0
        in_flight = 0
        self._closed_until = float("inf")
        _say("GO")
        for concurrency in options.probe_steps:
            now = time.perf_counter()
            self._window_start = now + options.warmup_s
            self._window_end = self._window_start + options.duration_s
            for _ in range(concurrency - in_flight):
                self._dispatch(self._ping(now, False, self._serial))
                self._serial += 1
            in_flight = concurrency
            await asyncio.sleep(options.warmup_s)
            self._reset()
            await asyncio.sleep(max(0.0, self._window_end - time.perf_counter()))
            result = self._results(self._window_start, self._window_end, self._window_end, 0)
            result["concurrency"] = concurrency
            steps.append(result)
            p99_ms = result["latency_us"].get("p99", 0) / 1000
            achieved = result["achieved_per_s"]
            if p99_ms > options.probe_p99_limit_ms or achieved < best * 1.05:
                break
            best = achieved
        self._closed_until = 0.0
        return steps

    def _reset(self) -> None:
        self.outcome = Outcome()
        self.latency = new_histogram()
        self.service = new_histogram()
        self.lag = new_histogram()
        self.post_latency = new_histogram()

    async def run(self) -> dict[str, Any]:
        options = self.options
        await self._preopen()
        if options.mode == "probe":
            steps = await self.run_probe()
            await self._drain()
            return {"options": asdict(options), "steps": steps, **_saturation(steps, options)}
        if options.mode == "closed":
            window_start, window_end = await self.run_closed()
        else:
            window_start, window_end = await self.run_open()
        done_at, unanswered = await self._drain()
        return self._results(window_start, window_end, done_at, unanswered)

    async def _drain(self) -> tuple[float, int]:
        """Wait for measured answers still out; returns (when done, how many never came)."""
        self._closing = True
        if self._measured_out > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_answered.wait(), self.options.drain_s)
        done_at = time.perf_counter()
        _say("DONE")
        unanswered = self._measured_out
        for connection in list(self._connections):
            connection.close()
        await asyncio.sleep(0)
        return done_at, unanswered

    def _results(
        self, window_start: float, window_end: float, done_at: float, unanswered: int
    ) -> dict[str, Any]:
        options = self.options
        window = window_end - window_start
        cpu = os.times()
        return {
            "options": asdict(options),
            "outcome": asdict(self.outcome),
            "unanswered": unanswered,
            "window_s": window,
            "drain_s": max(0.0, done_at - window_end),
            "achieved_per_s": self.outcome.ok / window if window > 0 else 0.0,
            "latency_us": summary(self.latency),
            "service_us": summary(self.service),
            "lag_us": summary(self.lag),
            "post_latency_us": summary(self.post_latency),
            "histogram": self.latency.kind,
            "loadgen_cpu_s": cpu.user + cpu.system,
        }


def _saturation(steps: list[dict[str, Any]], options: LoadOptions) -> dict[str, Any]:
    """The best step whose p99 stayed under the limit with every answer a 200."""
    valid = [
        step
        for step in steps
        if step["latency_us"].get("p99", 0) / 1000 <= options.probe_p99_limit_ms
        and step["outcome"]["ok"] == step["outcome"]["completed"]
        and step["outcome"]["errors"] == 0
    ]
    best = max(valid or steps, key=lambda step: step["achieved_per_s"])
    return {
        "saturation_per_s": best["achieved_per_s"],
        "saturation_concurrency": best["concurrency"],
        "saturation_valid": bool(valid),
    }


def summary(histogram: LatencyHistogram) -> dict[str, float]:
    if histogram.count() == 0:
        return {"count": 0}
    return {
        "count": histogram.count(),
        "p50": histogram.percentile(50),
        "p90": histogram.percentile(90),
        "p99": histogram.percentile(99),
        "p99.9": histogram.percentile(99.9),
        "max": histogram.max(),
        "mean": round(histogram.mean(), 1),
    }


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    fields = orjson.loads(sys.argv[1])
    if "probe_steps" in fields:
        fields["probe_steps"] = tuple(fields["probe_steps"])
    options = LoadOptions(**fields)
    results = uvloop.run(LoadGenerator(options).run())
    _say(orjson.dumps(results).decode())


if __name__ == "__main__":
    main()
