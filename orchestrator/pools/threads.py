"""Celery's threads pool, reporting a failed task function like prefork (see
:mod:`orchestrator.pools`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.concurrency import thread as celery_threads

from orchestrator.pools import reporting_failures


class ThreadsPool(celery_threads.TaskPool):  # type: ignore[misc]
    """Celery's threads pool; an exception out of the task function goes to the request's
    ``on_failure``."""

    def on_apply(self, target: Callable[..., Any], args: Any = None, kwargs: Any = None,
                 callback: Callable[[Any], Any] | None = None, **options: Any) -> Any:
        target, callback = reporting_failures(target, callback, options.get("error_callback"))
        return super().on_apply(target, args, kwargs, callback, **options)
