"""How late the event loop runs what is due: the exchange's own scheduling delay.

A timer is due every ``interval_s``; how late it runs is the loop's lag at that moment
(time other callbacks held the loop). Auctions keep the recent lag back from their
deadline, as they keep back the recent commit time: an auction whose deadline timer
fires late would answer late. Operators see it as exchange_event_loop_lag_seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

INTERVAL_S = 0.01
# Per tick, the remembered lag keeps this share of itself: a spike fades in ~0.35 s.
DECAY = 0.98


class LagMonitor:
    def __init__(
        self,
        on_lag: Callable[[float], None] | None = None,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._on_lag = on_lag
        self._interval_s = interval_s
        self._clock = clock
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.recent_s = 0.0  # a decaying maximum of recent lags

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
        # The loop's timers have millisecond resolution: lateness under 1 ms is noise.
        lag = max(0.0, self._clock() - self._due - 0.001)
        self.recent_s = max(lag, self.recent_s * DECAY)
        if self._on_lag is not None:
            self._on_lag(lag)
        self._schedule()
