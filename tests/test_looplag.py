"""The event-loop lag monitor sees a blocked loop, and forgets it again."""

from __future__ import annotations

import asyncio
import time

from exchange.looplag import DecayingMax, LagMonitor


async def test_a_blocked_loop_shows_as_lag_and_then_fades() -> None:
    seen: list[float] = []
    monitor = LagMonitor(seen.append, interval_s=0.01, half_life_s=0.2)
    monitor.start()
    try:
        await asyncio.sleep(0.05)
        assert monitor.recent_s < 0.02
        time.sleep(0.08)  # noqa: ASYNC251 -- holds the loop: the next tick runs ~80 ms late
        await asyncio.sleep(0.03)
        assert max(seen) >= 0.06
        peak = monitor.recent_s
        assert peak >= 0.06
        await asyncio.sleep(0.5)
        assert monitor.recent_s < peak / 2  # two half-lives and more
    finally:
        monitor.stop()


def test_decaying_max_keeps_the_largest_and_halves_it_per_half_life() -> None:
    recent = DecayingMax(half_life_s=1.0, initial=0.004)
    assert recent.value(100.0) == 0.004  # the initial guess holds until a value is seen
    recent.observe(0.010, 100.0)
    recent.observe(0.002, 100.5)  # smaller than what is remembered: ignored
    assert abs(recent.value(101.0) - 0.005) < 1e-12
    recent.observe(0.006, 101.0)  # larger than the decayed maximum: replaces it
    assert recent.value(101.0) == 0.006
