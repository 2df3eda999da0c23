"""What an autoscaler reads, scraped for real on every broker: the age of the oldest message
(step queue and DLQ), consumers, queue-wait and run-time histograms, dead letters by reason.

``escavador_lento`` is a queue the shared worker does not consume (a crash-test queue), so a
message published there waits for as long as the test wants, until the test starts a worker
for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.pipeline import run_pipeline
from tests.conftest import CRASH_TEST_MODULES, configured_app
from tests.support.brokers import BrokerUnderTest
from tests.support.scrape import metrics_endpoint, scrape, value
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, worker_env

pytestmark = pytest.mark.broker

WAITING = "escavador_lento"
FAILING = "escavador_falha"


def purge(queue: str) -> None:
    with configured_app().connection_for_write() as connection:
        channel = connection.channel()
        try:
            channel.queue_purge(queue)
        finally:
            channel.close()


@pytest.fixture()
def metrics_url(worker: WorkerProcess, on_broker: BrokerUnderTest) -> Iterator[str]:
    """An exporter whose topology has the crash-test queues too (the test process's)."""
    env = {**worker.env, "ORCHESTRATOR_STEP_MODULES": CRASH_TEST_MODULES}
    with metrics_endpoint(env) as url:
        yield url


def events_flowing(url: str) -> None:
    """Wait until the exporter's event receiver counts a step (it subscribes asynchronously)."""

    def counted() -> bool:
        run_pipeline("eco", {"warm": True}).wait(timeout=60)
        seen = value(scrape(url), "orchestrator_tasks_total", task="escavador_eco",
                     outcome="succeeded")
        return bool(seen)

    wait_until(counted, timeout=60, interval=0.5, message="the exporter's task events")


def test_the_oldest_message_ages_while_it_waits_and_its_wait_is_measured(
    metrics_url: str, on_broker: BrokerUnderTest, log_dir: Path
) -> None:
    purge(WAITING)
    events_flowing(metrics_url)

    def nobody_on_the_waiting_queue() -> str | None:
        text = scrape(metrics_url)
        empty = value(text, "orchestrator_queue_oldest_message_age_seconds", queue=WAITING)
        return text if empty == 0 and value(
            text, "orchestrator_queue_consumers", queue=WAITING) == 0 else None

    text = wait_until(nobody_on_the_waiting_queue, timeout=30,
                      message="no consumer and no message on the waiting queue")
    assert (value(text, "orchestrator_queue_consumers", queue="escavador_eco") or 0) >= 1

    published = time.time()
    handle = run_pipeline("lento", {"seconds": 0.5})

    def age() -> float:
        return value(scrape(metrics_url), "orchestrator_queue_oldest_message_age_seconds",
                     queue=WAITING) or 0.0

    first = wait_until(age, timeout=30, message="a waiting message's age")
    later = wait_until(lambda: (a := age()) >= first + 1.5 and a, timeout=30,
                       message="the age growing while the message waits")
    assert later <= time.time() - published + 2.0, "older than the message itself"
    waited = time.time() - published
    assert value(scrape(metrics_url), "orchestrator_queue_messages", queue=WAITING) == 1

    env = worker_env(on_broker.url, {"ORCHESTRATOR_STEP_MODULES": CRASH_TEST_MODULES})
    consumer = WorkerProcess(env, log_dir, queues=[WAITING], name=f"metrics-{on_broker.name}")
    consumer.start()
    try:
        consumer.wait_ready()
        handle.wait(timeout=60)

        seen: list[object] = []

        def consumed_and_measured() -> str | None:
            text = scrape(metrics_url)
            seen[:] = [value(text, name, queue=WAITING) for name in (
                "orchestrator_queue_oldest_message_age_seconds", "orchestrator_queue_consumers",
                "orchestrator_step_run_seconds_count")]
            age, consumers, runs = seen
            return text if age == 0 and (consumers or 0) >= 1 and runs else None

        try:
            text = wait_until(consumed_and_measured, timeout=60,
                              message="the age back to 0, a consumer and the step's run time")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; age, consumers, runs: {seen}") from None
    finally:
        consumer.stop()
    waits = value(text, "orchestrator_step_queue_wait_seconds_count", queue=WAITING,
                  task=WAITING) or 0
    assert waits == 1
    wait_sum = value(text, "orchestrator_step_queue_wait_seconds_sum", queue=WAITING) or 0.0
    assert waited <= wait_sum <= waited + 60 * waits, f"queue wait {wait_sum}, waited {waited}"
    under_a_second = value(text, "orchestrator_step_queue_wait_seconds_bucket", queue=WAITING,
                           le="1.0")
    assert under_a_second is not None and under_a_second < waits, "the long wait not counted"
    runs = value(text, "orchestrator_step_run_seconds_count", queue=WAITING) or 0
    run_sum = value(text, "orchestrator_step_run_seconds_sum", queue=WAITING) or 0.0
    assert 0.5 * runs <= run_sum < 30 * runs, f"run time {run_sum} for {runs} 0.5 s steps"
    eco_runs = value(text, "orchestrator_step_run_seconds_count", queue="escavador_eco")
    assert eco_runs and eco_runs >= 1


def test_dead_letters_are_counted_by_reason_and_their_age_grows(
    metrics_url: str, on_broker: BrokerUnderTest
) -> None:
    dlq.purge(FAILING)
    final = run_pipeline("falha", {"mode": "final"})
    exhausted = run_pipeline("falha", {"mode": "always"})
    for handle in (final, exhausted):
        with pytest.raises(Exception):  # noqa: B017  (the step's own failure, re-raised)
            handle.wait(timeout=60)

    def counted() -> str | None:
        text = scrape(metrics_url)
        failed = value(text, "orchestrator_dead_letters", queue=FAILING, reason="failed")
        retried = value(text, "orchestrator_dead_letters", queue=FAILING,
                        reason="retries_exhausted")
        return text if failed == 1 and retried == 1 else None

    text = wait_until(counted, timeout=60, message="the dead letters by reason")
    assert value(text, "orchestrator_dead_letter_messages", queue=FAILING) == 2
    assert value(text, "orchestrator_dead_letters", queue=FAILING, reason="unread") is None

    def dead_age() -> float:
        return value(scrape(metrics_url), "orchestrator_dead_letter_oldest_message_age_seconds",
                     queue=FAILING) or 0.0

    first = wait_until(dead_age, timeout=30, message="the oldest dead letter's age")
    wait_until(lambda: dead_age() >= first + 1.5, timeout=30,
               message="the oldest dead letter's age growing")
    listed = dlq.list_dead_letters(FAILING)
    assert len(listed) == 2, "reading the DLQ for the metrics took dead letters away"

    dlq.purge(FAILING)

    def emptied() -> bool:
        text = scrape(metrics_url)
        return (value(text, "orchestrator_dead_letter_oldest_message_age_seconds",
                      queue=FAILING) == 0
                and value(text, "orchestrator_dead_letters", queue=FAILING) is None)

    wait_until(emptied, timeout=30, message="no dead letter counted after the purge")
