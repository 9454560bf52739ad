"""Whose turn it is among equal bids under the ``round_robin`` tie-breaker: per vertical,
the last buyer that won a tie (exchange.core.ranking.rank starts after it).

Per process, by design: a shared one would cost a ledger round trip inside every
auction's tmax. With several processes each rotates on its own, so over many auctions
every buyer of a group of equal bids still goes first about as often as the others.
"""

from __future__ import annotations


class Rotation:
    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def last(self, vertical: str) -> str | None:
        return self._last.get(vertical)

    def won(self, vertical: str, buyer_id: str) -> None:
        """``buyer_id`` won a tie in ``vertical``: the next tie starts after it."""
        self._last[vertical] = buyer_id
