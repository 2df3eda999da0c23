"""The worker-side request of a step: never acks a failure that nobody dead-lettered.

A step task acks its failures (``acks_on_failure``) because the runtime has already put the
message in the DLQ with the failure's details. Some failures happen where the runtime cannot
see them: Celery storing the result after the step returned (the result backend is down),
an error in Celery's own tracing, a future path nobody thought of. Acked, such a message
would be gone without a trace. :class:`StepRequest` rejects it without requeue instead, so
the broker's dead-lettering (RabbitMQ's DLX, the transports' own) keeps it, with reason
``rejected`` and its original bytes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from celery.exceptions import (
    Ignore,
    Reject,
    Retry,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from celery.worker.request import Request

from orchestrator.failures.outcome import was_dead_lettered
from orchestrator.observability.publish_time import ready_at
from orchestrator.trace import hooks as trace

logger = logging.getLogger("orchestrator.step")

HANDLED_BY_CELERY = (Reject, Ignore, Retry, Terminated, TimeLimitExceeded, WorkerLostError,
                     SystemExit, KeyboardInterrupt, MemoryError)
"""Failures whose ack or requeue Celery already decides the way the guarantees need."""


def needs_broker_dead_letter(exc: BaseException | None) -> bool:
    """True for a failure that the runtime did not dead-letter and Celery would ack."""
    if isinstance(exc, ExceptionWithTraceback):
        exc = exc.exc
    return not isinstance(exc, HANDLED_BY_CELERY) and not was_dead_lettered(exc)


class StepRequest(Request):  # type: ignore[misc]
    """Celery's request, rejecting (not acking) a failure outside the step runtime.

    Its ``task-succeeded`` event says which kind of envelope the step returned, not the
    envelope (:attr:`StepTask.resultrepr_maxsize <orchestrator.step_task.StepTask>`).

    Its ``task-started`` event also says which queue the step came from and when the message
    became ready to run (:func:`~orchestrator.observability.publish_time.ready_at`) and how
    long it waited for this start: fields in an event the worker sends anyway, from which
    ``orchestrator metrics`` measures the queue wait.
    """

    def send_event(self, type: str, **fields: Any) -> None:
        if type == "task-succeeded":  # the kind of envelope returned, never its payload
            fields["result"] = f"<envelope {self.task.step_spec.produces}>"
        if type == "task-started":
            fields["queue"] = self.task.step_spec.queue
            ready = ready_at(self._request_dict, self.eta)
            if ready is not None:  # the wait on this host's clock: Celery shifts event times
                fields["ready_at"] = ready  # by the sender's UTC offset, a pure epoch it is not
                fields["queue_wait"] = max(time.time() - ready, 0.0)
        super().send_event(type, **fields)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> None:
        if self.task.acks_late and needs_broker_dead_letter(exc_info.exception):
            logger.error("%s[%s] failed outside the step runtime (%r): rejecting the message "
                         "to the dead-letter queue", self.name, self.id, exc_info.exception)
            self.reject(requeue=False)  # Celery's ack below is then a no-op
            exc = exc_info.exception
            trace.rejected(self, exc.exc if isinstance(exc, ExceptionWithTraceback) else exc)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
