"""Latency histograms: HdrHistogram when the `hdrhistogram` package is installed, else a
log-bucket histogram of our own with the same precision class (values within 1%).

Values are integer microseconds. Both kinds answer the same three questions: how many,
the value at a percentile, and the largest value.
"""

from __future__ import annotations

import math
from typing import Protocol

HIGHEST_US = 120_000_000  # two minutes: nothing the load generator waits for is longer
SIGNIFICANT_DIGITS = 3


class LatencyHistogram(Protocol):
    kind: str

    def record(self, value_us: int) -> None: ...

    def count(self) -> int: ...

    def percentile(self, percent: float) -> int: ...

    def max(self) -> int: ...

    def mean(self) -> float: ...


class _Hdr:
    kind = "hdrhistogram"

    def __init__(self) -> None:
        from hdrh.histogram import HdrHistogram

        self._histogram = HdrHistogram(1, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record(self, value_us: int) -> None:
        self._histogram.record_value(min(max(1, value_us), HIGHEST_US))

    def count(self) -> int:
        return int(self._histogram.get_total_count())

    def percentile(self, percent: float) -> int:
        return int(self._histogram.get_value_at_percentile(percent))

    def max(self) -> int:
        return int(self._histogram.get_max_value())

    def mean(self) -> float:
        return float(self._histogram.get_mean_value())


class LogBucketHistogram:
    """Buckets growing by 1% from 1 us: ~1,900 counters cover 1 us to two minutes.

    A value is reported as its bucket's upper edge, so a percentile is never understated
    by more than 1% (the same guarantee HdrHistogram gives with two significant digits).
    """

    kind = "log-buckets"
    _GROWTH = 1.01

    def __init__(self) -> None:
        self._log_growth = math.log(self._GROWTH)
        size = self._bucket(HIGHEST_US) + 1
        self._counts = [0] * size
        self._total = 0
        self._sum = 0
        self._max = 0

    def _bucket(self, value_us: int) -> int:
        return 0 if value_us <= 1 else math.ceil(math.log(value_us) / self._log_growth)

    def record(self, value_us: int) -> None:
        value_us = min(max(1, value_us), HIGHEST_US)
        self._counts[self._bucket(value_us)] += 1
        self._total += 1
        self._sum += value_us
        if value_us > self._max:
            self._max = value_us

    def count(self) -> int:
        return self._total

    def percentile(self, percent: float) -> int:
        if self._total == 0:
            return 0
        wanted = max(1, math.ceil(self._total * percent / 100))
        seen = 0
        for index, count in enumerate(self._counts):
            seen += count
            if seen >= wanted:
                return min(self._max, math.ceil(self._GROWTH**index))
        return self._max

    def max(self) -> int:
        return self._max

    def mean(self) -> float:
        return self._sum / self._total if self._total else 0.0


def new_histogram(prefer_hdr: bool = True) -> LatencyHistogram:
    """An HdrHistogram if the package is there (and wanted), else the log-bucket one."""
    if prefer_hdr:
        try:
            return _Hdr()
        except ImportError:
            pass
    return LogBucketHistogram()
