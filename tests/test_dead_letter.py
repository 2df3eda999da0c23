"""What a dead letter says about its death, whoever dead-lettered it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from orchestrator.correlation import HEADER
from orchestrator.failures import dead_letter
from orchestrator.failures.dead_letter import DEAD_LETTER_HEADER, describe
from orchestrator.failures.errors import FinalError

CID = "0b7f7a2e-3c1d-4c53-9b8e-2f1f3b7f9a10"


def test_describe_returns_our_own_header_as_is() -> None:
    own = dead_letter.failure_details(
        reason=dead_letter.REASON_FAILED, queue="escavador_x", task_name="escavador_x",
        task_id="t1", correlation_id=CID, attempts=1, exc=FinalError("boom"),
    )
    described = dead_letter.describe({dead_letter.DEAD_LETTER_HEADER: own, "x-death": []})
    assert described == own
    assert described is not own  # a copy, the message is untouched
    assert described["reason"] == "failed"
    assert described["exception_type"] == "FinalError"
    assert described["exception_message"] == "boom"


def test_describe_reads_rabbitmq_x_death() -> None:
    when = datetime(2025, 10, 14, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    headers: dict[str, Any] = {
        "x-death": [{"reason": "delivery_limit", "queue": "escavador_x", "count": 1,
                     "time": when}],
        "task": "escavador_x",
        "id": "task-1",
        HEADER: CID,
    }
    described = dead_letter.describe(headers, delivery_limit=3)
    assert described["reason"] == dead_letter.REASON_DELIVERY_LIMIT == "delivery_limit"
    assert described["queue"] == "escavador_x"
    assert described["attempts"] == 4, "the step ran delivery_limit + 1 times"
    assert described["task"] == "escavador_x"
    assert described["task_id"] == "task-1"
    assert described["correlation_id"] == CID
    assert described["last_failure_at"] == datetime(2025, 10, 14, 12, 0, tzinfo=UTC).isoformat()
    assert "delivery limit" in described["exception_message"]


def test_describe_x_death_ignores_the_dead_letters_own_delivery_count() -> None:
    headers = {"x-delivery-count": 4, "retries": 1,
               "x-death": [{"reason": "rejected", "queue": "executador_y", "count": 1}]}
    described = dead_letter.describe(headers)
    assert described["reason"] == "rejected"
    assert described["queue"] == "executador_y"
    assert described["attempts"] == 2, "retries + 1: how often the step ran"


@pytest.mark.parametrize("headers", [None, {}, {"x-death": []}, {"x-death": "garbage"}])
def test_describe_without_details_says_rejected(headers: dict[str, Any] | None) -> None:
    described = dead_letter.describe(headers)
    assert described["reason"] == "rejected"
    assert described["queue"] is None


def test_attempts_count_the_runs_not_the_reads() -> None:
    limit = 3
    poison = {"x-death": [{"reason": "delivery_limit", "queue": "q", "count": 1,
                           "time": datetime(2026, 1, 1, 12, 0)}], "retries": 0}
    for read_count in (None, 0, 1, 19):  # what the DLQ says about its own deliveries
        headers = {**poison, "x-delivery-count": read_count}
        details = describe(headers, delivery_limit=limit)
        assert details["attempts"] == limit + 1
        assert details["last_failure_at"] == "2026-01-01T12:00:00+00:00"
    rejected = {"x-death": [{"reason": "rejected", "queue": "q", "count": 1}],
                "retries": 2, "x-delivery-count": 5}
    assert describe(rejected, delivery_limit=limit)["attempts"] == 3
    own = {DEAD_LETTER_HEADER: {"reason": "failed", "attempts": 2}, "x-delivery-count": 9}
    assert describe(own)["attempts"] == 2
