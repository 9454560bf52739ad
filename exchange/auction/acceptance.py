"""This process's view of every buyer's p(accept), per vertical: the owner of that piece
of state (one ``replace`` per refresh, read by every auction), and the loop that keeps it
within ``ACCEPTANCE_REFRESH_S`` of the ledger.

The tallies are the ledger's (exchange/ledger/acceptance.py), the same for every process;
the rates are worked out here once per refresh (exchange/core/acceptance.py), so an auction
pays a dictionary lookup per bid. A process that cannot reach the ledger keeps its last
view; one that never could ranks every buyer at its vertical's prior.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta

import structlog

from exchange.core.acceptance import AcceptanceRates, Tally
from exchange.core.config import Config
from exchange.ledger.faults import DATABASE_DOWN
from exchange.ledger.store import Store

log = structlog.get_logger("exchange.acceptance")

# How stale a process's p(accept) may be: every process agrees within this (plus the
# batch writer's interval, the time a post attempt takes to reach the ledger).
ACCEPTANCE_REFRESH_S = 0.5


class AcceptanceView:
    """p(accept) of each vertical's buyers as this process last read it."""

    __slots__ = ("_rates",)

    def __init__(self) -> None:
        self._rates: dict[str, AcceptanceRates] = {}

    def rates(self, vertical: str, config: Config) -> AcceptanceRates:
        """The vertical's rates; before the first refresh, everyone at the prior."""
        found = self._rates.get(vertical)
        if found is None:
            found = AcceptanceRates.from_tallies({}, config.verticals[vertical].acceptance_prior)
            self._rates[vertical] = found
        return found

    def replace(self, tallies: Mapping[str, Mapping[str, Tally]], config: Config) -> None:
        self._rates = {
            name: AcceptanceRates.from_tallies(tallies.get(name, {}), vertical.acceptance_prior)
            for name, vertical in config.verticals.items()
        }


def window_starts(config: Config, now: datetime) -> dict[str, date]:
    """Each vertical's window as the first UTC day it counts: ``acceptance_window_days``
    whole days, today included."""
    today = now.date()
    return {
        name: today - timedelta(days=vertical.acceptance_window_days - 1)
        for name, vertical in config.verticals.items()
    }


async def refresh(view: AcceptanceView, store: Store, config: Config, now: datetime) -> None:
    """Read the tallies once and make them this process's view."""
    view.replace(await store.acceptance_tallies(window_starts(config, now)), config)


async def keep_fresh(
    view: AcceptanceView,
    store: Store,
    config: Callable[[], Config],
    now: Callable[[], datetime],
) -> None:
    """Refresh the view every ACCEPTANCE_REFRESH_S for as long as the process runs (with
    the config in force at each refresh)."""
    while True:
        # While the database is away its watcher reports it and the last view stays.
        try:
            await refresh(view, store, config(), now())
        except DATABASE_DOWN:
            pass
        except Exception:  # one bad read must not stop the refreshing for the process's life
            log.exception("acceptance_refresh_failed")
        await asyncio.sleep(ACCEPTANCE_REFRESH_S)
