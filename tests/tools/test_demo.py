"""`lead-exchange demo` run as a new user runs it, as a process: its plain lines when the
output is not a terminal, and the summary it prints at Ctrl-C, with the exchange's own
figures apart from what its sellers measured. A clean start prints no warning."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.faults import free_port

START_TIMEOUT_S = 120.0  # a first start runs initdb
TICKS = 3  # plain lines with traffic before Ctrl-C


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # pgserver run as root hands the cluster to a `pgserver` user: its folder must be
    # reachable by that user, which pytest's private tmp dirs are not.
    parent = Path(tempfile.mkdtemp(prefix="lead-exchange-demo-"))
    parent.chmod(0o755)
    try:
        yield parent / "demo"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _story(command: str) -> dict[str, Any]:
    """What the demo's "try: curl ..." for an auction's story answers."""
    token = re.search(r"Bearer ([^']+)'", command).group(1)  # type: ignore[union-attr]
    url = command.rsplit(" ", 1)[1]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with opener.open(request, timeout=10) as response:
        story: dict[str, Any] = json.loads(response.read())
    return story


def _run_until_ctrl_c(
    data_dir: Path, port: int
) -> tuple[int, list[str], str, dict[str, Any] | None]:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}  # a clean start
    demo = subprocess.Popen(
        [sys.executable, "-m", "exchange", "demo", "--rate", "20", "--buyers", "6",
         "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    lines: list[str] = []
    story = None
    try:
        assert demo.stdout is not None
        give_up = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < give_up:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if story is None and "/v1/auctions/" in line:
                story = _story(line.strip())
            if sum(1 for seen in lines if re.match(r"t=\s*\d+s \| exchange: \d", seen)) >= TICKS:
                break
        demo.send_signal(signal.SIGINT)
        rest, errors = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    return demo.returncode, lines + rest.splitlines(), errors, story


def _one(lines: list[str], prefix: str, contains: str = "") -> str:
    found = [line for line in lines if line.startswith(prefix) and contains in line]
    assert len(found) == 1, (prefix, lines)
    return found[0]


def test_plain_demo_shows_the_exchanges_figures_apart_and_sums_up_at_ctrl_c(
    data_dir: Path,
) -> None:
    port = free_port()
    code, lines, errors, story = _run_until_ctrl_c(data_dir, port)

    assert code == 0, (errors, lines[-20:])
    assert "Warning" not in errors and "warn" not in errors.lower(), errors
    # Plain lines, each with the exchange's figures apart from the sellers' and the CPU.
    ticks = [line for line in lines if line.startswith("t=")]
    assert len(ticks) >= TICKS
    assert all(" | exchange: " in t and " | sellers: " in t and "CPU" in t for t in ticks)
    # The commands to try next name a real ping_id: its story is in the ledger, sold.
    command = _one(lines, "try: curl -s -H 'Authorization: Bearer ", "/v1/auctions/")
    assert re.search(rf"http://127\.0\.0\.1:{port}/v1/auctions/[0-9a-f-]{{36}}$", command)
    assert story is not None and story["sale"] is not None, story
    assert any(line.startswith("try: curl -s http://") and "/metrics" in line for line in lines)

    summary = _one(lines, "summary: ran ")
    sent = int(re.search(r"the sellers sent (\d+) pings", summary).group(1))  # type: ignore[union-attr]
    assert sent > 0
    exchange = _one(lines, "the exchange (its /metrics): ")
    auctions = int(re.search(r": (\d+) auctions;", exchange).group(1))  # type: ignore[union-attr]
    # From its histograms: each percentile as the bucket bound it is at most.
    assert re.search(
        r"duration p50/p95/p99 ≤[\d.]+ / ≤[\d.]+ / ≤[\d.]+ ms \(tmax 500 ms\)", exchange
    )
    assert re.search(r"overhead p50/p95/p99 ≤[\d.]+ / ≤[\d.]+ / ≤[\d.]+ ms", exchange)
    assert "answers past tmax + 5 ms: " in exchange and "503 answers: " in exchange
    sellers = _one(lines, "the sellers (end to end, in the demo's client): ")
    assert re.search(r"ping answer p50/p95/p99 [\d.]+ / [\d.]+ / [\d.]+ ms", sellers)
    assert re.search(r"of which in the client p95 [\d.]+ ms", sellers)
    if "not 200: 0; no answer: 0" in sellers:
        # Every lead the sellers sent is one auction the exchange counted, from the first.
        assert auctions == sent, (exchange, summary)
    pool = _one(lines, "the lead pool: ")
    entered, claimed = (
        int(n) for n in re.findall(r"(\d+) (?:unsold leads entered|were claimed)", pool)
    )
    assert 0 <= claimed <= entered, pool
    cpu = _one(lines, "CPU (mean cores): ")
    for part in ("exchange", "database", "buyers", "sellers", "this screen", "machine"):
        assert part in cpu, cpu
    assert any(line.startswith("limit: ") for line in lines)
    # The buyer table: every format the demo's buyers speak, counted by the exchange.
    table = lines[lines.index("buyers, as the exchange counted them:") + 1 :]
    assert table[0].split()[:4] == ["buyer", "format", "pings", "bids"]
    formats = {row.split()[1] for row in table[1:] if row.startswith(("buyer-", "backfill"))}
    assert {"json", "form", "xml", "custom_json"} <= formats
    assert sum(int(row.split()[3]) for row in table[1:7]) > 0  # bids
