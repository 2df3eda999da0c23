"""Child processes of dev mode (a worker, Flower), started and stopped as one group each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


class ManagedProcess:
    """A subprocess with a log file, a readiness check and a clean stop."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path,
                 is_ready: Callable[[ManagedProcess], bool]) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_path
        self._is_ready = is_ready
        self._log_offset = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()  # the log goes on from earlier runs: not theirs
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What this run wrote to the log (readiness is never read from an earlier run's
        lines)."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                tail = "\n".join(self.log().splitlines()[-15:])
                raise RuntimeError(f"{self.name} exited during start-up:\n{tail}")
            if self._is_ready(self):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s (log: {self.log_path})")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Celery's warm shutdown: running tasks finish), then SIGKILL if stuck."""
        if not self.alive or self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def celery_command(*args: str) -> list[str]:
    """``celery -A orchestrator ...`` with this interpreter (works inside any virtualenv)."""
    return [sys.executable, "-m", "celery", "-A", "orchestrator", *args]
