"""Where a running ``orchestrator dev`` is, for the other commands to find: a lock and a file.

``<data dir>/dev.lock`` is held (``flock``) by the ``orchestrator dev`` using that directory
for as long as it runs: a second one refuses to start, and the kernel lets go of the lock
when its holder dies however it dies, so a crash never leaves a stale lock. ``dev.json``
next to it says where the services are; it counts only while the lock is held. Only the
embedded broker's URLs are written there (they carry no credentials): a dev session on a
broker of your own was given its URL in your environment, where the other commands find it
too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

LOCK_FILE = "dev.lock"
STATE_FILE = "dev.json"


class DevAlreadyRunning(RuntimeError):
    """Another ``orchestrator dev`` holds the data directory."""


@dataclass(frozen=True)
class DevState:
    """What one running ``orchestrator dev`` started, and where."""

    pid: int
    data_dir: str
    broker_url: str | None
    result_backend: str | None
    flower_url: str | None
    started_at: str
    console_url: str | None = None

    def environment(self) -> dict[str, str]:
        """The settings that point another command at this session."""
        env = {"ORCHESTRATOR_DATA_DIR": self.data_dir}
        if self.broker_url:
            env["ORCHESTRATOR_BROKER_URL"] = self.broker_url
        if self.result_backend:
            env["ORCHESTRATOR_RESULT_BACKEND"] = self.result_backend
        return env

    def export_lines(self) -> list[str]:
        """``export NAME=value`` lines for a POSIX shell (``eval "$(orchestrator dev --env)"``)."""
        lines = [f"export {name}={shlex.quote(value)}"
                 for name, value in self.environment().items()]
        if not self.broker_url:
            lines.insert(0, "# this session uses your own broker: export its "
                            "ORCHESTRATOR_BROKER_URL (and _RESULT_BACKEND) as you gave them")
        return lines


class DevLock:
    """The data directory's lock, held while ``orchestrator dev`` runs."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> DevLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DevAlreadyRunning(
                f"another orchestrator dev (pid {holder}) is using {self.path.parent}; stop "
                "it, or give this one its own --data-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor lets go of the lock
            self._file = None


def is_locked(data_dir: Path) -> bool:
    """True while some process holds ``data_dir``'s dev lock."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def write_state(state: DevState) -> None:
    """Write ``dev.json`` atomically (a reader never sees half of it)."""
    path = Path(state.data_dir) / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2) + "\n")
    temporary.replace(path)


def remove_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()


def running_dev(data_dir: Path) -> DevState | None:
    """The ``orchestrator dev`` running on ``data_dir``, if one is (its lock is held and it
    wrote where its services are)."""
    path = data_dir / STATE_FILE
    if not path.exists() or not is_locked(data_dir):
        return None
    try:
        return DevState(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None
