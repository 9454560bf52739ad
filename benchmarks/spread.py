"""A figure measured in several rounds: its median, with the lowest and highest beside it.

Every number in the benchmark's tables is one of these. Rounds alternate the servers
(A B A B ...), so slow drift and other jobs on the machine fall on all of them; a ratio
is taken within each round (A's round r over B's round r) before its median, which pairs
measurements made minutes, not a quarter of an hour, apart."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread | None:
        kept = tuple(float(v) for v in values if v is not None)
        if not kept:
            return None
        return cls(statistics.median(kept), min(kept), max(kept), kept)

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_json(self) -> dict[str, Any]:
        return {
            "median": round(self.median, 4),
            "min": round(self.low, 4),
            "max": round(self.high, 4),
            "values": [round(v, 4) for v in self.values],
        }

    @classmethod
    def from_json(cls, value: Any) -> Spread | None:
        if not isinstance(value, dict) or "median" not in value:
            return None
        return cls(value["median"], value["min"], value["max"], tuple(value.get("values", ())))

    def text(self, fmt: str = "{:.0f}") -> str:
        """``median [min..max]``; the median alone when every round gave the same."""
        middle = fmt.format(self.median)
        low, high = fmt.format(self.low), fmt.format(self.high)
        if len(self.values) < 2 or low == high:
            return middle
        return f"{middle} [{low}..{high}]"


def shown(value: Any, fmt: str = "{:.0f}") -> str:
    """A spread from the derived results (its JSON form) as table text; ``-`` if none."""
    spread = value if isinstance(value, Spread) else Spread.from_json(value)
    return "-" if spread is None else spread.text(fmt)


def paired_ratio(mine: list[float | None], theirs: list[float | None]) -> Spread | None:
    """Round-by-round ratios of two servers' figures (rounds missing on either side are
    left out), then their spread."""
    return Spread.of(
        a / b if a is not None and b else None for a, b in zip(mine, theirs, strict=False)
    )


def paired_difference(mine: list[float | None], theirs: list[float | None]) -> Spread | None:
    return Spread.of(
        a - b if a is not None and b is not None else None
        for a, b in zip(mine, theirs, strict=False)
    )
