"""Worker subprocesses, the waits around them and their memory.

``celery -A <app> worker`` with the same options for both sides, started like the
behaviour tests start theirs (``tests/support/workers.py``): a new process group, a log
file, readiness read from the log. Always stopped, also on errors and Ctrl-C: SIGTERM
(warm shutdown), then SIGKILL to the whole group, so no pool child outlives a run. Every
wait has a timeout (a benchmark must end, even when a side loses messages), and a
worker's footprint is the peak RSS (``VmHWM``) of its process tree, read from ``/proc``
before it is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.config import REPO

# -- worker processes --------------------------------------------------------------------------

CONCURRENCY = 2
READY_MARK = b" ready."
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


class WorkerFailed(RuntimeError):
    """The worker exited before it was asked to."""


@dataclass(frozen=True)
class WorkerSpec:
    """What differs between the sides' workers: the app, its queues and environment; a
    side that is not Celery (Dramatiq) gives its own command, which writes ``{log}``."""

    app: str
    queues: tuple[str, ...]
    env: dict[str, str]
    label: str
    command: tuple[str, ...] | None = None
    ready_mark: bytes = READY_MARK
    ready_count: int = 1
    """How many times the mark must appear (Dramatiq logs it once per worker process)."""
    pool: str = "prefork"
    concurrency: int = CONCURRENCY
    processes: int = 1
    """Celery workers started side by side for one drain (each with ``concurrency``); a side
    with its own ``command`` starts its processes itself."""


class BenchWorker:
    """One prefork worker with its own log file and node name."""

    def __init__(self, spec: WorkerSpec, log_dir: Path) -> None:
        self.spec = spec
        name = f"bench-{spec.label}-{uuid.uuid4().hex[:6]}"
        self.nodename = f"{name}@localhost"
        self.log_path = log_dir / f"{name}.log"
        self.output_path = log_dir / f"{name}.out"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._log_tail = b""
        self._marks_seen = 0

    def start(self) -> None:
        command = [sys.executable, "-m", "celery", "-A", self.spec.app, "worker",
                   "--loglevel=INFO", f"--pool={self.spec.pool}",
                   f"--concurrency={self.spec.concurrency}",
                   "-n", self.nodename, "-Q", ",".join(self.spec.queues),
                   "--without-mingle", "--without-gossip", f"--logfile={self.log_path}"]
        if self.spec.command is not None:
            command = [part.replace("{log}", str(self.log_path)) for part in self.spec.command]
        with self.output_path.open("wb") as output:  # import errors land here, not in the log
            self.process = subprocess.Popen(command, cwd=REPO, env=self.spec.env,
                                            stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def _seen_ready(self) -> bool:
        """Read only what the log gained since the last look (polled every few ms)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                fresh = log.read()
        except FileNotFoundError:
            return False
        self._log_offset += len(fresh)
        mark = self.spec.ready_mark
        window = self._log_tail + fresh
        self._marks_seen += window.count(mark)
        self._log_tail = window[-(len(mark) - 1):]  # a mark cut by the read: whole next time
        return self._marks_seen >= self.spec.ready_count

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Block until the log says ready; returns ``time.monotonic()`` of that moment."""
        deadline = time.monotonic() + timeout
        while True:
            if self._seen_ready():
                return time.monotonic()
            self.check_alive()
            if time.monotonic() >= deadline:
                raise BenchTimeout(f"worker {self.nodename} not ready after {timeout:.0f}s; "
                                   f"log: {self.log_path}")
            time.sleep(0.005)

    def check_alive(self) -> None:
        """Raise :class:`WorkerFailed` (with the end of its output) if the worker exited."""
        if self.process is not None and self.process.poll() is not None:
            raise WorkerFailed(f"worker {self.nodename} exited with {self.process.returncode}: "
                               f"{self.tail()}")

    def tail(self, lines: int = 8) -> str:
        texts = []
        for path in (self.output_path, self.log_path):
            with contextlib.suppress(OSError):
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return " | ".join(texts[-lines:])

    def peak_rss_bytes(self) -> int:
        """Peak RSS of the main process and its pool children (call before :meth:`stop`)."""
        if self.process is None or self.process.poll() is not None:
            return 0
        return tree_peak_rss_bytes(self.process.pid)

    def cpu_seconds(self) -> float:
        """CPU spent so far by the main process and its pool children."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        return tree_cpu_seconds(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash, no shutdown of any kind."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Warm shutdown, then SIGKILL the process group whatever happened."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)


@contextlib.contextmanager
def running(spec: WorkerSpec, log_dir: Path) -> Iterator[BenchWorker]:
    """A started worker, stopped on the way out whatever happens inside."""
    worker = BenchWorker(spec, log_dir)
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


class WorkerGroup:
    """The workers one drain runs on (:attr:`WorkerSpec.processes` of them): ready when all
    are, their CPU and peak RSS summed, failed when any one exits."""

    def __init__(self, workers: list[BenchWorker]) -> None:
        self.workers = workers

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        return max(worker.wait_ready(timeout) for worker in self.workers)

    def check_alive(self) -> None:
        for worker in self.workers:
            worker.check_alive()

    def cpu_seconds(self) -> float:
        return sum(worker.cpu_seconds() for worker in self.workers)

    def peak_rss_bytes(self) -> int:
        return sum(worker.peak_rss_bytes() for worker in self.workers)


@contextlib.contextmanager
def running_group(spec: WorkerSpec, log_dir: Path) -> Iterator[WorkerGroup]:
    """:attr:`WorkerSpec.processes` started workers, all stopped on the way out."""
    count = 1 if spec.command is not None else spec.processes
    with contextlib.ExitStack() as stack:
        yield WorkerGroup([stack.enter_context(running(spec, log_dir)) for _ in range(count)])


# -- waiting, always with a timeout ------------------------------------------------------------

T = TypeVar("T")


class BenchTimeout(RuntimeError):
    """A wait ran out of time."""


def wait_until(condition: Callable[[], T], timeout: float, interval: float, what: str) -> T:
    """Poll ``condition`` until it is truthy; :class:`BenchTimeout` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class CountOutcome:
    """Where a count stopped: ``complete`` when it reached its target."""

    count: int
    complete: bool
    finished_at: float
    """``time.monotonic()`` when the count was last read."""


def wait_for_count(read: Callable[[], int], target: int, *, stall_timeout: float,
                   overall_timeout: float, interval: float = 0.02) -> CountOutcome:
    """Poll ``read`` until it returns ``target``; give up if it stops moving.

    Returns instead of raising, so a run that lost messages still reports how many.
    A stall (no progress for ``stall_timeout`` s) ends the wait early: lost messages never
    arrive, and waiting for the overall timeout would only waste the machine's time.
    """
    start = time.monotonic()
    last_count, last_progress = -1, start
    while True:
        count = read()
        now = time.monotonic()
        if count >= target:
            return CountOutcome(count, True, now)
        if count != last_count:
            last_count, last_progress = count, now
        if now - last_progress > stall_timeout or now - start > overall_timeout:
            return CountOutcome(count, False, now)
        time.sleep(interval)


# -- peak resident memory of a process tree ----------------------------------------------------

PROC = Path("/proc")


def _parent_of(stat_text: str) -> int:
    # The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    fields = stat_text.rsplit(")", 1)[1].split()
    return int(fields[1])


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = _parent_of((entry / "stat").read_text())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if parent == pid:
            found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree = [pid]
    index = 0
    while index < len(tree):
        tree.extend(children(tree[index]))
        index += 1
    return tree


def peak_rss_kib(pid: int) -> int:
    """``VmHWM`` of one process in KiB (0 if it is gone)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree_peak_rss_bytes(pid: int) -> int:
    """Sum of the peak RSS of ``pid`` and its descendants, in bytes."""
    return sum(peak_rss_kib(p) for p in process_tree(pid)) * 1024


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, in seconds (0 if it is gone)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its descendants: what a worker spent, whatever the machine's
    other load did to the wall clock."""
    return sum(cpu_seconds(p) for p in process_tree(pid))
