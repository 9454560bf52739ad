"""Deferred metric updates, and every use of prometheus_client's private attributes.

An auction touches a dozen series per buyer it asks. Each prometheus_client update takes
a lock (about 1 us, several for a histogram), so the auction path adds its increments and
observations to plain dicts here (``Pending``), and ``Pending.apply`` adds the totals to
the real series in one go. prometheus_client has no bulk observe, so applying a
histogram's observations, and reading a labelled metric a few series at a time for the
sliced scrape (exchange/telemetry/exposition.py), reach into its private attributes. This
module is the only one that does; tests/telemetry/test_metrics_batching.py fails if they change.

Checked against prometheus_client 0.20.0 and 0.25.0 (their source) and 0.26.0 (the tests).
What is relied on:

- a histogram child's ``_upper_bounds`` (its bucket bounds, ascending, ``+Inf`` last),
  ``_buckets`` (one value per bound, NOT cumulative) and ``_sum``, each value having
  ``inc(amount)``; ``observe(v)`` adds 1 to the first bucket whose bound is >= v and v to
  the sum, and the count is the buckets' total;
- a labelled metric's ``_metrics`` (label values -> child, in creation order) and
  ``_lock`` guarding it; ``collect()`` renders whatever ``_metrics`` holds, so a shallow
  copy with some of the children renders just those.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Sequence
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

# A labelled child of a Counter or Histogram, as ``metric.labels(...)`` returns it.
Child = Any


class Tally:
    """Observations of one histogram child not yet applied to it: its bucket counts
    (not cumulative, as prometheus_client keeps them) and their sum."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Child) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def add(self, value: float) -> None:
        # The first bucket whose upper bound is >= value, as Histogram.observe picks it.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def apply(self) -> None:
        """Add the tally to its child as that many ``observe`` calls would."""
        child = self.child
        for bucket, count in zip(child._buckets, self.counts, strict=True):
            if count:
                bucket.inc(count)
        child._sum.inc(self.total)


class Pending:
    """Counter increments and histogram observations waiting for ``apply``."""

    __slots__ = ("counts", "tallies")

    def __init__(self) -> None:
        self.counts: dict[Child, float] = {}
        self.tallies: dict[Child, Tally] = {}

    def inc(self, child: Child, amount: float = 1) -> None:
        counts = self.counts
        counts[child] = counts.get(child, 0) + amount

    def observe(self, child: Child, value: float) -> None:
        tally = self.tallies.get(child)
        if tally is None:
            tally = self.tallies[child] = Tally(child)
        tally.add(value)

    def apply(self) -> None:
        """Everything pending to its series, once: what is applied is gone from here."""
        counts, self.counts = self.counts, {}
        tallies, self.tallies = self.tallies, {}
        for child, amount in counts.items():
            child.inc(amount)
        for tally in tallies.values():
            tally.apply()


def labelled_series(metric: MetricWrapperBase) -> list[tuple[Sequence[str], Child]]:
    """A labelled metric's children with their label values, in creation order (empty
    for a metric without labels)."""
    children: dict[Sequence[str], Child] = getattr(metric, "_metrics", {})
    if not children:
        return []
    with metric._lock:
        return list(children.items())


def with_series(metric: MetricWrapperBase, series: list[tuple[Sequence[str], Child]]) -> Any:
    """A copy of ``metric`` whose ``collect()`` renders only ``series``."""
    part = copy.copy(metric)
    part._metrics = dict(series)
    return part
