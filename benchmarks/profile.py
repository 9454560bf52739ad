"""Reading a py-spy profile: where the exchange's CPU goes, as percentages of samples.

py-spy's ``raw`` format is one folded stack per line, ``frame;frame;...;leaf COUNT``,
each frame ``function (path:line)``. Only on-CPU samples are recorded (py-spy leaves out
a thread idling in the event loop's poll unless asked), so the shares below are shares
of the time the process actually ran Python or native code.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")
_ROOTS = ("/site-packages/", "/work/main/", "/lib/python3.11/", "/lib/python3.12/",
          "/lib/python3.13/")  # fmt: skip


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def _short(path: str) -> str:
    for root in _ROOTS:
        if root in path:
            return path.split(root, 1)[1]
    return path


def _frame(text: str) -> tuple[str, str]:
    """(function key "function (short/path.py)", short path) of one frame."""
    match = _FRAME.match(text)
    if match is None:
        return text, ""
    path = _short(match["path"])
    return f"{match['function']} ({path})", path


def _area(path: str) -> str:
    """What a leaf frame belongs to: our modules by file, libraries by package."""
    if path.startswith(("exchange/", "buyers/", "benchmarks/")):
        return path
    head = path.split("/", 1)[0]
    if head.endswith(".py"):
        return f"stdlib {head[:-3]}"
    if head in ("asyncio", "json", "email", "http", "urllib", "logging", "concurrent"):
        return f"stdlib {head}"
    return head or "native/unknown"


def _stacks(raw: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def summarize(raw: str, top: int = 20) -> dict[str, Any]:
    total = 0
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for frames, count in _stacks(raw):
        total += count
        keys = [_frame(f) for f in frames]
        leaf_key, leaf_path = keys[-1]
        self_time[leaf_key] += count
        areas[_area(leaf_path)] += count
        for key in {k for k, _ in keys}:
            inclusive[key] += count

    def share(counter: Counter[str], limit: int) -> list[dict[str, Any]]:
        return [
            {"name": name, "percent": round(100 * count / total, 1)}
            for name, count in counter.most_common(limit)
        ]

    if total == 0:
        return {"samples": 0}
    return {
        "samples": total,
        "self": share(self_time, top),
        "inclusive": share(inclusive, top + 15),
        "areas": share(areas, top),
    }


def fold(raw: str, min_share: float = 0.002) -> str:
    """Folded stacks without line numbers, merged, rare ones dropped: small enough to keep
    beside the results, and still what flamegraph.pl or speedscope read."""
    merged: Counter[str] = Counter()
    for frames, count in _stacks(raw):
        merged[";".join(_frame(f)[0] for f in frames)] += count
    total = sum(merged.values())
    keep = [(s, c) for s, c in merged.most_common() if c >= total * min_share]
    return "".join(f"{stack} {count}\n" for stack, count in keep)
