"""Declaring steps: one decorated function is one escavador or executador.

    @escavador("youtube")
    def coletar(payload: dict, ctx: StepContext) -> dict: ...

registers the Celery task ``escavador_youtube``, routes it to the queue of the same name only,
adds that queue (with its dead-letter exchange and queue) to the topology, and wraps the
function so it takes an envelope and returns one: the function itself sees plain payloads.

Like Celery's ``shared_task``, declaring a step needs no app: the task is created on every app
when it is finalized (``orchestrator.celery_app`` builds the configured one and calls
:func:`load_step_modules`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, cast

from celery import current_app, shared_task

from orchestrator.envelope import EventType
from orchestrator.failures.retry import RetryPolicy
from orchestrator.settings import get_settings
from orchestrator.step_spec import KeyFunction, StepContext, StepFunction, StepSpec
from orchestrator.step_task import StepTask
from orchestrator.topology import QueueSpec, StepKind, routes_through_exchange, topology

__all__ = ["KeyFunction", "StepContext", "StepFunction", "StepSpec", "escavador", "executador",
           "load_step_modules", "registered_steps", "route_step", "step"]

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
        task = shared_task(
            bind=True,
            base=StepTask,
            name=spec.task_name,
            soft_time_limit=spec.soft_time_limit,
            time_limit=spec.time_limit,
            step_spec=spec,
        )(_entrypoint(function))
        return cast(StepTask, task)

    return decorate


def _entrypoint(function: StepFunction) -> Callable[..., Any]:
    """The Celery task body of one step; the runtime lives in :mod:`step_task`.

    It takes any arguments so that a message with the wrong ones reaches the runtime, which
    dead-letters it, instead of failing in Celery's call with a ``TypeError``. Named after the
    step function, whose docstring Celery and Flower show for the task.
    """

    def run(task: StepTask, *args: Any, **kwargs: Any) -> Any:
        return task.run_step(args, kwargs)

    run.__name__ = function.__name__
    run.__qualname__ = function.__qualname__
    run.__module__ = function.__module__
    run.__doc__ = function.__doc__
    return run


def load_step_modules(packages: list[str]) -> list[str]:
    """Import every module under each package (or a single module); returns their names.

    Importing a step module declares its steps; importing it again does nothing.
    """
    imported: list[str] = []
    for name in packages:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise ImportError(
                f"ORCHESTRATOR_STEP_MODULES names {name!r}, which cannot be imported ({exc}); "
                "is it installed or on PYTHONPATH?"
            ) from exc
        imported.append(name)
        search_path = getattr(module, "__path__", None)
        if search_path is None:
            continue
        for info in pkgutil.walk_packages(search_path, prefix=name + "."):
            importlib.import_module(info.name)
            imported.append(info.name)
    return imported


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
