"""The demo's processes: starting and stopping its children (the exchange, the buyers, the
sellers), and the CPU each of them and the database spend, read from /proc.

Every child runs in its own session, so a Ctrl-C at the terminal reaches the demo alone,
which then stops the sellers first and reads the last figures before stopping the rest.
A child also goes when the demo goes: on Linux the kernel sends it SIGTERM
(PR_SET_PDEATHSIG), and the buyers and sellers stop when their standard input closes.

CPU figures need Linux's /proc; elsewhere they are absent (None), never guessed."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import stat
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One child process of the demo, in its own session; its output goes to a log file
    (or, with ``pipe_stdout``, to the demo, a line at a time)."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log

    @classmethod
    async def start(
        cls, name: str, command: Sequence[str], log: Path, *, pipe_stdout: bool = False
    ) -> Child:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE if pipe_stdout else log_file,
                stderr=log_file,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return cls(name, process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.returncode is None

    async def read_line(self) -> bytes:
        """The next line of its standard output (empty at its end)."""
        assert self.process.stdout is not None
        return await self.process.stdout.readline()

    def terminate(self) -> None:
        """Ask it to stop: SIGTERM to its process group."""
        if self.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; its standard input is closed first."""
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        self.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            await self.process.wait()

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


@contextlib.asynccontextmanager
async def stop_when_parent_goes(stopping: asyncio.Event) -> AsyncIterator[None]:
    """In a child: sets ``stopping`` when standard input (a pipe from the demo) ends."""
    watcher: asyncio.Task[None] | None = None
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode)
    except (OSError, ValueError):
        is_pipe = False
    if is_pipe:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(sys.stdin.fileno(), "rb", 0)
        )

        async def watch() -> None:
            while await reader.read(4096):
                pass
            stopping.set()

        watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


@contextlib.contextmanager
def quiet_runtime_dir() -> Iterator[None]:
    """Around starting the embedded PostgreSQL: pgserver keeps its start-up lock in the
    user's runtime directory; where XDG_RUNTIME_DIR is unset, platformdirs falls back to
    /tmp/runtime-<uid> and says so with a RuntimeDirWarning. That fallback is the place
    every pgserver process on this machine (serve, the tests, the benchmarks) uses, so
    it is kept and only that one message is silenced; a runtime directory with a real
    problem (wrong owner or mode) is still reported."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"XDG_RUNTIME_DIR is not set, falling back to ",
            category=UserWarning,
            module=r"platformdirs(\.|$)",
        )
        yield


# -- CPU, from /proc ------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in brackets and may hold spaces: split after it.
    return text[text.rfind(")") + 2 :].split()


def _all_parents() -> dict[int, int]:
    """pid -> parent pid, for every process this one can see."""
    parents: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in PROC.iterdir():
            if entry.name.isdigit():
                fields = _stat_fields(int(entry.name))
                if fields is not None:
                    parents[int(entry.name)] = int(fields[1])
    return parents


def _tree(root: int, parents: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in parents:
            out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds spent so far, by part of the demo, and by the whole machine."""

    at: float  # monotonic seconds
    parts: dict[str, float]
    machine_busy: float | None
    cpus: int


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine spent not idle, over all its cores."""
    try:
        line = (PROC / "stat").read_text().splitlines()[0]
    except OSError:
        return None
    values = [int(v) for v in line.split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # guest time is already counted in user
    return busy / _TICKS


def read_cpu(roots: dict[str, int | None], clock: Callable[[], float]) -> CpuReading | None:
    """CPU seconds of each named process tree (``None``: that part is not running), and
    of this process (``"screen"``): None where there is no /proc."""
    if not (PROC / "stat").exists():
        return None
    parents = _all_parents()
    parts = {name: _cpu_seconds(_tree(pid, parents)) if pid else 0.0 for name, pid in roots.items()}
    own = os.times()
    parts["screen"] = own.user + own.system
    return CpuReading(clock(), parts, machine_busy_seconds(), os.cpu_count() or 1)


def cores_between(first: CpuReading, last: CpuReading) -> dict[str, float]:
    """Mean cores each part used between two readings (``"machine"``: all busy cores)."""
    elapsed = last.at - first.at
    if elapsed <= 0:
        return {}
    out = {
        name: max(0.0, (last.parts[name] - first.parts.get(name, 0.0)) / elapsed)
        for name in last.parts
    }
    if first.machine_busy is not None and last.machine_busy is not None:
        out["machine"] = max(0.0, (last.machine_busy - first.machine_busy) / elapsed)
    return out


def postmaster_pid(data_dir: Path) -> int | None:
    """The embedded PostgreSQL's main process, from its pid file."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
