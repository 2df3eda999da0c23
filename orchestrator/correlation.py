"""One correlation id per request, carried through every task, retry, log line and dead letter.

Celery's own ``correlation_id`` is the task id (the worker overwrites ``request.correlation_id``),
so the pipeline's id travels in the message header :data:`HEADER` and in the envelope.
Celery publishes chain links, chord bodies and retries with only parent/root ids; the
``before_task_publish`` handler below copies the header from the task being executed into
every message published while it runs, which covers all of them (links are sent inside the
parent's trace, before ``task_postrun``).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from celery import signals

from orchestrator.headers import CORRELATION_ID

HEADER = CORRELATION_ID
"""Message header holding the pipeline's correlation id (``correlation_id`` is Celery's)."""

NO_CORRELATION = "-"

_current: ContextVar[str | None] = ContextVar("orchestrator_correlation_id", default=None)


def current_correlation_id() -> str | None:
    """The correlation id of the task running in this context, if any."""
    return _current.get()


def bind_correlation_id(correlation_id: str | None) -> object:
    """Make ``correlation_id`` current; returns a token for :func:`unbind_correlation_id`."""
    return _current.set(correlation_id)


def unbind_correlation_id(token: object) -> None:
    """Restore the correlation id that was current before :func:`bind_correlation_id`."""
    _current.reset(token)  # type: ignore[arg-type]


def correlation_id_from_request(request: Any) -> str | None:
    """Read the header from a Celery request context (``task.request``)."""
    value = getattr(request, HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None) or {}
        value = headers.get(HEADER)
    return str(value) if value else None


_base_factory = logging.getLogRecordFactory()


def _record_with_correlation_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Every record gets ``correlation_id``, whichever logger or handler it goes through
    (billiard's and Kombu's loggers included), so format strings can always use it."""
    record = _base_factory(*args, **kwargs)
    record.correlation_id = _current.get() or NO_CORRELATION
    return record


if getattr(_base_factory, "__name__", "") != _record_with_correlation_id.__name__:
    logging.setLogRecordFactory(_record_with_correlation_id)


def _propagate_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Copy the running task's correlation id into every message it publishes."""
    if headers is None or headers.get(HEADER):
        return
    correlation_id = _current.get()
    if correlation_id:
        headers[HEADER] = correlation_id


def _bind_on_prerun(task: Any = None, **_: Any) -> None:
    if task is not None:
        _current.set(correlation_id_from_request(task.request))


def _unbind_on_postrun(**_: Any) -> None:
    _current.set(None)


signals.before_task_publish.connect(_propagate_header, weak=False)
signals.task_prerun.connect(_bind_on_prerun, weak=False)
signals.task_postrun.connect(_unbind_on_postrun, weak=False)
