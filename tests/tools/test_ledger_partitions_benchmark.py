"""benchmarks.ledger_partitions runs at a small size and reports each layout at each size
(its figures are read from its full runs, docs/scaling.md; here only that it works)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_ledger_partitions_reports_both_layouts_at_each_size(server_dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ledger_partitions", "--sizes", "2000,6000",
         "--pings", "100", "--days", "3"],
        capture_output=True, text=True, timeout=180, check=True,
        env={**os.environ, "DATABASE_URL": server_dsn},
    )  # fmt: skip
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in done.stdout.splitlines()
        if line.startswith(("| partitioned", "| unpartitioned"))
    ]
    assert sorted((r[0], r[1], r[2]) for r in rows) == sorted(
        (layout, size, round_no)
        for layout in ("partitioned", "unpartitioned")
        for size in ("2,000", "6,000")
        for round_no in ("1", "2")
    )
    for cells in rows:
        assert float(cells[4]) > 0  # write wall time per ping
        assert float(cells[5].replace(",", "")) > 0  # WAL bytes per ping
