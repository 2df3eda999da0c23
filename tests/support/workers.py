"""Real ``celery -A orchestrator worker`` processes for the behaviour tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """One worker subprocess with its own log file and node name."""

    def __init__(self, env: dict[str, str], log_dir: Path, queues: list[str] | None = None,
                 concurrency: int = 2, name: str | None = None, pool: str = "prefork") -> None:
        self.env = env
        self.queues = queues
        self.concurrency = concurrency
        self.pool = pool
        self.nodename = f"{name or 'test'}-{uuid.uuid4().hex[:6]}@localhost"
        self.log_path = log_dir / f"{self.nodename.split('@')[0]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        command = [sys.executable, "-m", "celery", "-A", "orchestrator", "worker",
                   "--loglevel=INFO", f"--pool={self.pool}", f"--concurrency={self.concurrency}",
                   "-n", self.nodename,
                   "--without-mingle", "--without-gossip", f"--logfile={self.log_path}"]
        if self.queues:
            command += ["-Q", ",".join(self.queues)]
        self.process = subprocess.Popen(command, cwd=REPO, env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}):\n{self.log()}")
            return " ready." in self.log()

        wait_until(ready, timeout=timeout, interval=0.2, message=f"worker {self.nodename} ready")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: main process and pool children, no cleanup."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def worker_env(broker_url: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["ORCHESTRATOR_BROKER_URL"] = broker_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(overrides or {})
    return env
