"""Where the trace events come from: Celery's signals, and the step runtime's own calls.

- ``published``: ``before_task_publish``, in whichever process sends a step's message: the
  caller of ``run_pipeline``/``run_pipelines``, a worker sending a chain link, a chord body
  or a retry (dead letters, which Celery also publishes, are left to ``dead_lettered``);
- ``received``: ``task_received``, in the worker's main process;
- ``started``: ``task_prerun``, where the step runs (a pool process, a thread);
- ``succeeded``, ``retried``, ``failed`` + ``dead_lettered``:
  :class:`~orchestrator.step_task.StepTask` calls :func:`succeeded` (from ``on_success``:
  the result is stored), :func:`retried` and :func:`dead_lettered`;
- ``failed`` outside the runtime: :func:`rejected`, from
  :class:`~orchestrator.step_request.StepRequest` in the main process, and ``task_postrun``
  for a dead letter whose own publish failed;
- the gate and the replay call :func:`~orchestrator.trace.record.record` themselves.

Each handler only looks at what the signal hands it and appends to the process's batch
(:mod:`orchestrator.trace.record`); a message that is not a step's (no correlation header,
a task of plain Celery in the same process) costs a dictionary lookup.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from celery import current_task, signals

from orchestrator.correlation import HEADER, correlation_id_from_request, current_correlation_id
from orchestrator.topology import dlq_name, topology
from orchestrator.trace.record import record

REASON_CHARS = 300
"""A retry's or failure's reason is cut to this much (``dlq show`` has the traceback)."""

_started: dict[str, float] = {}
"""Per task id running in this process: when it started (monotonic), for its runtime."""


def error_text(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"


def _is_last_step(body: Any) -> bool | None:
    """True when the message's canvas has nothing after it (protocol 2's embed)."""
    if not (isinstance(body, tuple | list) and len(body) == 3 and isinstance(body[2], Mapping)):
        return None
    embed = body[2]
    return not (embed.get("callbacks") or embed.get("chain") or embed.get("chord"))


def _current_worker() -> str | None:
    """The hostname of the worker whose step is publishing (None in a client)."""
    request = getattr(current_task._get_current_object(), "request", None)
    return getattr(request, "hostname", None)


def on_publish(body: Any = None, routing_key: str | None = None,
               headers: dict[str, Any] | None = None, **_: Any) -> None:
    if not headers:
        return
    name = headers.get("task")
    correlation_id = headers.get(HEADER) or current_correlation_id()
    if not correlation_id or name not in topology or str(routing_key).endswith(".dlq"):
        return
    record("published", str(correlation_id), task_id=headers.get("id"), task=name,
           queue=name, attempt=int(headers.get("retries") or 0) + 1,
           worker=_current_worker(), last_step=_is_last_step(body))


def on_received(request: Any = None, **_: Any) -> None:
    if request is None or request.name not in topology:
        return
    data = request.request_dict
    record("received", data.get(HEADER), task_id=request.id, task=request.name,
           queue=request.name, attempt=int(data.get("retries") or 0) + 1,
           worker=request.hostname)


def _step_of(task: Any) -> tuple[str, Any] | None:
    """(queue, request) of a step task, None for any other task."""
    spec = getattr(task, "step_spec", None)
    if spec is None:
        return None
    return spec.queue, task.request


def on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    step = _step_of(task)
    if step is None or task_id is None:
        return
    _started[task_id] = time.monotonic()
    queue, request = step
    record("started", correlation_id_from_request(request), task_id=task_id, task=task.name,
           queue=queue, attempt=int(request.retries or 0) + 1, worker=request.hostname)


def runtime_so_far(task_id: str | None) -> float | None:
    started = _started.get(task_id or "")
    return None if started is None else round(time.monotonic() - started, 6)


REJECTED = "outside the step runtime: rejected to the broker's dead-letter queue"


def _fields(task: Any, task_id: str) -> dict[str, Any]:
    request = task.request
    return {"task_id": task_id, "task": task.name, "queue": task.step_spec.queue,
            "attempt": int(request.retries or 0) + 1, "worker": request.hostname,
            "runtime_seconds": runtime_so_far(task_id)}


def succeeded(task: Any, task_id: str) -> None:
    """The step's result is stored (``on_success``: Celery calls it only then)."""
    record("succeeded", correlation_id_from_request(task.request), **_fields(task, task_id))


def on_postrun(task_id: str | None = None, task: Any = None, retval: Any = None,
               state: str | None = None, **_: Any) -> None:
    if _step_of(task) is None or task_id is None:
        return
    if state == "REJECTED":  # the runtime's dead-letter publish failed: the broker's DLQ
        detail = error_text(retval) if isinstance(retval, BaseException) else None
        record("failed", correlation_id_from_request(task.request), reason=REJECTED,
               detail=detail, **_fields(task, task_id))
    _started.pop(task_id, None)


def rejected(request: Any, exc: BaseException) -> None:
    """The worker's main process rejects a failure the runtime did not dead-letter (storing
    the result failed, Celery's own tracing): the broker's DLQ keeps it."""
    if request.name not in topology:
        return
    data = request.request_dict
    record("failed", data.get(HEADER), task_id=request.id, task=request.name,
           queue=request.name, attempt=int(data.get("retries") or 0) + 1,
           worker=request.hostname, reason=REJECTED, detail=error_text(exc))


def retried(task: Any, exc: BaseException, countdown: float, busy: bool,
            correlation_id: str | None) -> None:
    """The step runtime decided to retry ``task``'s message in ``countdown`` seconds."""
    request = task.request
    reason = "another delivery of this step is running" if busy else error_text(exc)
    record("retried", correlation_id or correlation_id_from_request(request),
           task_id=request.id, task=task.name, queue=task.step_spec.queue,
           attempt=int(request.retries or 0) + 1, worker=request.hostname, reason=reason,
           delay_seconds=round(float(countdown), 3), runtime_seconds=runtime_so_far(request.id))


def dead_lettered(task: Any, exc: BaseException, details: Mapping[str, Any]) -> None:
    """The step runtime moved ``task``'s message to its DLQ (``details``: the header)."""
    request = task.request
    fields = {"task_id": request.id, "task": task.name, "queue": task.step_spec.queue,
              "attempt": details.get("attempts"), "worker": request.hostname,
              "reason": details.get("reason")}
    correlation_id = details.get("correlation_id") or correlation_id_from_request(request)
    record("failed", correlation_id, detail=error_text(exc),
           runtime_seconds=runtime_so_far(request.id), **fields)
    record("dead_lettered", correlation_id, detail=f"to {dlq_name(task.step_spec.queue)}",
           dead_letter_id=request.id, **fields)


signals.before_task_publish.connect(on_publish, weak=False)
signals.task_received.connect(on_received, weak=False)
signals.task_prerun.connect(on_prerun, weak=False)
signals.task_postrun.connect(on_postrun, weak=False)
