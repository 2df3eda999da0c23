"""Celery's gevent pool, reporting a failed task function like prefork (see
:mod:`orchestrator.pools`), and taking in messages as fast as they come.

**The event connection is drained without waiting.** A green worker runs Celery's
``synloop``, which after every read of the consumer connection drains the task-event
connection too, so that the broker's heartbeats on it are consumed, and waits up to 0.1 s
for a frame there (``celery.worker.loops._quick_drain``). Nothing else arrives on that
connection, so the loop slept 0.1 s after each message it took in: a RabbitMQ gevent worker
ran one step at a time, ten a second, whatever its concurrency. Reading what is already
there consumes the heartbeats just the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.concurrency import gevent as celery_gevent
from celery.worker import loops as celery_loops

from orchestrator.pools import reporting_failures

_celery_quick_drain = celery_loops._quick_drain


def drain_what_is_there(connection: Any, timeout: float = 0.0) -> None:
    """Celery's ``_quick_drain`` without its wait: read the frames already received."""
    _celery_quick_drain(connection, timeout=0.0)


class GeventPool(celery_gevent.TaskPool):  # type: ignore[misc]
    """Celery's gevent pool; an exception out of the task function goes to the request's
    ``on_failure``."""

    def on_apply(self, target: Callable[..., Any], args: Any = None, kwargs: Any = None,
                 callback: Callable[[Any], Any] | None = None, **options: Any) -> Any:
        target, callback = reporting_failures(target, callback, options.get("error_callback"))
        return super().on_apply(target, args, kwargs, callback, **options)


celery_loops._quick_drain = drain_what_is_there
