"""Escavadores on the pools for I/O-bound steps, Celery's threads pool (dev mode's and
docker-compose's default for them) and gevent, on every broker: steps side by side, a killed
worker's step completed exactly once, a warm shutdown, gevent's hard time limit.

Own workers on the crash tests' queues (the shared prefork worker does not consume them).
What differs from prefork is in the README ("I/O-bound steps"): no time limits on threads,
and a step that kills its process kills the whole worker.
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


@pytest.fixture(params=["threads", "gevent"])
def pool(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def threads_workers(broker: BrokerUnderTest, worker: WorkerProcess,
                    log_dir: Path) -> Iterator[list[WorkerProcess]]:
    """Started on demand; the shared worker (``worker``) runs the executadores."""
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.stop()


def start_io_worker(broker: BrokerUnderTest, log_dir: Path, started: list[WorkerProcess],
                    pool: str, concurrency: int = 8) -> WorkerProcess:
    process = WorkerProcess(worker_env(broker.url), log_dir, queues=CRASH_QUEUES,
                            concurrency=concurrency, name=pool, pool=pool).start()
    started.append(process)
    process.wait_ready()
    return process


def test_steps_run_side_by_side(on_broker: BrokerUnderTest, log_dir: Path, tmp_path: Path,
                                threads_workers: list[WorkerProcess], pool: str) -> None:
    """Eight steps all start while none has finished: eight at once, in one process
    (prefork -c 2 would start two). Each holds until the test has seen all eight start; the
    wait for them fails after 50 s, and the steps give up holding after 60 s."""
    from orchestrator.pipeline import run_pipeline

    start_io_worker(on_broker, log_dir, threads_workers, pool)
    markers = [tmp_path / f"started-{n}" for n in range(8)]
    release = tmp_path / "release"
    handles = [run_pipeline("lento", {"seconds": 60, "started_marker": str(marker),
                                      "release_marker": str(release)})
               for marker in markers]
    try:
        wait_until(lambda: all(marker.exists() for marker in markers), timeout=50,
                   message="all eight steps running at once")
        assert not any(handle.result.ready() for handle in handles)
        assert len({marker.read_text() for marker in markers}) == 1, "one process, 8 threads"
    finally:
        release.touch()  # a failure here must not leave steps holding the worker's shutdown
    for handle in handles:
        [final] = handle.wait(timeout=TIMEOUT)
        assert str(final.correlation_id) == handle.correlation_id


def test_a_killed_io_worker_leaves_its_step_to_another_exactly_once(
    on_broker: BrokerUnderTest, log_dir: Path, tmp_path: Path,
    threads_workers: list[WorkerProcess], pool: str,
) -> None:
    first = start_io_worker(on_broker, log_dir, threads_workers, pool)
    assert_a_killed_step_completes_exactly_once(
        first.kill, lambda: start_io_worker(on_broker, log_dir, threads_workers, pool),
        tmp_path, TIMEOUT)


def test_sigterm_lets_a_running_step_finish(on_broker: BrokerUnderTest, log_dir: Path,
                                            tmp_path: Path,
                                            threads_workers: list[WorkerProcess],
                                            pool: str) -> None:
    from orchestrator.pipeline import run_pipeline

    worker = start_io_worker(on_broker, log_dir, threads_workers, pool)
    marker = tmp_path / "started"
    handle = run_pipeline("lento", {"seconds": 3, "started_marker": str(marker)})
    wait_until(marker.exists, timeout=TIMEOUT, message="the step running")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)  # Celery's warm shutdown
    [final] = handle.wait(timeout=TIMEOUT)
    assert str(final.correlation_id) == handle.correlation_id
    assert worker.process.wait(timeout=TIMEOUT) == 0


def test_the_hard_time_limit_stops_a_gevent_step_and_the_delivery_limit_ends_it(
    on_broker: BrokerUnderTest, log_dir: Path, threads_workers: list[WorkerProcess],
) -> None:
    """Celery's gevent pool raises the hard time limit inside the step (at its next wait) and
    the message is redelivered, as after a killed prefork child, until the delivery limit
    dead-letters it; the soft limit is not enforced there (README, "I/O-bound steps")."""
    from orchestrator.pipeline import run_pipeline
    from orchestrator.settings import get_settings
    from tests.conftest import dead_letters_for

    worker = start_io_worker(on_broker, log_dir, threads_workers, "gevent")
    handle = run_pipeline("teimoso", {"seconds": 30})
    [letter] = wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
                          message="the timed-out message in the DLQ")
    assert letter.details["reason"] == "delivery_limit"
    assert letter.details["attempts"] == get_settings().delivery_limit + 1
    assert "Hard time limit" in worker.log()
    assert worker.alive

