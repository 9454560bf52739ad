"""The event-loop lag monitor sees a blocked loop, and forgets it again; the auction keeps
back what the lag and the ledger's commits need (exchange.auction.pinging.kept_back_s)."""

from __future__ import annotations

import asyncio
import time

import pytest

from exchange.auction.pinging import kept_back_s
from exchange.telemetry.looplag import DecayingMax, LagMonitor


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


def test_the_kept_back_time_covers_ranking_commit_and_lag_within_a_fifth_of_tmax() -> None:
    # 2 ms to rank + 5 ms of recent commit time + 3 ms of loop lag, well under 50 ms.
    assert kept_back_s(0.25, 0.005, 0.003) == pytest.approx(0.010)
    # A long loop stall is capped at a fifth of tmax: buyers keep 80% of it.
    assert kept_back_s(0.25, 0.005, 0.2) == pytest.approx(0.05)


def test_a_slow_ledger_keeps_its_commit_time_back_up_to_half_of_tmax() -> None:
    """A 60 ms ping against a ledger committing in 15 ms: the fifth of tmax (12 ms) would
    leave the answer waiting past tmax on every ping (a 503 at the deadline); the commit
    time is kept back in full instead, lag still within the fifth."""
    assert kept_back_s(0.06, 0.015, 0.0) == pytest.approx(0.017)
    assert kept_back_s(0.06, 0.015, 0.02) == pytest.approx(0.017)
    # A ledger slower than half of tmax cannot be waited for: half is the most kept back.
    assert kept_back_s(0.06, 0.05, 0.0) == pytest.approx(0.03)
