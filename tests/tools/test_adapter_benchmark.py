"""The adapter benchmark runs end to end on a small budget and reports every adapter,
kind of call and ratio: it proves the harness, not the numbers."""

from __future__ import annotations

from pathlib import Path

import orjson

from benchmarks.adapters import main


def test_adapter_benchmark_reports_each_format_against_the_json_adapter(tmp_path: Path) -> None:
    assert main(["--calls", "40", "--rounds", "2", "--output", str(tmp_path)]) == 0
    results = orjson.loads((tmp_path / "adapters.json").read_bytes())
    assert set(results["kinds"]) == {"ping", "ping shared", "post"}
    for rows in results["kinds"].values():
        assert set(rows) == {"json adapter", "http json", "http form", "http xml"}
        assert rows["json adapter"]["ratio"] == 1.0
        for row in rows.values():
            assert 0 < row["min_us"] <= row["median_us"] <= row["max_us"]
    assert "| ping | http xml |" in (tmp_path / "adapters.md").read_text()
