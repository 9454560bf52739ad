"""Admission: whether this process takes another auction now, or refuses it at once."""

from __future__ import annotations

from typing import NoReturn

from exchange.auction.context import ExchangeContext
from exchange.core.errors import NotReady
from exchange.core.outcomes import Overload


class Admitted:
    """Take one of the process's auction slots for the rest of the request, or refuse at
    once (503) when none is free or the process is overloaded (its event loop keeps
    running late: an auction started now would answer past tmax). Taken before any
    await, so a burst cannot overshoot. (A class, not a generator context manager: it
    runs once per ping, and costs a quarter as much.)"""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: ExchangeContext) -> None:
        self._ctx = ctx

    def __enter__(self) -> None:
        ctx = self._ctx
        limit = ctx.loaded.settings.max_inflight_auctions
        if ctx.admission.admitted >= limit:
            _refuse(ctx, Overload.INFLIGHT, f"exchange overloaded: {limit} auctions in flight")
        lag_limit = ctx.loaded.overload_lag_s
        if lag_limit:
            behind = ctx.lag.sustained_s
            if behind > lag_limit:
                _refuse(
                    ctx,
                    Overload.LOOP_LAG,
                    f"exchange overloaded: running {behind * 1000:.0f} ms behind "
                    f"(limit {lag_limit * 1000:.0f} ms)",
                )
        ctx.admission.take()

    def __exit__(self, *exc_info: object) -> None:
        self._ctx.admission.release()


def _refuse(ctx: ExchangeContext, reason: Overload, message: str) -> NoReturn:
    ctx.metrics.record_overload(reason)
    raise NotReady(message, headers={"Retry-After": "1"})
