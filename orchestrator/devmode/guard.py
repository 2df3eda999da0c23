"""A watchman that stops dev mode's children when ``orchestrator dev`` itself is gone.

``orchestrator dev`` stops its children when it is interrupted, but a process killed outright
(SIGKILL, a crash, an OOM kill) runs no cleanup, and the worker, Flower and Valkey would go on
without it (adopted by pid 1, a worker retrying a dead broker forever). The guard is a small
process of its own session started first; ``orchestrator dev`` writes the pid of every child
it starts to the guard's stdin, a pipe. When ``orchestrator dev`` ends, however it ends, the
kernel closes that pipe; the guard reads end-of-file and stops whatever is still running:
SIGTERM (a worker's warm shutdown), SIGKILL after a grace period. A clean stop has already
stopped them all, and the guard finds nothing to do. It works the same on Linux and macOS.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import IO

GRACE_SECONDS = 20.0


class Guard:
    """The parent's end: start the guard, tell it about each child."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.devmode.guard"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def watch(self, pid: int, group: bool) -> None:
        """Stop ``pid`` (its whole process group with ``group``) if the parent goes."""
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(f"{'group' if group else 'pid'} {pid}\n".encode())
        stdin.flush()

    def close(self, timeout: float = GRACE_SECONDS + 10) -> None:
        """After a clean stop: let the guard see end-of-file and exit."""
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not running; it waits for its (new) parent to reap it.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    return True


def _signal(kind: str, pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if kind == "group":
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def stop_all(children: list[tuple[str, int]], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM every child still running, SIGKILL those left after ``grace`` seconds."""
    running = [(kind, pid) for kind, pid in children if _alive(pid)]
    for kind, pid in reversed(running):  # last started first, as a clean stop does
        _signal(kind, pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = [(kind, pid) for kind, pid in running if _alive(pid)]
    for kind, pid in running:
        _signal(kind, pid, signal.SIGKILL)


def watch(stream: IO[bytes]) -> None:
    """Read ``group PID`` / ``pid PID`` lines until end-of-file, then stop them all."""
    children: list[tuple[str, int]] = []
    for line in stream:
        kind, _, pid = line.decode().strip().partition(" ")
        if kind in ("group", "pid") and pid.isdigit():
            children.append((kind, int(pid)))
    stop_all(children)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    watch(sys.stdin.buffer)
