"""Pipelines: the orchestrator's way to trigger escavadores and executadores as one canvas.

- one escavador: ``chain(escavador, executador)`` (several executadores run in parallel on
  the collection result);
- several escavadores: a ``chord`` whose body, the executadores, gets every collection result
  once all of them finished.

Every signature carries the correlation id in the :data:`~orchestrator.correlation.HEADER`
header and the envelope; the worker-side signal handler carries it further (links, chord
bodies, retries). The envelope is validated and its size checked *before* anything is sent, so
a bad request fails in the caller, not in a dead-letter queue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery, chain, chord, group
from celery.canvas import Signature
from celery.result import AsyncResult, GroupResult

from orchestrator.correlation import HEADER
from orchestrator.envelope import Envelope, EnvelopeError, EventType, wire_json
from orchestrator.names import resolve_step
from orchestrator.observability.otel import pipeline_span
from orchestrator.settings import get_settings

ExecuteSpec = Sequence[str] | Mapping[str, Mapping[str, Any] | None] | None


class PipelineError(ValueError):
    """A pipeline request that cannot be sent (unknown step, invalid or oversized envelope)."""


@dataclass(frozen=True)
class PipelineHandle:
    """What the caller keeps: the correlation id and the canvas's result."""

    correlation_id: str
    result: AsyncResult | GroupResult
    steps: tuple[str, ...]

    def wait(self, timeout: float | None = None) -> list[Envelope]:
        """Block until the pipeline ends; the final envelopes (one per last step).

        Raises the step's exception if the pipeline failed (its message is then in a DLQ).
        """
        value = self.result.get(timeout=timeout, propagate=True, disable_sync_subtasks=False)
        items = value if isinstance(value, list) else [value]
        return [Envelope.parse(item) for item in _flatten(items)]

    def wait_replayed(self, timeout: float, poll: float = 0.2) -> list[Envelope]:
        """Wait for a pipeline whose failed step was replayed from its DLQ.

        The result backend still holds the earlier failure (Celery marks every later chain
        step failed too) until the replayed steps overwrite it, so this waits for SUCCESS and
        reads fresh results instead of the cached failure.
        """
        deadline = time.monotonic() + timeout
        result_id = self.result.id
        while time.monotonic() < deadline:
            fresh = self.result.app.AsyncResult(result_id)
            if fresh.state == "SUCCESS":
                value = fresh.get(timeout=max(deadline - time.monotonic(), 0.1),
                                  disable_sync_subtasks=False)
                items = value if isinstance(value, list) else [value]
                return [Envelope.parse(item) for item in _flatten(items)]
            time.sleep(poll)
        raise TimeoutError(f"pipeline {self.correlation_id} did not succeed in {timeout}s")

    @property
    def state(self) -> str:
        return str(self.result.state)


def _flatten(items: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in items:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _task_signature(app: Celery, task_name: str, headers: dict[str, str], *args: Any,
                    **kwargs: Any) -> Signature:
    task = app.tasks.get(task_name)
    if task is None:
        known = sorted(n for n in app.tasks if n.startswith(("escavador_", "executador_")))
        raise PipelineError(f"unknown step {task_name!r}; known steps: {', '.join(known)}")
    signature: Signature = task.signature(
        args, kwargs, headers=dict(headers),
        argsrepr=args_description(headers[HEADER], args),
        kwargsrepr=kwargs_description(kwargs),
    )
    return signature


def args_description(correlation_id: str, args: tuple[Any, ...]) -> str:
    """What Flower, task events and logs show as a step's arguments.

    Not the payload: it may carry secrets (a webhook token, a customer's data) that have no
    place in telemetry, and formatting it is most of the publisher's cost for a big one.
    The correlation id is what an operator searches by. The same text serves the next
    steps of a chain, whose envelope the previous step produces.
    """
    if args and isinstance(args[0], Mapping):
        kind = args[0].get("tipo_evento", "?")
        return f"(<envelope {kind} correlation_id={correlation_id}>,)"
    return f"(<envelope(s) from the previous step, correlation_id={correlation_id}>,)"


def kwargs_description(kwargs: Mapping[str, Any]) -> str:
    """An executador's options by name only (a URL or a token stays out of telemetry)."""
    options = kwargs.get("options") or {}
    return "{}" if not options else f"{{'options': <{', '.join(sorted(options))}>}}"


def _normalise_execute(execute: ExecuteSpec) -> dict[str, dict[str, Any]]:
    if execute is None:
        return {}
    if isinstance(execute, Mapping):
        return {name: dict(options or {}) for name, options in execute.items()}
    if isinstance(execute, str):
        raise PipelineError("execute must be a list of executador names, not a string")
    return {name: {} for name in execute}


def check_size(envelope: Envelope | dict[str, Any], max_bytes: int | None = None) -> None:
    """Refuse an envelope over ``ORCHESTRATOR_MAX_MESSAGE_BYTES`` before it is published
    (given as the model or as its wire form, which the publisher has at hand anyway)."""
    limit = max_bytes if max_bytes is not None else get_settings().max_message_bytes
    message = envelope.to_dict() if isinstance(envelope, Envelope) else envelope
    size = len(wire_json(message).encode("utf-8"))
    if size > limit:
        raise PipelineError(
            f"envelope is {size} bytes, over the {limit}-byte limit "
            "(ORCHESTRATOR_MAX_MESSAGE_BYTES): send a reference, not the data"
        )


def build_pipeline(
    app: Celery,
    collect: str | Sequence[str],
    payload: Mapping[str, Any],
    execute: ExecuteSpec = None,
    correlation_id: str | None = None,
) -> tuple[Envelope, Signature, tuple[str, ...]]:
    """Build (without sending) the canvas of a pipeline; returns envelope, canvas, step names."""
    fontes = [collect] if isinstance(collect, str) else list(collect)
    if not fontes:
        raise PipelineError("a pipeline needs at least one escavador")
    try:
        envelope = Envelope.new(EventType.INICIAR_COLETA, dict(payload), correlation_id)
    except EnvelopeError as exc:
        raise PipelineError(str(exc)) from None
    message = envelope.to_dict()
    check_size(message)
    headers = {HEADER: message["correlation_id"]}
    steps_known = list(app.tasks)
    try:
        collectors = [
            _task_signature(app, resolve_step("escavador", fonte, steps_known), headers,
                            message)
            for fonte in fontes
        ]
        executors = [
            _task_signature(app, resolve_step("executador", nome, steps_known), headers,
                            options=options)
            for nome, options in _normalise_execute(execute).items()
        ]
    except ValueError as exc:  # a step name no queue can have, or no step has
        raise PipelineError(str(exc)) from None
    steps = tuple(str(s.task) for s in [*collectors, *executors])
    body: Signature | None
    if not executors:
        body = None
    elif len(executors) == 1:
        body = executors[0]
    else:
        body = group(executors)
    canvas: Signature
    if len(collectors) == 1:
        canvas = collectors[0] if body is None else chain(collectors[0], body)
    elif body is None:
        canvas = group(collectors)
    else:
        canvas = chord(group(collectors), body)
    return envelope, canvas, steps


def run_pipeline(
    collect: str | Sequence[str],
    payload: Mapping[str, Any],
    execute: ExecuteSpec = None,
    correlation_id: str | None = None,
    *,
    app: Celery | None = None,
) -> PipelineHandle:
    """Send a pipeline: escavador(es) ``collect`` on ``payload``, then executadores ``execute``.

    ``execute`` is a list of executador names, or a mapping name -> options for each
    (e.g. ``{"webhook": {"url": "https://..."}}``). A caller-given ``correlation_id`` is kept.
    """
    if app is None:
        from orchestrator.celery_app import app as default_app

        app = default_app
    envelope, canvas, steps = build_pipeline(app, collect, payload, execute, correlation_id)
    with pipeline_span(str(envelope.correlation_id), steps):  # the request's trace
        result = canvas.apply_async()
    return PipelineHandle(str(envelope.correlation_id), result, steps)


def dumps_envelopes(envelopes: list[Envelope]) -> str:
    """The CLI's ``--json`` form: one envelope as an object, several as a list."""
    data: Any = envelopes[0].to_dict() if len(envelopes) == 1 else [
        e.to_dict() for e in envelopes
    ]
    return json.dumps(data, ensure_ascii=False, indent=2)


def forget_pending(result: Any) -> None:
    """Stop waiting for ``result`` after a failed ``get``.

    Celery keeps a result it timed out on in the backend's pending set and unsubscribes from
    it only when the object dies; left there, that happens at interpreter shutdown and
    prints tracebacks (``orchestrator run --wait`` timing out did). Releasing it at once keeps
    the result consumer clean.
    """
    backend = getattr(result, "backend", None)
    if backend is not None and hasattr(backend, "remove_pending_result"):
        backend.remove_pending_result(result)
