"""``orchestrator dev``: the whole system on one machine, with nothing but Python installed.

Without ``ORCHESTRATOR_BROKER_URL`` an embedded Valkey (append-only, under the data
directory) is the Redis Streams broker and the result backend; with it, that broker is used.
Two workers (the escavadores' on ``ORCHESTRATOR_ESCAVADOR_POOL``, threads: they wait on HTTP;
the executadores' on prefork), Flower (behind basic auth with a generated password, bound to
127.0.0.1) and the operator console (``orchestrator console``, a generated password too, on
127.0.0.1) run as child process groups; the demo serves the bundled sample feed on localhost
and runs ``escavador_youtube -> executador_arquivo``. Stopping stops everything, in reverse;
a guard process (:mod:`orchestrator.devmode.guard`) stops the children if this process dies
without stopping them. The data directory is locked while a session runs, and ``dev.json``
there tells the other commands where its services are (:mod:`orchestrator.devmode.state`).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from orchestrator.console.auth import PASSWORD_VARIABLE, USER_VARIABLE, generate_password
from orchestrator.devmode.embedded_broker import EmbeddedBroker
from orchestrator.devmode.feed_server import SAMPLE_CHANNEL_ID, SampleFeedServer
from orchestrator.devmode.guard import Guard
from orchestrator.devmode.processes import ManagedProcess, celery_command
from orchestrator.devmode.state import DevLock, DevState, remove_state, write_state
from orchestrator.settings import get_settings, redact_url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _queues_by_kind() -> tuple[list[str], list[str]]:
    """Every work queue of the loaded steps: the escavadores', the executadores'."""
    import orchestrator.celery_app  # noqa: F401  (loads the step modules: the topology's names)
    from orchestrator.topology import topology

    names = topology.names()
    return ([name for name in names if name.startswith("escavador_")],
            [name for name in names if not name.startswith("escavador_")])


def _worker_ready(process: ManagedProcess) -> bool:
    return " ready." in process.log()


def _flower_ready(url: str) -> Callable[[ManagedProcess], bool]:
    def check(_: ManagedProcess) -> bool:
        try:
            return httpx.get(url + "/healthcheck", timeout=2).status_code in (200, 401)
        except httpx.HTTPError:
            return False
    return check


def _console_ready(url: str) -> Callable[[ManagedProcess], bool]:
    def check(_: ManagedProcess) -> bool:
        try:
            return httpx.get(url + "/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    return check


@dataclass
class DevSession:
    """Everything ``orchestrator dev`` started, so it can all be stopped."""

    data_dir: Path
    flower: bool = True
    flower_port: int | None = None
    console: bool = True
    console_port: int | None = None
    demo: bool = False
    concurrency: int = 2
    embedded: EmbeddedBroker | None = None
    feed_server: SampleFeedServer | None = None
    processes: list[ManagedProcess] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    lock: DevLock | None = None
    guard: Guard | None = None
    flower_url: str | None = None
    console_url: str | None = None

    def start(self) -> None:
        """Lock the data directory (:class:`~orchestrator.devmode.state.DevAlreadyRunning`
        if another session holds it), start everything, wait for it, say where it is."""
        self.lock = DevLock(self.data_dir).acquire()
        self.guard = Guard()
        env = dict(os.environ)
        if not env.get("ORCHESTRATOR_BROKER_URL"):
            self.embedded = EmbeddedBroker(self.data_dir / "valkey").start_on_remembered_port()
            self.guard.watch(self.embedded.pid, group=False)
            env["ORCHESTRATOR_BROKER_URL"] = self.embedded.broker_url
            env["ORCHESTRATOR_RESULT_BACKEND"] = self.embedded.result_backend
            self.facts["broker"] = f"{self.embedded.broker_url} (embedded Valkey)"
            self.facts["broker data"] = str(self.data_dir / "valkey")
        else:
            self.facts["broker"] = redact_url(env["ORCHESTRATOR_BROKER_URL"])
        self.facts["result backend"] = redact_url(
            env.get("ORCHESTRATOR_RESULT_BACKEND") or get_settings().result_backend)
        env["ORCHESTRATOR_DATA_DIR"] = str(self.data_dir)
        if self.demo:
            self.feed_server = SampleFeedServer().start()
            env["ORCHESTRATOR_YOUTUBE_BASE_URL"] = self.feed_server.base_url
            self.facts["sample feed"] = self.feed_server.base_url + "/feeds/videos.xml"
        os.environ.update({k: v for k, v in env.items() if k.startswith("ORCHESTRATOR_")})
        get_settings.cache_clear()
        logs = self.data_dir / "logs"
        settings = get_settings()
        escavadores, executadores = _queues_by_kind()
        for name, queues, pool, concurrency in (
                ("escavadores", escavadores, settings.escavador_pool,
                 settings.escavador_concurrency),
                ("executadores", executadores, "prefork", self.concurrency)):
            if not queues:
                continue
            worker = ManagedProcess(
                name,
                celery_command("worker", "--loglevel=INFO", f"--pool={pool}",
                               f"--concurrency={concurrency}", "-Q", ",".join(queues),
                               "-n", f"dev-{name}@%h"),
                env, logs / f"{name}.log", _worker_ready)
            self._start(worker)
            self.facts[f"worker ({name})"] = (f"pid {worker.pid}, {pool} x{concurrency}, "
                                              f"log {worker.log_path}")
        if self.flower:
            self._start_flower(env, logs)
        if self.console:
            self._start_console(env, logs)
        for process in self.processes:
            process.wait_ready()
        write_state(DevState(
            pid=os.getpid(), data_dir=str(self.data_dir),
            broker_url=self.embedded.broker_url if self.embedded else None,
            result_backend=self.embedded.result_backend if self.embedded else None,
            flower_url=self.flower_url, console_url=self.console_url,
            started_at=datetime.now(UTC).isoformat(timespec="seconds")))
        self.facts["other commands"] = (f"find this session by its {self.data_dir.name}/ "
                                        "folder, or: eval \"$(orchestrator dev --env)\"")

    def _start(self, process: ManagedProcess) -> None:
        self.processes.append(process.start())
        assert self.guard is not None and process.pid is not None
        self.guard.watch(process.pid, group=True)  # its own session: the pool goes with it

    def _start_flower(self, env: dict[str, str], logs: Path) -> None:
        port = self.flower_port or _free_port()
        password = secrets.token_urlsafe(12)
        flower_env = {**env, "FLOWER_BASIC_AUTH": f"dev:{password}"}
        url = f"http://127.0.0.1:{port}"
        flower = ManagedProcess(
            "flower",
            celery_command("flower", f"--port={port}", "--address=127.0.0.1"),
            flower_env, logs / "flower.log", _flower_ready(url))
        self._start(flower)
        self.flower_url = url
        self.facts["flower"] = f"{url}  (user dev, password {password})"

    def _start_console(self, env: dict[str, str], logs: Path) -> None:
        """``orchestrator console`` with a password made for this run, said like Flower's."""
        port = self.console_port or _free_port()
        password = generate_password()
        console_env = {**env, PASSWORD_VARIABLE: password, USER_VARIABLE: "dev"}
        url = f"http://127.0.0.1:{port}"
        process = ManagedProcess(
            "console",
            [sys.executable, "-m", "orchestrator.console", f"--port={port}",
             "--address=127.0.0.1"],
            console_env, logs / "console.log", _console_ready(url))
        self._start(process)
        self.console_url = url
        self.facts["console"] = f"{url}  (user dev, password {password})"

    def run_demo(self, timeout: float = 120.0) -> dict[str, Any]:
        """Trigger the sample pipeline and wait for it: the proof that everything is wired."""
        from orchestrator.pipeline import run_pipeline

        handle = run_pipeline("youtube", {"channel_id": SAMPLE_CHANNEL_ID},
                              execute=["arquivo"])
        [final] = handle.wait(timeout=timeout)
        return {"correlation_id": handle.correlation_id, "steps": list(handle.steps),
                "final": final.to_dict()}

    def check_alive(self) -> str | None:
        """The name of a child that died, if any."""
        for process in self.processes:
            if not process.alive:
                return process.name
        return None

    def stop(self) -> None:
        if self.lock is None:
            return  # it never started: another session's files are not ours to touch
        remove_state(self.data_dir)
        for process in reversed(self.processes):
            process.stop()
        if self.feed_server is not None:
            self.feed_server.stop()
        if self.embedded is not None:
            self.embedded.stop()
        if self.guard is not None:
            self.guard.close()
        self.lock.release()
        self.lock = None
