"""Celery's pools as the orchestrator runs them (``-P threads`` and ``-P gevent`` select these
once the app is loaded; prefork and solo are Celery's own).

**A failure of the task function itself reaches the request on every pool.** Prefork's
children send such a failure (an exception out of Celery's tracer: storing the result and then
storing the failure both failed, the result backend being down) back to the worker, which
calls the request's ``on_failure``: the step request rejects the message to the DLQ
(``orchestrator/step_request.py``). Celery's threads and gevent pools ignore that error
callback: the exception dies in the thread's future or in the greenlet, and the message stays
unacknowledged in a live worker, neither run again nor dead-lettered.
:class:`~orchestrator.pools.threads.ThreadsPool` and
:class:`~orchestrator.pools.gevent.GeventPool` hand it to the error callback, as prefork does.

Every pool runs on every broker. On NATS, whose client is asyncio, a gevent worker's
connections share one event loop (``orchestrator/transports/nats_jetstream.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import concurrency


def reporting_failures(target: Callable[..., Any], callback: Callable[[Any], Any] | None,
                       error_callback: Callable[[ExceptionInfo], Any] | None,
                       ) -> tuple[Callable[..., Any], Callable[[Any], Any]]:
    """``target`` and ``callback`` such that an exception out of ``target`` goes to
    ``error_callback`` (billiard's behaviour) instead of out of the pool's thread/greenlet."""
    failed = object()

    def guarded_target(*args: Any, **kwargs: Any) -> Any:
        try:
            return target(*args, **kwargs)
        except Exception:
            if error_callback is None:
                raise
            error_callback(ExceptionInfo())
            return failed

    def guarded_callback(result: Any) -> None:
        if result is not failed and callback is not None:
            callback(result)

    return guarded_target, guarded_callback


# Celery's banner names a pool by its module: these say "threads" and "gevent".
concurrency.ALIASES["threads"] = "orchestrator.pools.threads:ThreadsPool"
concurrency.ALIASES["gevent"] = "orchestrator.pools.gevent:GeventPool"
