"""The decisions behind the failure paths, without a broker: what a retry carries, which
arguments a step takes, which failures the worker must not ack, what ``attempts`` means."""

from __future__ import annotations

import datetime as dt
import pickle
from typing import Any

import pytest
from billiard.einfo import ExceptionInfo
from celery.exceptions import Reject, Retry, WorkerLostError
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import headers as message_headers
from orchestrator.failures.dead_letter import DEAD_LETTER_HEADER, describe
from orchestrator.failures.errors import FinalError
from orchestrator.failures.outcome import mark_dead_lettered, was_dead_lettered
from orchestrator.step_request import needs_broker_dead_letter
from orchestrator.step_task import InvalidArguments, step_arguments
from orchestrator.topology import QueueSpec
from orchestrator.transports.dead_lettering import (
    DEATH_FIELDS,
    DeadLetterRoute,
    death_headers,
    runs_at_delivery_limit,
)

BROKER_HEADERS = {
    "x-death": [{"reason": "expired", "queue": "celery_delayed_1", "count": 1}],
    "x-first-death-exchange": "celery_delayed_1", "x-first-death-queue": "celery_delayed_1",
    "x-first-death-reason": "expired", "x-delivery-count": 2,
}


def test_a_retry_carries_the_project_headers_and_none_of_the_brokers() -> None:
    mine = {message_headers.CORRELATION_ID: "c", message_headers.FIRST_FAILURE_AT: "t",
            message_headers.REPLAY_ID: "r", "traceparent": "00-ab-cd-01"}
    assert message_headers.carried({**BROKER_HEADERS, **mine, "stray": 1}) == mine
    assert message_headers.carried(None) == {}


@given(st.dictionaries(st.text(max_size=20), st.integers()))
def test_carried_headers_are_always_a_subset_of_the_carried_names(
    headers: dict[str, int],
) -> None:
    assert set(message_headers.carried(headers)) <= message_headers.CARRIED


ENVELOPE = {"tipo_evento": "iniciar_coleta"}


@pytest.mark.parametrize("args, kwargs, expected", [
    ((ENVELOPE,), {}, (ENVELOPE, {})),
    ((ENVELOPE, {"a": 1}), {}, (ENVELOPE, {"a": 1})),
    ((ENVELOPE,), {"options": {"a": 1}}, (ENVELOPE, {"a": 1})),
    ((), {"entrada": ENVELOPE, "options": None}, (ENVELOPE, {})),
])
def test_the_ways_a_step_is_called(args: tuple[Any, ...], kwargs: dict[str, Any],
                                   expected: tuple[Any, dict[str, Any]]) -> None:
    assert step_arguments(args, kwargs) == expected


@pytest.mark.parametrize("args, kwargs, message", [
    ((ENVELOPE,), {"unexpected": 1}, "unexpected keyword"),
    ((ENVELOPE, {}, {}), {}, "at most 2"),
    ((), {}, "missing"),
    ((ENVELOPE,), {"entrada": ENVELOPE}, "given twice"),
    ((ENVELOPE,), {"options": [1]}, "must be an object"),
])
def test_wrong_step_arguments_are_named(args: tuple[Any, ...], kwargs: dict[str, Any],
                                        message: str) -> None:
    with pytest.raises(InvalidArguments, match=message):
        step_arguments(args, kwargs)


def _einfo(exc: BaseException) -> ExceptionInfo:
    try:
        raise exc
    except BaseException:
        return ExceptionInfo()


def test_only_a_failure_the_runtime_dead_lettered_is_acked() -> None:
    handled = pickle.loads(pickle.dumps(_einfo(mark_dead_lettered(FinalError("x")))))
    assert was_dead_lettered(handled.exception), "the mark survives the pool's pickling"
    assert not needs_broker_dead_letter(handled.exception)
    assert needs_broker_dead_letter(_einfo(ConnectionError("backend down")).exception)
    for celery_decides in (Reject("r", requeue=False), Retry(), WorkerLostError()):
        assert not needs_broker_dead_letter(_einfo(celery_decides).exception)


def test_attempts_count_the_runs_not_the_reads() -> None:
    limit = 3
    poison = {"x-death": [{"reason": "delivery_limit", "queue": "q", "count": 1,
                           "time": dt.datetime(2026, 1, 1, 12, 0)}], "retries": 0}
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


def test_a_dead_letter_queue_has_no_delivery_counting_to_reach() -> None:
    arguments = QueueSpec("escavador_x", "escavador", 3).dead_letter_queue().queue_arguments
    assert arguments == {"x-queue-type": "classic"}


@given(st.integers(min_value=0, max_value=50), st.integers(min_value=0, max_value=60))
def test_a_message_dies_on_the_return_after_its_last_allowed_delivery(
    limit: int, returns: int,
) -> None:
    route = DeadLetterRoute.from_arguments({"x-delivery-limit": limit})
    assert route.past_limit(returns) == (returns >= runs_at_delivery_limit(limit))
    assert not DeadLetterRoute.from_arguments(None).past_limit(returns)


def test_the_route_is_written_and_read_with_rabbitmqs_argument_names() -> None:
    arguments = QueueSpec("escavador_x", "escavador", 5).queue_arguments()
    route = DeadLetterRoute.from_arguments(arguments)
    assert route == DeadLetterRoute("escavador_x.dlx", "escavador_x.dlq", 5)
    assert {**route.arguments(), "x-queue-type": "quorum"} == arguments


def test_a_transports_death_has_rabbitmqs_fields() -> None:
    headers = death_headers(reason="rejected", queue="q", exchange="", routing_keys=["q"],
                            returns=2, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    [death] = headers["x-death"]
    assert set(death) == DEATH_FIELDS
    assert headers["x-delivery-count"] == 2
    assert describe(headers, delivery_limit=4)["last_failure_at"] == "2026-01-01T00:00:00+00:00"
