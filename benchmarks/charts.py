"""The benchmark's charts, as PNG files beside its tables: latency percentiles per server,
throughput and CPU per ping per server, and the deadline runs. Each bar is the median of
the rounds, its whisker the lowest to the highest.

Drawn with matplotlib (the ``charts`` extra: ``pip install '.[charts]'``) on its Agg
backend, so no display is needed; without matplotlib the run writes its tables and says
the charts were skipped."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.spread import Spread

PERCENTILES = ("p50", "p99", "p99.9")
COLOURS = ("#1f6f8b", "#e07a1f", "#5b8c3a", "#9b4d96", "#b23a48", "#6c757d")


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_charts(results: dict[str, Any], folder: Path, stem: str) -> list[str]:
    """Writes ``<stem>-latency.png``, ``<stem>-throughput.png`` and, when the plan ran
    them, ``<stem>-deadline.png`` into ``folder``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    derived = results["derived"]
    rounds = derived["rounds"]
    written = []
    for name, draw in (("latency", _latency), ("throughput", _throughput), ("deadline", _deadline)):
        figure = draw(derived, rounds, results["meta"])
        if figure is None:
            continue
        path = folder / f"{stem}-{name}.png"
        figure.savefig(path, dpi=110)
        import matplotlib.pyplot as plt

        plt.close(figure)
        written.append(path.name)
    return written


def _spread(value: Any) -> Spread | None:
    return Spread.from_json(value)


def _bars(axis: Any, groups: Sequence[str], series: dict[str, list[Spread | None]]) -> None:
    """Grouped bars: one group per label in ``groups``, one bar per series, min..max
    whiskers."""
    count = max(1, len(series))
    width = 0.8 / count
    for index, (label, values) in enumerate(series.items()):
        xs, heights, low, high = [], [], [], []
        for position, spread in enumerate(values):
            if spread is None:
                continue
            xs.append(position - 0.4 + width * (index + 0.5))
            heights.append(spread.median)
            low.append(spread.median - spread.low)
            high.append(spread.high - spread.median)
        axis.bar(
            xs,
            heights,
            width * 0.92,
            yerr=[low, high],
            capsize=3,
            label=label,
            color=COLOURS[index % len(COLOURS)],
        )
    axis.set_xticks(range(len(groups)), groups)
    axis.grid(axis="y", alpha=0.3)


def _title(figure: Any, text: str, rounds: int, meta: dict[str, Any]) -> None:
    figure.suptitle(
        f"{text}\nplan {meta['plan']['name']}, {meta['when']}, "
        f"{meta['machine']['cpus']} CPUs; median of {rounds} rounds, "
        "whiskers lowest..highest",
        fontsize=10,
    )


def _latency(derived: dict[str, Any], rounds: int, meta: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    counts = sorted({row["n"] for row in derived["rows"]})
    same = {s["n"]: s for s in derived["same_rate"]}
    if not counts:
        return None
    figure, axes = plt.subplots(
        2 if same else 1,
        len(counts),
        squeeze=False,
        figsize=(max(8.0, 5.5 * len(counts)), 8 if same else 4.5),
    )
    for column, n in enumerate(counts):
        rows = [r for r in derived["rows"] if r["n"] == n and r.get("lat50_p50")]
        axis = axes[0][column]
        _bars(
            axis,
            PERCENTILES,
            {r["target"]: [_spread(r[f"lat50_{p}"]) for p in PERCENTILES] for r in rows},
        )
        axis.set_title(f"N = {n}: each server at 50% of its own saturation", fontsize=9)
        axis.set_ylabel("ms, as the seller sees it")
        axis.legend(fontsize=7)
        if n in same:
            axis = axes[1][column]
            targets = same[n]["targets"]
            _bars(
                axis,
                (*PERCENTILES, "max"),
                {
                    name: [_spread(row[p]) for p in (*PERCENTILES, "max")]
                    for name, row in targets.items()
                },
            )
            axis.set_title(
                f"N = {n}: every server at {same[n]['rate_per_s']:.0f} pings/s (same load)",
                fontsize=9,
            )
            axis.set_ylabel("ms")
            axis.legend(fontsize=7)
    _title(figure, "Latency percentiles per server", rounds, meta)
    figure.tight_layout()
    return figure


def _throughput(derived: dict[str, Any], rounds: int, meta: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    counts = sorted({row["n"] for row in derived["rows"]})
    servers = list(dict.fromkeys(row["target"] for row in derived["rows"]))
    if not counts:
        return None
    by = {(row["target"], row["n"]): row for row in derived["rows"]}
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    groups = [f"N = {n}" for n in counts]
    _bars(
        left,
        groups,
        {s: [_spread(by.get((s, n), {}).get("saturation")) for n in counts] for s in servers},
    )
    left.set_title("throughput at saturation", fontsize=9)
    left.set_ylabel("pings / s")
    left.legend(fontsize=7)
    _bars(
        right,
        groups,
        {s: [_spread(by.get((s, n), {}).get("cpu_us_per_ping")) for n in counts] for s in servers},
    )
    right.set_title("server CPU per ping at 50% load (lower is better)", fontsize=9)
    right.set_ylabel("CPU us / ping")
    right.legend(fontsize=7)
    _title(figure, "Throughput and CPU per ping, per server", rounds, meta)
    figure.tight_layout()
    return figure


def _deadline(derived: dict[str, Any], rounds: int, meta: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    runs = derived["deadline"]
    if not runs:
        return None
    figure, axis = plt.subplots(figsize=(9, 4.8))
    labels = [f"{r['target']}\nN={r['n']}, {r['load']}" for r in runs]
    keys = ("p50", "p99", "p99.9", "max")
    _bars(axis, labels, {k: [_spread(r[k]) for r in runs] for k in keys})
    tmax = float(meta["tmax_ms"])
    axis.axhline(tmax, color="black", linewidth=1, linestyle="--", label=f"tmax {tmax:.0f} ms")
    axis.axhline(tmax + 5, color="#b23a48", linewidth=1, linestyle=":", label="tmax + 5 ms")
    for position, run in enumerate(runs):
        late = _spread(run["late"])
        axis.annotate(
            f"late: {late.text() if late else '-'}", (position, tmax + 12), ha="center", fontsize=8
        )
    axis.set_ylim(0, tmax * 1.35)
    axis.set_ylabel("ms, as the seller sees it")
    axis.legend(fontsize=7, loc="lower right")
    _title(
        figure, "Deadline runs: buyers hang, answer late, fail (answer times vs tmax)", rounds, meta
    )
    figure.tight_layout()
    return figure
