"""The event-loop lag monitor sees a blocked loop, and forgets it again."""

from __future__ import annotations

import asyncio
import time

from exchange.looplag import LagMonitor


async def test_a_blocked_loop_shows_as_lag_and_then_fades() -> None:
    seen: list[float] = []
    monitor = LagMonitor(seen.append, interval_s=0.01)
    monitor.start()
    try:
        await asyncio.sleep(0.05)
        assert monitor.recent_s < 0.02
        time.sleep(0.08)  # hold the loop: the next tick runs ~80 ms late
        await asyncio.sleep(0.03)
        assert max(seen) >= 0.06
        peak = monitor.recent_s
        assert peak >= 0.06
        await asyncio.sleep(0.5)
        assert monitor.recent_s < peak / 2
    finally:
        monitor.stop()
