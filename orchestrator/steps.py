"""Declaring steps: one decorated function is one escavador or executador.

    @escavador("youtube")
    def coletar(payload: dict, ctx: StepContext) -> dict: ...

registers the Celery task ``escavador_youtube``, routes it to the queue of the same name only,
adds that queue (with its dead-letter exchange and queue) to the topology, and wraps the
function so it takes an envelope and returns one: the function itself sees plain payloads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery import current_app

from orchestrator.envelope import Envelope, EventType
from orchestrator.failures.retry import RetryPolicy
from orchestrator.settings import Settings, get_settings
from orchestrator.topology import (
    QueueSpec,
    StepKind,
    queue_name,
    routes_through_exchange,
    topology,
)

if TYPE_CHECKING:
    from orchestrator.step_task import StepTask

StepFunction = Callable[[dict[str, Any], "StepContext"], dict[str, Any]]
KeyFunction = Callable[["StepContext"], str]


@dataclass(frozen=True)
class StepContext:
    """What a step function may know about the message it is processing."""

    correlation_id: str
    step: str
    task_id: str
    attempt: int
    inputs: tuple[Envelope, ...]
    options: dict[str, Any]
    idempotency_key: str
    settings: Settings
    logger: logging.Logger = field(repr=False)


@dataclass(frozen=True)
class StepSpec:
    """Everything the runtime needs to know about one step type."""

    kind: StepKind
    name: str
    function: StepFunction
    accepts: frozenset[EventType]
    produces: EventType
    retry: RetryPolicy
    soft_time_limit: float
    time_limit: float
    idempotency_key: KeyFunction | None = None

    @property
    def queue(self) -> str:
        return queue_name(self.kind, self.name)

    @property
    def task_name(self) -> str:
        """Task name == queue name, so services in any language can address a step."""
        return self.queue


_steps: dict[str, StepSpec] = {}


def registered_steps() -> dict[str, StepSpec]:
    """Every step declared in this process, by task name."""
    return dict(_steps)


def route_step(name: str, *_: Any, task: Any = None, **__: Any) -> dict[str, str] | None:
    """Celery router (``task_routes``): a step goes to its own queue and nowhere else.

    Through the anonymous exchange where the transport routes in the publisher (see
    :func:`~orchestrator.topology.routes_through_exchange`).
    """
    spec = _steps.get(name)
    if spec is None:
        return None
    route = {"queue": spec.queue, "routing_key": spec.queue}
    app = task.app if task is not None else current_app
    if not routes_through_exchange(app.conf.broker_url):
        route["exchange"] = ""
    return route


def _declare(
    kind: StepKind,
    name: str,
    accepts: frozenset[EventType],
    produces: EventType,
    *,
    retry: RetryPolicy | None,
    soft_time_limit: float | None,
    time_limit: float | None,
    idempotency_key: KeyFunction | None,
) -> Callable[[StepFunction], StepTask]:
    settings = get_settings()

    def decorate(function: StepFunction) -> StepTask:
        from orchestrator.celery_app import app
        from orchestrator.step_task import StepTask

        spec = StepSpec(
            kind=kind,
            name=name,
            function=function,
            accepts=accepts,
            produces=produces,
            retry=retry or RetryPolicy.from_settings(settings),
            soft_time_limit=soft_time_limit or settings.soft_time_limit,
            time_limit=time_limit or settings.time_limit,
            idempotency_key=idempotency_key,
        )
        if spec.time_limit <= spec.soft_time_limit:
            raise ValueError(f"{spec.task_name}: time_limit must exceed soft_time_limit")
        topology.add(QueueSpec(spec.queue, kind, settings.delivery_limit))
        _steps[spec.task_name] = spec
        task: StepTask = app.task(
            bind=True,
            base=StepTask,
            name=spec.task_name,
            soft_time_limit=spec.soft_time_limit,
            time_limit=spec.time_limit,
            step_spec=spec,
        )(_step_entrypoint)
        task.__doc__ = function.__doc__
        return task

    return decorate


def _step_entrypoint(task: StepTask, *args: Any, **kwargs: Any) -> Any:
    """The Celery task body shared by every step; the runtime lives in :mod:`step_task`.

    It takes any arguments so that a message with the wrong ones reaches the runtime, which
    dead-letters it, instead of failing in Celery's call with a ``TypeError``."""
    return task.run_step(args, kwargs)


def step(
    kind: StepKind,
    name: str,
    *,
    accepts: set[EventType] | frozenset[EventType],
    produces: EventType,
    retry: RetryPolicy | None = None,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
    idempotency_key: KeyFunction | None = None,
) -> Callable[[StepFunction], StepTask]:
    """Declare a step with explicit event types, for stages between the usual two
    (e.g. a planner turning ``resultado_coleta`` into ``iniciar_execucao``)."""
    return _declare(
        kind,
        name,
        frozenset(accepts),
        produces,
        retry=retry,
        soft_time_limit=soft_time_limit,
        time_limit=time_limit,
        idempotency_key=idempotency_key,
    )


def escavador(
    fonte: str,
    *,
    retry: RetryPolicy | None = None,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
    idempotency_key: KeyFunction | None = None,
) -> Callable[[StepFunction], StepTask]:
    """Declare a collector for source ``fonte``: ``iniciar_coleta`` in, ``resultado_coleta`` out."""
    return _declare(
        "escavador",
        fonte,
        frozenset({EventType.INICIAR_COLETA}),
        EventType.RESULTADO_COLETA,
        retry=retry,
        soft_time_limit=soft_time_limit,
        time_limit=time_limit,
        idempotency_key=idempotency_key,
    )


def executador(
    nome: str,
    *,
    retry: RetryPolicy | None = None,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
    idempotency_key: KeyFunction | None = None,
) -> Callable[[StepFunction], StepTask]:
    """Declare an executor ``nome``: a collection result (or several, from a chord) or
    ``iniciar_execucao`` in, ``resultado_execucao`` out."""
    return _declare(
        "executador",
        nome,
        frozenset({EventType.RESULTADO_COLETA, EventType.INICIAR_EXECUCAO}),
        EventType.RESULTADO_EXECUCAO,
        retry=retry,
        soft_time_limit=soft_time_limit,
        time_limit=time_limit,
        idempotency_key=idempotency_key,
    )
