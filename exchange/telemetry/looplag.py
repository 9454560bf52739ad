"""How late the event loop runs what is due: the exchange's own scheduling delay.

A timer is due every ``interval_s``; how late it runs is the loop's lag at that moment
(time other callbacks held the loop). Auctions keep the recent lag back from their
deadline, as they keep back the recent commit time: an auction whose deadline timer
fires late would answer late. Operators see it as exchange_event_loop_lag_seconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

INTERVAL_S = 0.01
# How long a spike is remembered (half-life): stalls come in bursts of a few hundred ms
# on a busy machine, and an auction that forgot the last one runs into the next.
HALF_LIFE_S = 2.0


_LN2 = math.log(2)
# The loop's timers have millisecond resolution: lateness under 1 ms is noise.
_RESOLUTION_S = 0.001


class DecayingMax:
    """The largest recent value, halving every ``half_life_s`` since it was seen."""

    __slots__ = ("_at", "_half_life_s", "_value")

    def __init__(self, half_life_s: float = HALF_LIFE_S, initial: float = 0.0) -> None:
        self._half_life_s = half_life_s
        self._value = initial
        self._at: float | None = None  # the initial value has not started to fade yet

    def value(self, now: float) -> float:
        if self._at is None:
            return self._value
        return self._value * math.exp(-_LN2 * max(0.0, now - self._at) / self._half_life_s)

    def observe(self, value: float, now: float) -> None:
        if value >= self.value(now):
            self._value, self._at = value, now


class LagMonitor:
    def __init__(
        self,
        on_lag: Callable[[float], None] | None = None,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
        half_life_s: float = HALF_LIFE_S,
    ) -> None:
        self._on_lag = on_lag
        self._interval_s = interval_s
        self._clock = clock
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recent = DecayingMax(half_life_s)
        self._last = 0.0

    @property
    def recent_s(self) -> float:
        """The largest recent lag, decayed (see HALF_LIFE_S)."""
        return self._recent.value(self._clock())

    @property
    def sustained_s(self) -> float:
        """How far behind the loop has kept running: the smaller of the last tick's lag
        and how overdue the next tick is now. A single stall (a garbage collection, one
        slow callback) makes one tick late, not two in a row, so it does not count; a
        process with more work than CPU falls behind on every tick."""
        if self._timer is None:
            return 0.0
        overdue = self._clock() - self._due - _RESOLUTION_S
        return max(0.0, min(self._last, overdue))

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._clock() + self._interval_s
        self._timer = self._loop.call_later(self._interval_s, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        lag = max(0.0, now - self._due - _RESOLUTION_S)
        self._last = lag
        self._recent.observe(lag, now)
        if self._on_lag is not None:
            self._on_lag(lag)
        self._schedule()
