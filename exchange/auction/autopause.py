"""Auto-pause (exchange.auto_pause, docs/operations.md): a real-time buyer whose pings
mostly fail is paused, and resumed once a probe ping gets an answer again.

- **Judged on the ledger**, across every process: among the buyer's pings recorded in
  the last ``window_s`` (bid outcomes bid, no_bid, below_floor, timeout, error), at least
  ``min_requests`` and at least ``error_rate`` of them timeouts or errors. Only pings
  since the buyer was last (re)enabled count, so a buyer an operator resumes is judged
  on its new pings. Nothing runs per ping: each process checks every few seconds.
- **A change like any other**, by ``system``, action ``auto_pause`` with the figures in
  its reason: in GET /v1/changes, counted in exchange_buyer_auto_pauses_total, shown by
  exchange_buyer_paused (alert ExchangeBuyerAutoPaused).
- **Resumed** by an operator (``lead-exchange admin resume``), or after ``cool_down_s``
  by a probe: one ping of a made-up lead with the buyer's own adapter; an answer (a bid
  or no bid) resumes it (action ``auto_resume``), a failure waits another cool-down.
  Only a buyer whose newest change is the auto-pause is probed: one an operator paused
  stays paused. **One process probes**, not each of them: the first to claim the
  buyer's row of buyer_probes for this cool-down (exchange/ledger/probes.py, one atomic
  statement) sends the probe; the others see the claim and wait for the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

import structlog

from buyers.adapter import PingOffer
from exchange.auction.context import BuyerRuntime, ExchangeContext, SettingsSnapshot
from exchange.auction.live import LiveSettings
from exchange.auction.pinging import storable_bid
from exchange.core.config import SYSTEM_ACTOR, AutoPause, BuyerConfig
from exchange.core.fields import FieldSpec
from exchange.core.outcomes import CALLED_OUTCOMES, BidOutcome
from exchange.core.settings import Change, update_entry
from exchange.ledger.faults import DATABASE_DOWN
from exchange.ledger.probes import ProbeClaims
from exchange.ledger.settings import SettingsLedger

log = structlog.get_logger("exchange.autopause")

FAILED = [BidOutcome.TIMEOUT.value, BidOutcome.ERROR.value]
CALLED = sorted(o.value for o in CALLED_OUTCOMES)
MAX_CHECK_S = 5.0
PROBE_TIMEOUT_MS = 1000


class _NothingToDo(Exception):
    """The change is no longer needed (another process made it first)."""


class AutoPauser:
    def __init__(
        self, ctx: ExchangeContext, live: LiveSettings, ledger: SettingsLedger, rules: AutoPause
    ) -> None:
        self._ctx = ctx
        self._live = live
        self._ledger = ledger
        self._rules = rules
        self._check_s = min(MAX_CHECK_S, rules.window_s / 6)
        self._started = ctx.clock.now()
        self._enabled_at: dict[str, datetime] = {}
        self._claims = ProbeClaims(ledger.pool, ctx.store.owner)
        self._enabled = {b.id for b in ctx.loaded.config.buyers if b.enabled}
        self._task: asyncio.Task[None] | None = None
        live.on_adopt(self._adopted)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _adopted(self, snapshot: SettingsSnapshot) -> None:
        now = self._ctx.clock.now()
        enabled = {b.id for b in snapshot.loaded.config.buyers if b.enabled}
        for buyer_id in enabled - self._enabled:
            self._enabled_at[buyer_id] = now
        self._enabled = enabled

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._check_s)
            try:
                await self.check()
            except DATABASE_DOWN as exc:
                log.warning("auto_pause_check_failed", error=type(exc).__name__)

    async def check(self) -> None:
        """Pause the failing buyers, probe the auto-paused ones whose cool-down is over."""
        now = self._ctx.clock.now()
        config = self._ctx.loaded.config
        window_start = now - timedelta(seconds=self._rules.window_s)
        since = {
            b.id: max(window_start, self._started, self._enabled_at.get(b.id, self._started))
            for b in config.buyers
            if b.enabled and not b.fixed_price
        }
        counts = await self._ledger.buyer_failures(since, CALLED, FAILED)
        for buyer_id, (failed, called) in counts.items():
            if called >= self._rules.min_requests and failed >= self._rules.error_rate * called:
                reason = (
                    f"auto-pause: {failed} of {called} pings failed (timeout or error) in the "
                    f"last {self._rules.window_s} s"
                )
                await self._set_enabled(buyer_id, False, "auto_pause", reason)
        paused = [b for b in config.buyers if not b.enabled and not b.fixed_price]
        last = await self._ledger.last_changes("buyers", [b.id for b in paused])
        cool_down = timedelta(seconds=self._rules.cool_down_s)
        for buyer in paused:
            change = last.get(buyer.id)
            if change is None or change.action != "auto_pause":
                continue
            if now - change.created_at < cool_down:
                continue
            if await self._claims.claim(buyer.id, change.version, now, cool_down):
                outcome = await self._probe(buyer)
                if outcome in (BidOutcome.BID, BidOutcome.NO_BID, BidOutcome.BELOW_FLOOR):
                    reason = f"auto-resume: a probe ping after the cool-down got {outcome.value}"
                    await self._set_enabled(buyer.id, True, "auto_resume", reason)
                else:
                    log.info("auto_pause_probe_failed", buyer=buyer.id, outcome=outcome.value)

    async def _set_enabled(self, buyer_id: str, enabled: bool, action: str, reason: str) -> None:
        def make(document: dict[str, Any]) -> Change:
            change = update_entry(document, "buyers", buyer_id, {"enabled": enabled})
            if change.before is not None and change.before.get("enabled", True) == enabled:
                raise _NothingToDo
            return change

        try:
            version, _ = await self._live.change(SYSTEM_ACTOR, make, reason, action)
        except _NothingToDo:
            return
        if not enabled:
            self._ctx.metrics.record_auto_pause(buyer_id)
        log.warning(action, buyer=buyer_id, version=version, reason=reason)

    async def _probe(self, buyer: BuyerConfig) -> BidOutcome:
        """One ping of a made-up lead to the buyer, outside any auction (not recorded)."""
        ctx = self._ctx
        config = ctx.loaded.config
        vertical = buyer.verticals[0]
        schema = config.verticals[vertical]
        runtime = BuyerRuntime.from_config(buyer, config.verticals)
        timeout_ms = min(runtime.timeout_ms or PROBE_TIMEOUT_MS, config.exchange.tmax_ms)
        lead = {name: probe_value(spec) for name, spec in schema.fields.items() if not spec.pii}
        offer = PingOffer(ctx.new_id(), vertical, timeout_ms, schema.floor, lead)
        loop = asyncio.get_running_loop()
        try:
            request = runtime.adapter.ping_request(offer, int(ctx.clock.unix_time()))
            until = loop.time() + timeout_ms / 1000
            async with asyncio.timeout(timeout_ms / 1000 + 0.5):
                response = await ctx.transport.start(request, until, buyer=buyer.id)
        except Exception:  # any failure is the probe's answer: still failing
            return BidOutcome.ERROR
        return storable_bid(runtime, response).outcome


def probe_value(spec: FieldSpec) -> Any:
    """A plausible value of a non-PII field for a probe ping."""
    kind = spec.type
    if kind == "enum" and spec.values:
        return spec.values[0]
    if kind in ("integer", "number"):
        low = spec.min if spec.min is not None else 0
        high = spec.max if spec.max is not None else low + 60
        middle = (low + high) / 2
        return int(middle) if kind == "integer" else float(middle)
    samples: dict[str, Any] = {"zip": "90210", "state": "CA", "boolean": True,
                               "date": "1990-01-01"}  # fmt: skip
    return samples.get(kind, "probe")
