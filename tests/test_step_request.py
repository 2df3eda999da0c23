"""Which failures the worker must not ack: those the runtime did not dead-letter."""

from __future__ import annotations

import pickle

from billiard.einfo import ExceptionInfo
from celery.exceptions import Reject, Retry, WorkerLostError

from orchestrator.failures.errors import FinalError
from orchestrator.failures.outcome import mark_dead_lettered, was_dead_lettered
from orchestrator.step_request import needs_broker_dead_letter


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
