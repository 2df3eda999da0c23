"""What a step is, for the runtime and for step functions: :class:`StepSpec`, :class:`StepContext`.

A leaf module: declaring a step (:mod:`orchestrator.steps`) and running one
(:mod:`orchestrator.step_task`) both need these types, and neither needs the other's module or
a Celery app to describe a step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.envelope import Envelope, EventType
from orchestrator.failures.retry import RetryPolicy
from orchestrator.settings import Settings
from orchestrator.topology import StepKind, queue_name

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
