"""What every area of the store shares: the pool, the time limit of a request-path call,
and this process's name in the post claims it makes. Each area (pings, claims, sales,
caps, tiers, duplicates, returns, reports) is a class over these, and exchange/ledger/store.py
joins them into the one Store the exchange holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg


class LedgerArea:
    pool: asyncpg.Pool
    timeout_s: float
    # This process in the post claims it makes (posts.claimed_by); unique per process
    # start (serve --workers names each worker's, to close its claims when it dies).
    owner: str


def row_count(status: str) -> int:
    """The rows a statement touched, from its command status (``INSERT 0 3``, ``DELETE 2``,
    ``UPDATE 1``)."""
    return int(status.rsplit(" ", 1)[-1])


A = TypeVar("A", bound=LedgerArea)
P = ParamSpec("P")
R = TypeVar("R")


def bounded(
    method: Callable[Concatenate[A, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[A, P], Coroutine[Any, Any, R]]:
    """A request-path ledger call that gives up after ``timeout_s``: a frozen (not
    refusing) database must become a 503 near tmax, not a 10-second hang."""

    async def call(area: A, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # The call runs as its own task so that giving up is immediate: cancelling a query
        # on a frozen server waits for the server, and the caller must not.
        task = asyncio.ensure_future(method(area, *args, **kwargs))
        try:
            done, _ = await asyncio.wait({task}, timeout=area.timeout_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            raise TimeoutError(f"{method.__name__} took over {area.timeout_s:g} s")
        return task.result()

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call
