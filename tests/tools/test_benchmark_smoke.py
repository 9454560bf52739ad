"""The benchmark harness works end to end: `python -m benchmarks --smoke` starts the lean
buyers, the real exchange (with its database) and both baselines, drives them with the
load generator, and writes the JSON and Markdown results. No performance thresholds:
this proves the harness, not the numbers. Two rounds and the charts: 20-30 s."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from benchmarks.__main__ import main
from benchmarks.histogram import LogBucketHistogram
from benchmarks.plans import SMOKE


def test_smoke_benchmark_measures_every_server_in_rounds_and_writes_results(
    tmp_path: Path,
) -> None:
    assert main(["--smoke", "--output", str(tmp_path)]) == 0

    results = orjson.loads((tmp_path / "smoke.json").read_bytes())
    runs = {run["target"]: run for run in results["runs"]}
    assert set(runs) == set(SMOKE.targets)
    for name, run in runs.items():
        assert "error" not in run, (name, run.get("error"))
        # Every server measured once a round, the rounds in turn (A B A B ...).
        assert [r["round"] for r in run["rounds"]] == list(range(1, SMOKE.rounds + 1))
        assert run["saturation_per_s"] > 0, name
        for one in run["rounds"]:
            assert "error" not in one, (name, one)
            for key in ("load50", "load80"):
                assert one[key]["outcome"]["completed"] > 0, (name, key)
                assert one[key]["latency_us"]["p99"] > 0, (name, key)
                assert one[key]["cost"]["buyer_requests"] > 0, (name, key)
    exchange = runs["exchange-h1"]["rounds"][0]
    assert exchange["load80"]["cost"]["db_cpu_us_per_ping"] >= 0
    # The exchange's own count of its buyer connections: kept alive across the run.
    own = exchange["load50"]["exchange_buyer_connections"]
    assert own["reused"] > 0 and own["opened"] <= own["reused"]
    deadline = exchange["deadline"]
    assert deadline["cost"]["buyer_hangs"] > 0  # the faulty buyers really hung
    assert deadline["outcome"]["posts_sent"] > 0  # and posts were made (and some rejected)
    same = results["same_rate"][0]["targets"]
    assert set(same) == set(SMOKE.same_rate_targets)
    assert all(len(target["rounds"]) == SMOKE.rounds for target in same.values())

    # Every figure is the median of the rounds with their lowest and highest.
    derived = results["derived"]
    assert derived["rounds"] == SMOKE.rounds
    saturation = next(r for r in derived["rows"] if r["target"] == "exchange-h1")["saturation"]
    values = [r["saturation_per_s"] for r in runs["exchange-h1"]["rounds"]]
    assert sorted(saturation["values"]) == pytest.approx(sorted(values), rel=1e-3)
    assert saturation["min"] <= saturation["median"] <= saturation["max"]
    names = {target["name"] for target in derived["targets"]}
    assert any(name.startswith("answers past tmax") for name in names)
    assert isinstance(derived["warnings"], list)

    table = (tmp_path / "smoke.md").read_text()
    assert "| N | server | pings/s at saturation |" in table
    assert f"{SMOKE.rounds} alternating rounds" in table
    assert "### Deadline adherence" in table and "### Spread warnings" in table
    assert re.search(r"\| exchange-h1 \| \d+( \[\d+\.\.\d+\])? \|", table)

    # The charts: PNG files beside the tables, linked from them.
    assert results["charts"] == ["smoke-latency.png", "smoke-throughput.png", "smoke-deadline.png"]
    for name in results["charts"]:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        assert f"]({name})" in table


def test_log_bucket_histogram_percentiles_within_one_percent() -> None:
    rng = random.Random(3)
    values = sorted(rng.randint(100, 2_000_000) for _ in range(20_000))
    histogram = LogBucketHistogram()
    for value in values:
        histogram.record(value)
    assert histogram.count() == len(values)
    assert histogram.max() == values[-1]
    for percent in (50, 90, 99, 99.9):
        exact = values[max(0, int(len(values) * percent / 100 + 0.5) - 1)]
        assert abs(histogram.percentile(percent) - exact) <= exact * 0.011, percent


def test_client_candidates_measure_every_installed_client() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.client_candidates", "--rounds", "20", "--fan-out", "2"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = {line[:18].strip(): line[18:].split() for line in done.stdout.splitlines()[1:]}
    for measured in ("minimal (ceiling)", "h1 (exchange)", "aiohttp"):
        assert float(rows[measured][0]) > 0
    assert set(rows) >= {"pyreqwest", "curl-cffi"}


def test_metrics_exposition_reports_the_loop_hold_of_both_renderings() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.metrics_exposition", "--buyers", "3", "--repeat", "1"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| 3 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert int(cells[1].replace(",", "")) > 100  # lines
    assert all(float(cell) > 0 for cell in cells[2:])


def test_ledger_ids_reports_wal_and_database_cpu_for_both_kinds_of_id(server_dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ledger_ids", "--rows", "2000", "--pings", "100"],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "DATABASE_URL": server_dsn},
    )  # fmt: skip
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines()
            if line.startswith("| r") or line.startswith("| t")]  # fmt: skip
    assert sorted(cells[0].strip() for cells in rows) == sorted(
        ["random (v4)", "time-ordered (v7)"] * 2
    )
    for cells in rows:
        assert float(cells[2].replace(",", "")) > 0  # WAL bytes per ping
