"""A latency tally small enough to send every second: counts in log-spaced buckets (2%
apart, from 10 us), so percentiles are within 2% and tallies from many seconds add up."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

_BASE_MS = 0.01
_STEP = math.log(1.02)


class LatencyTally:
    """Millisecond values in buckets; ``percentile`` gives a bucket's upper edge."""

    def __init__(self, counts: Mapping[int, int] | None = None, maximum: float = 0.0) -> None:
        self.counts: dict[int, int] = dict(counts or {})
        self.maximum = maximum

    def add(self, ms: float) -> None:
        index = 0 if ms <= _BASE_MS else int(math.log(ms / _BASE_MS) / _STEP) + 1
        self.counts[index] = self.counts.get(index, 0) + 1
        self.maximum = max(self.maximum, ms)

    def merge(self, other: LatencyTally) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.maximum = max(self.maximum, other.maximum)

    @classmethod
    def combined(cls, tallies: Iterable[LatencyTally]) -> LatencyTally:
        out = cls()
        for tally in tallies:
            out.merge(tally)
        return out

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def percentile(self, percent: float) -> float | None:
        total = self.count
        if not total:
            return None
        rank = max(1, math.ceil(total * percent / 100))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(self.maximum, _BASE_MS * math.exp(index * _STEP))
        return self.maximum

    def above(self, ms: float) -> int:
        """How many values were over ``ms`` (to the bucket: within 2%)."""
        edge = 0 if ms <= _BASE_MS else int(math.log(ms / _BASE_MS) / _STEP) + 1
        return sum(count for index, count in self.counts.items() if index > edge)

    def to_json(self) -> dict[str, object]:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "max": self.maximum}

    @classmethod
    def from_json(cls, value: object) -> LatencyTally:
        if not isinstance(value, dict):
            return cls()
        counts = value.get("counts") or {}
        return cls({int(k): int(v) for k, v in counts.items()}, float(value.get("max") or 0.0))
