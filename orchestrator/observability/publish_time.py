"""When a message became ready to run: the start of its queue wait.

Celery's task events say when a task was received and started, never when it was
published, so the wait in the queue cannot be told from them alone. Every Celery publish of
this project stamps :data:`~orchestrator.headers.PUBLISHED_AT` (the producer's clock, one
float in a header: no round trip, no extra message), and the worker's request
(:class:`~orchestrator.step_request.StepRequest`) adds :func:`ready_at` to the
``task-started`` event it sends anyway. A plain envelope from a foreign producer has no such
header; its envelope ``timestamp`` stands in (see :mod:`orchestrator.plain_envelopes`).

A message with an ETA (a retry's back-off, a countdown) is not waiting before its ETA: its
wait counts from the later of the two. The stamp is never carried into a retry or a replay,
each of which is a publish of its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from celery import signals

from orchestrator.headers import PUBLISHED_AT
from orchestrator.utc import parse_utc


def stamp_publish_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish``: this publish's own time, replacing any copied one."""
    if headers is not None:
        headers[PUBLISHED_AT] = time.time()


def envelope_time(value: Any) -> float | None:
    """An envelope's ISO 8601 ``timestamp`` as Unix seconds; None when it is not one."""
    moment = parse_utc(value)
    return None if moment is None else moment.timestamp()


def ready_at(headers: Mapping[str, Any], eta: datetime | None = None) -> float | None:
    """When the message could first run: its publish time, or its ETA when that is later.
    None for a message without a publish time."""
    try:
        published = float(headers[PUBLISHED_AT])
    except (KeyError, TypeError, ValueError):
        return None
    if eta is not None:
        published = max(published, eta.timestamp())
    return published


signals.before_task_publish.connect(stamp_publish_time, weak=False)
