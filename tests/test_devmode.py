"""``orchestrator dev`` as a user runs it: no broker configured, nothing but Python."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from orchestrator.devmode.embedded_broker import RESULTS_DB, EmbeddedBroker
from orchestrator.devmode.processes import ManagedProcess
from orchestrator.devmode.session import _worker_ready
from orchestrator.devmode.state import STATE_FILE, running_dev
from tests.support.waiting import wait_until

ORCHESTRATOR_CLI = str(Path(sys.executable).with_name("orchestrator"))


def no_orchestrator_settings() -> dict[str, str]:
    """The environment of a user who configured nothing."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}


def run_dev(data_dir: Path) -> dict[str, object]:
    env = no_orchestrator_settings()
    result = subprocess.run([ORCHESTRATOR_CLI, "dev", "--demo", "--once", "--json",
                             "--data-dir", str(data_dir)], env=env, cwd=data_dir.parent,
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_dev_demo_runs_a_pipeline_on_the_embedded_broker_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "dev"
    first = run_dev(data_dir)
    services = first["services"]
    assert isinstance(services, dict)
    assert "embedded Valkey" in services["broker"]
    assert services["broker"].startswith("redis-streams://127.0.0.1:")
    assert "flower" in services
    assert "(user dev, password " in services["console"], "a generated password, said"
    assert "threads x16" in services["worker (escavadores)"], "escavadores wait on HTTP"
    assert "prefork x2" in services["worker (executadores)"]
    demo = first["demo"]
    assert isinstance(demo, dict)
    assert demo["steps"] == ["escavador_youtube", "executador_arquivo"]
    assert demo["final"]["tipo_evento"] == "resultado_execucao"
    assert demo["final"]["correlation_id"] == demo["correlation_id"]

    second = run_dev(data_dir)
    assert second["services"]["broker"] == services["broker"], (  # type: ignore[index]
        "the embedded port is the same on every run of one data directory")
    lines = (data_dir / "arquivo" / "resultados.jsonl").read_text().splitlines()
    ids = [json.loads(line)["correlation_id"] for line in lines]
    assert ids == [demo["correlation_id"], second["demo"]["correlation_id"]]  # type: ignore[index]

    broker = EmbeddedBroker(data_dir / "valkey").start()
    try:
        results = redis.Redis.from_url(broker.result_backend.rsplit("/", 1)[0] + f"/{RESULTS_DB}")
        assert len(results.keys("celery-task-meta-*")) >= 4, "both runs' results survived"
    finally:
        broker.stop()


class RunningDev:
    """``orchestrator dev --no-flower`` in the background, as a user leaves it running."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [ORCHESTRATOR_CLI, "dev", "--no-flower", "--data-dir", str(data_dir)],
            env=no_orchestrator_settings(), cwd=data_dir.parent, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        wait_until(lambda: self.process.poll() is not None or running_dev(data_dir),
                   timeout=120, message="orchestrator dev to say where it is")
        assert self.process.poll() is None, self.process.communicate()
        self.children = psutil.Process(self.process.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in self.children)
        assert "valkey" in names and "worker" in names and "devmode.guard" in names, names
        assert "orchestrator.console" in names, names

    def left_behind(self) -> list[psutil.Process]:
        return [child for child in self.children
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        for child in self.left_behind():
            child.kill()


@pytest.fixture()
def running_dev_session(tmp_path: Path) -> Iterator[RunningDev]:
    session = RunningDev(tmp_path / "data")
    yield session
    session.stop()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORCHESTRATOR_CLI, *args], env=no_orchestrator_settings(), cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def test_other_commands_find_a_running_dev_and_a_second_one_refuses(
    running_dev_session: RunningDev,
) -> None:
    data_dir = running_dev_session.data_dir
    state = running_dev(data_dir)
    assert state is not None and state.broker_url is not None

    second = run_cli("dev", "--no-flower", "--once", "--data-dir", str(data_dir),
                     cwd=data_dir.parent)
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1 and "another orchestrator dev" in second.stderr
    assert f"pid {running_dev_session.process.pid}" in second.stderr
    assert running_dev(data_dir) == state, "the refused one left the first one's files alone"

    exports = run_cli("dev", "--env", "--data-dir", str(data_dir), cwd=data_dir.parent)
    assert exports.returncode == 0, exports.stderr
    assert f"export ORCHESTRATOR_BROKER_URL={state.broker_url}" in exports.stdout.splitlines()

    # No broker configured, in the folder of the running session: its broker, said in a line.
    listing = run_cli("dlq", "list", "--json", cwd=data_dir.parent)
    assert listing.returncode == 0, listing.stderr
    assert listing.stderr.splitlines() == [
        f"using the orchestrator dev running on {data_dir} (pid "
        f"{running_dev_session.process.pid}): broker {state.broker_url}"]


def console_line(process: subprocess.Popen[bytes], timeout: float = 60) -> re.Match[str]:
    """The facts' console line on ``orchestrator dev``'s stdout: its URL and password."""
    assert process.stdout is not None
    pattern = re.compile(r"console\s*\S\s*(http://\S+)\s+\(user dev, password (\S+)\)")
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536).decode(errors="replace")
            assert chunk, f"orchestrator dev closed its stdout:\n{seen}"
            seen += chunk
            found = pattern.search(seen)
            if found:
                return found
    raise AssertionError(f"no console line from orchestrator dev in {timeout}s:\n{seen}")


def test_dev_serves_the_console_behind_its_generated_password(
    running_dev_session: RunningDev,
) -> None:
    found = console_line(running_dev_session.process)
    url, password = found.group(1), found.group(2)
    state = running_dev(running_dev_session.data_dir)
    assert state is not None and state.console_url == url
    assert password not in (running_dev_session.data_dir / STATE_FILE).read_text()
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/").headers["location"].startswith("/login")
        token = re.search(r'name="_xsrf" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        form = {"_xsrf": token.group(1), "user": "dev", "next": "/"}
        assert client.post("/login", data={**form, "password": "wrong-password"}
                           ).status_code == 403
        assert client.post("/login", data={**form, "password": password}).status_code == 302
        page = client.get("/")
    assert page.status_code == 200, page.text
    assert "escavador_youtube.dlq" in page.text, "the console reads the session's broker"


def test_ctrl_c_with_a_closed_pipe_still_stops_every_child(
    running_dev_session: RunningDev,
) -> None:
    """``orchestrator dev | tee log``, then Ctrl-C: tee is gone before "stopping..."."""
    dev = running_dev_session.process
    assert dev.stdout is not None
    dev.stdout.close()
    dev.send_signal(signal.SIGINT)
    assert dev.wait(timeout=90) == 130
    assert running_dev_session.left_behind() == []
    assert not (running_dev_session.data_dir / STATE_FILE).exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_or_killed_dev_leaves_no_child_behind(
    running_dev_session: RunningDev, signum: int,
) -> None:
    running_dev_session.process.send_signal(signum)
    running_dev_session.process.wait(timeout=90)
    wait_until(lambda: not running_dev_session.left_behind(), timeout=60,
               message="the worker and Valkey to stop with orchestrator dev")
    assert running_dev(running_dev_session.data_dir) is None


def test_readiness_is_read_from_this_runs_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("[...] celery@old ready.\n")  # an earlier run's line
    process = ManagedProcess("worker", [sys.executable, "-c", "import time; time.sleep(30)"],
                             dict(os.environ), log, _worker_ready).start()
    try:
        with pytest.raises(TimeoutError):
            process.wait_ready(timeout=1)
    finally:
        process.stop()
