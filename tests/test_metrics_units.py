"""The pieces of the queue metrics that need no broker: the RabbitMQ age bound, the dead-letter
census's read limit, publish times, and the step histograms fed from task events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.registry import CollectorRegistry

from orchestrator.failures.dead_letter_queues import DeadLetter
from orchestrator.headers import PUBLISHED_AT
from orchestrator.observability import dead_letter_census
from orchestrator.observability.metrics import TaskEventMetrics
from orchestrator.observability.publish_time import envelope_time, ready_at
from orchestrator.observability.queue_age import ReadyHeadEstimate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rabbitmq_bound_counts_from_the_later_of_last_empty_and_newest_start() -> None:
    clock = Clock()
    estimate = ReadyHeadEstimate(clock)
    assert estimate.observe("q", 0, None).oldest_age(clock.now) == 0  # empty: 0, noted
    clock.now = 1010.0
    assert estimate.observe("q", 3, None).oldest_age(clock.now) == 10  # since last empty
    assert estimate.observe("q", 3, 1004.0).oldest_age(clock.now) == 6  # a newer start wins
    assert estimate.observe("q", 3, 990.0).oldest_age(clock.now) == 10  # an older one does not
    fresh = ReadyHeadEstimate(clock)
    assert fresh.observe("q", 5, None).oldest_age(clock.now) == 0  # first seen busy now
    clock.now = 1030.0
    assert fresh.observe("q", 5, None).oldest_age(clock.now) == 20  # and growing


def letter(reason: str, when: str) -> DeadLetter:
    return DeadLetter(id=reason, dlq="q.dlq", queue="q", headers={}, body=b"",
                      details={"reason": reason, "last_failure_at": when})


def test_the_census_reads_at_most_its_limit_and_rereads_only_on_change(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    letters = [letter("failed", "2026-01-01T00:00:00Z"), letter("rejected", "2026-01-02T00:00Z")]

    def peek(connection: Any, dlq: str, limit: int) -> list[DeadLetter]:
        reads.append(limit)
        return letters[:limit]

    monkeypatch.setattr(dead_letter_census, "peek", peek)
    census = dead_letter_census.DeadLetterCensus(limit=1)
    counted = census.count(None, "q.dlq", 5)
    assert counted.reasons == {"failed": 1, "unread": 4}
    assert counted.oldest_failed_at == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert census.count(None, "q.dlq", 5) is counted and reads == [1]  # same depth: cached
    census.limit = 10
    assert census.count(None, "q.dlq", 2).reasons == {"failed": 1, "rejected": 1}
    assert census.count(None, "q.dlq", 0).reasons == {} and reads == [1, 2]  # empty: no read


def test_publish_times() -> None:
    assert envelope_time("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert envelope_time("not a time") is None and envelope_time(None) is None
    assert ready_at({PUBLISHED_AT: 100.0}) == 100.0
    eta = datetime.fromtimestamp(160.0, tz=UTC)
    assert ready_at({PUBLISHED_AT: 100.0}, eta) == 160.0  # a back-off is not waiting
    assert ready_at({}) is None and ready_at({PUBLISHED_AT: "x"}) is None


def test_step_histograms_from_task_events() -> None:
    registry = CollectorRegistry()
    metrics = TaskEventMetrics(registry=registry, app=None)  # type: ignore[arg-type]
    metrics.on_event({"type": "task-received", "uuid": "1", "name": "escavador_x"})
    metrics.on_event({"type": "task-started", "uuid": "1", "queue": "escavador_x",
                      "ready_at": 50.0, "queue_wait": 2.5, "timestamp": 100.0})
    metrics.on_event({"type": "task-failed", "uuid": "1", "timestamp": 104.0})
    labels = {"queue": "escavador_x", "task": "escavador_x"}
    assert registry.get_sample_value("orchestrator_step_queue_wait_seconds_sum", labels) == 2.5
    assert registry.get_sample_value("orchestrator_step_run_seconds_sum", labels) == 4.0
    assert metrics.starts.newest("escavador_x") == 50.0
    metrics.on_event({"type": "task-started", "uuid": "2", "timestamp": 1.0})  # not a step
    metrics.on_event({"type": "task-succeeded", "uuid": "2", "runtime": 1.0})
    assert registry.get_sample_value("orchestrator_step_run_seconds_count", labels) == 1
