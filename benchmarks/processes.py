"""Child processes of a benchmark run: started in their own process groups, killed on
the way out whatever happened, and measured (CPU seconds from /proc via psutil).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psutil


class HarnessError(Exception):
    """Something the benchmark started did not come up or died."""


class ProcessGroup:
    """Every process the benchmark starts. Leaving the block kills each one's process
    group (SIGTERM, then SIGKILL after a grace period), in reverse start order."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for process in reversed(self._started):
            stop(process)
        self._started.clear()

    def start(
        self,
        command: Sequence[str],
        *,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        env: dict[str, str] | None = None,
        text: bool = False,
    ) -> subprocess.Popen[Any]:
        process = subprocess.Popen(
            list(command),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=_with_repo_on_path(env),
            text=text,
            start_new_session=True,  # its own process group: one killpg takes its children
        )
        self._started.append(process)
        return process

    def stop(self, process: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
        stop(process, grace_s)
        with contextlib.suppress(ValueError):
            self._started.remove(process)


REPO_ROOT = Path(__file__).resolve().parent.parent


def _with_repo_on_path(env: dict[str, str] | None) -> dict[str, str]:
    """`python -m benchmarks.x` must work in children whatever the working directory."""
    env = dict(os.environ if env is None else env)
    parts = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


def stop(process: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGTERM the process's group, wait, then SIGKILL whatever is left of it."""
    group = process.pid  # start_new_session made it the group leader
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    # Children (exchange workers) may outlive a leader that exited: kill the group anyway.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_http_ok(
    url: str, process: subprocess.Popen[Any], timeout_s: float, log: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise HarnessError(f"{url}: the server exited with {process.returncode}{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise HarnessError(f"{url}: not ready after {timeout_s:.0f} s{_tail(log)}")


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n  " + "\n  ".join(text) if text else ""


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (the workers of `serve --workers N`)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User + system CPU seconds of these processes (the ones gone by now count 0)."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle, all cores."""
    times = psutil.cpu_times()
    idle = float(times.idle) + float(getattr(times, "iowait", 0.0))
    return float(sum(times)) - idle
