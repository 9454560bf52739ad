"""Reserving and releasing a sale under a buyer's caps (exchange.ledger.caps.Caps.reserve_caps,
release_caps) against a real ledger: every window or none, exactly up to the limit under
concurrency, and a release takes the sale back from every window."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from exchange.core.caps import DAY, HOUR, CapLimit, CapWindow
from exchange.ledger.store import Store

HOUR_START = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DAY_START = datetime(2026, 12, 5, 0, 0, tzinfo=UTC)


def _windows(
    hourly: int | None = None, daily: int | None = None, daily_budget: int | None = None
) -> list[CapWindow]:
    return [
        CapWindow(CapLimit(HOUR, hourly, None), HOUR_START),
        CapWindow(CapLimit(DAY, daily, daily_budget), DAY_START),
    ]


async def _counters(store: Store, buyer_id: str = "b1") -> dict[str, tuple[int, int]]:
    rows = await store.pool.fetch(
        "SELECT period, sales, spent_cents FROM cap_counters WHERE buyer_id = $1", buyer_id
    )
    return {r["period"]: (r["sales"], r["spent_cents"]) for r in rows}


async def test_a_reserved_sale_counts_in_every_window_and_a_release_takes_it_back(
    store: Store,
) -> None:
    windows = _windows(hourly=10, daily=10, daily_budget=100_00)
    assert await store.reserve_caps("b1", windows, 25_00) is None
    assert await store.reserve_caps("b1", windows, 30_00) is None
    assert await _counters(store) == {"hour": (2, 55_00), "day": (2, 55_00)}
    await store.release_caps("b1", windows, 30_00)
    assert await _counters(store) == {"hour": (1, 25_00), "day": (1, 25_00)}


async def test_a_window_at_its_limit_refuses_the_sale_and_no_window_counts_it(
    store: Store,
) -> None:
    windows = _windows(hourly=10, daily=1)
    assert await store.reserve_caps("b1", windows, 20_00) is None
    reached = await store.reserve_caps("b1", windows, 20_00)
    assert reached == "daily cap of 1 leads reached"
    # The hourly window took the second sale first; it was rolled back with the daily one.
    assert await _counters(store) == {"hour": (1, 20_00), "day": (1, 20_00)}


async def test_a_sale_over_a_budget_on_its_own_is_refused_without_counting(
    store: Store,
) -> None:
    reached = await store.reserve_caps("b1", _windows(hourly=5, daily_budget=10_00), 12_00)
    assert reached == "daily cap of $10.00 reached"
    assert await _counters(store) == {}
    assert (
        await store.reserve_caps("b1", _windows(hourly=0), 1_00) == "hourly cap of 0 leads reached"
    )
    assert await _counters(store) == {}


async def test_concurrent_reservations_stop_exactly_at_the_limit(store: Store) -> None:
    windows = _windows(hourly=5, daily=100)
    results = await asyncio.gather(*(store.reserve_caps("b1", windows, 1_00) for _ in range(20)))
    assert sum(r is None for r in results) == 5
    assert all(r == "hourly cap of 5 leads reached" for r in results if r is not None)
    assert await _counters(store) == {"hour": (5, 5_00), "day": (5, 5_00)}


async def test_caps_are_counted_per_buyer(store: Store) -> None:
    windows = _windows(hourly=1)
    assert await store.reserve_caps("b1", windows, 1_00) is None
    assert await store.reserve_caps("b2", windows, 1_00) is None
    assert await store.reserve_caps("b1", windows, 1_00) == "hourly cap of 1 leads reached"
    assert await _counters(store, "b2") == {"hour": (1, 1_00), "day": (1, 1_00)}
