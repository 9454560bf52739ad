"""Rendering a scrape without holding the auctions up.

``GET /metrics`` is answered on the event loop that runs the auctions. Rendered in one
piece, as prometheus_client's ``generate_latest`` does, a scrape of a few thousand series
holds every auction in flight for the whole of it (some 20 ms at 30 buyers). Here the
text is the same, byte for byte, but rendered in slices of about EXPOSITION_SLICE samples
with the loop free in between. With several worker processes (PROMETHEUS_MULTIPROC_DIR
set) it sums what every live worker recorded, reading their files in a thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from exchange.telemetry.batching import labelled_series, with_series

# Samples per slice: each slice a fraction of a millisecond on the loop.
EXPOSITION_SLICE = 200


async def render(collectors: Iterable[MetricWrapperBase]) -> bytes:
    """The text format of ``collectors`` (this process's, in registration order), or of
    every worker's metrics when running as one of several. A labelled metric is read and
    formatted a few series at a time, each series at once, so a histogram's buckets agree
    with its count."""
    families: Iterable[Metric]
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        families = _sample_slices(await asyncio.to_thread(_read_workers))
    else:
        families = _series_slices(collectors)
    parts: list[bytes] = []
    last_name = None
    for family in families:
        text = generate_latest(_Families(family))
        # A family's HELP and TYPE lines come once, before its first slice.
        parts.append(text.split(b"\n", 2)[2] if family.name == last_name else text)
        last_name = family.name
        await asyncio.sleep(0)
    return b"".join(parts)


class _Families:
    """A collector of given metric families (what generate_latest renders)."""

    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _read_workers() -> list[Metric]:
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return list(combined.collect())


def _series_slices(collectors: Iterable[MetricWrapperBase]) -> Iterator[Metric]:
    """Each metric's family, in parts of a few series (about EXPOSITION_SLICE samples):
    a part is the metric's own collect() over some of its labelled children."""
    for collector in collectors:
        series = labelled_series(collector)
        if not series:
            yield from collector.collect()
            continue
        per_part = 1
        start = 0
        while start < len(series):
            part = with_series(collector, series[start : start + per_part])
            start += per_part
            for family in part.collect():
                if per_part == 1:
                    per_part = max(1, EXPOSITION_SLICE // max(1, len(family.samples)))
                yield family


def _sample_slices(families: Iterable[Metric]) -> Iterator[Metric]:
    """Each family in parts of EXPOSITION_SLICE samples."""
    for family in families:
        samples = family.samples
        for start in range(0, max(1, len(samples)), EXPOSITION_SLICE):
            part = Metric(family.name, family.documentation, family.type, family.unit)
            part.samples = samples[start : start + EXPOSITION_SLICE]
            yield part
