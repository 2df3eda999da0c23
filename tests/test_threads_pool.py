"""Escavadores on Celery's threads pool (dev mode's and docker-compose's default for them):
steps side by side, a killed worker's step completed exactly once, a warm shutdown.

Own workers on the crash tests' queues (the shared prefork worker does not consume them).
What differs from prefork is in the README ("I/O-bound steps"): no time limits, and a step
that kills its process kills the whole worker.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CRASH_QUEUES
from tests.support.brokers import BrokerUnderTest
from tests.support.crashes import assert_a_killed_step_completes_exactly_once
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.crash]
TIMEOUT = 90


@pytest.fixture()
def threads_workers(broker: BrokerUnderTest, worker: WorkerProcess,
                    log_dir: Path) -> Iterator[list[WorkerProcess]]:
    """Started on demand; the shared worker (``worker``) runs the executadores."""
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.stop()


def start_threads_worker(broker: BrokerUnderTest, log_dir: Path, started: list[WorkerProcess],
                         concurrency: int = 8) -> WorkerProcess:
    process = WorkerProcess(worker_env(broker.url), log_dir, queues=CRASH_QUEUES,
                            concurrency=concurrency, name="threads", pool="threads").start()
    started.append(process)
    process.wait_ready()
    return process


def test_steps_run_side_by_side(on_broker: BrokerUnderTest, log_dir: Path, tmp_path: Path,
                                threads_workers: list[WorkerProcess]) -> None:
    """Eight 20-second steps all start while the first still runs: eight at once, in one
    process (prefork -c 2 would start two)."""
    from orchestrator.pipeline import run_pipeline

    start_threads_worker(on_broker, log_dir, threads_workers)
    markers = [tmp_path / f"started-{n}" for n in range(8)]
    handles = [run_pipeline("lento", {"seconds": 20, "started_marker": str(marker)})
               for marker in markers]
    wait_until(lambda: all(marker.exists() for marker in markers), timeout=18,
               message="all eight steps running at once")
    assert not any(handle.result.ready() for handle in handles)
    assert len({marker.read_text() for marker in markers}) == 1, "one process, eight threads"
    for handle in handles:
        [final] = handle.wait(timeout=TIMEOUT)
        assert str(final.correlation_id) == handle.correlation_id


def test_a_killed_threaded_worker_leaves_its_step_to_another_exactly_once(
    on_broker: BrokerUnderTest, log_dir: Path, tmp_path: Path,
    threads_workers: list[WorkerProcess],
) -> None:
    first = start_threads_worker(on_broker, log_dir, threads_workers)
    assert_a_killed_step_completes_exactly_once(
        first.kill, lambda: start_threads_worker(on_broker, log_dir, threads_workers),
        tmp_path, TIMEOUT)


def test_sigterm_lets_a_running_step_finish(on_broker: BrokerUnderTest, log_dir: Path,
                                            tmp_path: Path,
                                            threads_workers: list[WorkerProcess]) -> None:
    from orchestrator.pipeline import run_pipeline

    worker = start_threads_worker(on_broker, log_dir, threads_workers)
    marker = tmp_path / "started"
    handle = run_pipeline("lento", {"seconds": 3, "started_marker": str(marker)})
    wait_until(marker.exists, timeout=TIMEOUT, message="the step running")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)  # Celery's warm shutdown
    [final] = handle.wait(timeout=TIMEOUT)
    assert str(final.correlation_id) == handle.correlation_id
    assert worker.process.wait(timeout=TIMEOUT) == 0
