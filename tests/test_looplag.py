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


async def _hog_loop(hold_s: float, for_s: float) -> None:
    """Keep the loop busy: a callback that holds it ``hold_s`` at a time, again and again
    for ``for_s`` (a process with more work than CPU)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + for_s
    done: asyncio.Future[None] = loop.create_future()

    def hog() -> None:
        time.sleep(hold_s)
        if loop.time() < until:
            loop.call_soon(hog)
        elif not done.done():
            done.set_result(None)

    loop.call_soon(hog)
    await done


async def test_a_loop_that_keeps_running_late_shows_as_sustained_lag() -> None:
    monitor = LagMonitor(interval_s=0.01)
    monitor.start()
    seen: list[float] = []

    async def watch() -> None:
        while True:
            seen.append(monitor.sustained_s)
            await asyncio.sleep(0)

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await _hog_loop(hold_s=0.06, for_s=0.4)
        assert max(seen) >= 0.04  # every tick ~60 ms late
        await asyncio.sleep(0.05)
        assert monitor.sustained_s < 0.01  # caught up: gone at once, no decay to wait out
    finally:
        watcher.cancel()
        monitor.stop()


async def test_one_stall_is_not_sustained_lag() -> None:
    monitor = LagMonitor(interval_s=0.01)
    monitor.start()
    try:
        await asyncio.sleep(0.03)
        time.sleep(0.1)  # noqa: ASYNC251 -- one stall: the next tick runs ~100 ms late
        await asyncio.sleep(0.002)  # that late tick runs, and the loop is on time again
        assert monitor.recent_s >= 0.08
        assert monitor.sustained_s < 0.02
    finally:
        monitor.stop()
