"""What a /metrics scrape costs the event loop that runs the auctions.

    python -m benchmarks.metrics_exposition [--buyers 10 30 100] [--repeat R]

For each buyer count it builds the exchange's metrics with every series of that many
buyers (as a configuration of them creates them, plus the per-buyer outcomes an hour of
traffic fills in) and renders the exposition two ways: prometheus_client's
``generate_latest`` in one piece, as the exchange did, and ``Metrics.exposition``, which
renders it in slices with the loop free in between. It reports the lines, the CPU of the
whole rendering, and the longest time the loop was held at once: for the one-piece
rendering, all of it; for the sliced one, the longest gap a task that yields on every
loop turn saw. Each case runs R times; the median is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import yaml
from prometheus_client import generate_latest

from exchange.config import parse_config
from exchange.core.outcomes import BidOutcome
from exchange.telemetry.metrics import Metrics


def _metrics(buyers: int) -> Metrics:
    doc: dict[str, Any] = {
        "exchange": {"tmax_ms": 250},
        "verticals": {"auto_insurance": {"fields": {"zip": {"type": "string"}}}},
        "sellers": [{"id": f"seller-{i}", "api_key": f"key-{i:032d}", "payout_share": 0.8}
                    for i in range(5)],
        "buyers": [
            {"id": f"buyer-{i}", "verticals": ["auto_insurance"], "secret": "s" * 32,
             "ping_url": f"http://127.0.0.1:9/{i}/ping", "post_url": f"http://127.0.0.1:9/{i}/post"}
            for i in range(buyers)
        ],
    }  # fmt: skip
    loaded = parse_config(yaml.safe_dump(doc), "bench.yaml", env={})
    metrics = Metrics()
    metrics.start_series(loaded.config)
    for i in range(buyers):
        metrics.record_auction(
            None,
            [(f"buyer-{i}", outcome, (n + 1) * (i + 1)) for n, outcome in enumerate(BidOutcome)],
        )
    metrics.apply_pending()
    return metrics


async def _sliced(metrics: Metrics) -> tuple[float, float, int]:
    """CPU of the sliced rendering, the longest the loop was held, lines."""
    longest = 0.0
    rendering = True

    async def watch() -> None:
        nonlocal longest
        last = time.perf_counter()
        while rendering:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0)
    started = time.process_time()
    text = await metrics.exposition()
    cpu = time.process_time() - started
    rendering = False
    await watcher
    return cpu, longest, text.count(b"\n")


def measure(buyers: int, repeat: int) -> dict[str, float]:
    metrics = _metrics(buyers)
    whole, sliced_cpu, held = [], [], []
    lines = 0
    for _ in range(repeat):
        started = time.process_time()
        generate_latest(metrics.registry)
        whole.append(time.process_time() - started)
        cpu, longest, lines = asyncio.run(_sliced(metrics))
        sliced_cpu.append(cpu)
        held.append(longest)
    return {
        "buyers": buyers,
        "lines": lines,
        "one_piece_ms": statistics.median(whole) * 1000,
        "sliced_cpu_ms": statistics.median(sliced_cpu) * 1000,
        "sliced_longest_hold_ms": statistics.median(held) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_exposition")
    parser.add_argument("--buyers", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        "| buyers | lines | one piece: loop held, ms | sliced: CPU ms | sliced: longest hold, ms |"
    )
    print("|---:|---:|---:|---:|---:|")
    for buyers in args.buyers:
        row = measure(buyers, args.repeat)
        print(
            f"| {row['buyers']} | {row['lines']:,.0f} | {row['one_piece_ms']:.1f} "
            f"| {row['sliced_cpu_ms']:.1f} | {row['sliced_longest_hold_ms']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
