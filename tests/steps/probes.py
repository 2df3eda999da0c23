"""Test steps that report what they saw, or fail in a chosen way."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis
from celery import current_task

from orchestrator.correlation import correlation_id_from_request
from orchestrator.failures.errors import FinalError, RetryableError
from orchestrator.failures.retry import RetryPolicy
from orchestrator.steps import StepContext, escavador, executador


def observed(ctx: StepContext) -> dict[str, Any]:
    request = current_task.request
    ctx.logger.info("probe step %s attempt %d", ctx.step, ctx.attempt)
    return {
        "step": ctx.step,
        "task_id": ctx.task_id,
        "attempt": ctx.attempt,
        "header_correlation_id": correlation_id_from_request(request),
        "routing_key": (request.delivery_info or {}).get("routing_key"),
        "worker": request.hostname,
    }


@escavador("eco")
def eco(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Echo the payload plus what the step saw (correlation header, queue, attempt)."""
    return {"entrada": payload, **observed(ctx)}


@executador("eco")
def eco_executor(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Report how many inputs arrived and what each carried."""
    return {
        "inputs": [e.to_dict() for e in ctx.inputs],
        "options": ctx.options,
        **observed(ctx),
    }


@escavador("falha")
def falha(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Fail as ``payload["mode"]`` says: final, retryable N times, or always retryable."""
    mode = payload.get("mode")
    if mode == "final":
        raise FinalError("the payload asked for a final failure")
    if mode == "flaky" and ctx.attempt <= int(payload.get("failures", 1)):
        raise RetryableError(f"flaky failure on attempt {ctx.attempt}")
    if mode == "always":
        raise RetryableError(f"still failing on attempt {ctx.attempt}")
    marker = payload.get("fixed_marker")
    if marker and not Path(marker).exists():
        raise FinalError(f"not fixed yet: {marker} is missing")
    return observed(ctx)


@escavador("demorado", soft_time_limit=1, time_limit=5)
def demorado(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Outlive the soft time limit: the normal failure path (retry, then dead letter)."""
    time.sleep(float(payload.get("seconds", 3)))
    return observed(ctx)


def _record_attempt(payload: dict[str, Any], ctx: StepContext) -> None:
    """One JSON line per attempt in ``payload["attempts_file"]``: which attempt, and when."""
    with Path(payload["attempts_file"]).open("a") as handle:
        handle.write(json.dumps({"attempt": ctx.attempt, "at": time.time()}) + "\n")


@escavador("atrasos", retry=RetryPolicy(max_retries=2, backoff=3.0, jitter=False))
def atrasos(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Always fail, retryably. The retries wait 3 s then 6 s: on RabbitMQ both pass the
    delay queue of level 1 (2 s), which is what stranded a retry carrying ``x-death``."""
    _record_attempt(payload, ctx)
    raise RetryableError(f"still failing on attempt {ctx.attempt}")


@escavador("atrasos_jitter", retry=RetryPolicy(max_retries=3, backoff=2.0, jitter=True))
def atrasos_jitter(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Always fail, retryably, with the default kind of backoff (full jitter)."""
    _record_attempt(payload, ctx)
    raise RetryableError(f"still failing on attempt {ctx.attempt}")


_sabotaged_results: set[str] = set()


def _sabotage_result_store(task_id: str) -> None:
    """Make storing ``task_id``'s result fail the way a result backend outage does."""
    backend = current_task.backend
    if not getattr(backend, "_probe_sabotage", False):
        original = backend._store_result

        def store_result(task_id: str, *args: Any, **kwargs: Any) -> Any:
            if task_id in _sabotaged_results:
                raise redis.exceptions.ConnectionError("result backend unreachable (probe)")
            return original(task_id, *args, **kwargs)

        backend._store_result = store_result
        backend._probe_sabotage = True
    _sabotaged_results.add(task_id)


@escavador("resultado_perdido")
def resultado_perdido(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Succeed, but storing the result fails: a failure after the step, outside its runtime."""
    _sabotage_result_store(ctx.task_id)
    return observed(ctx)


@escavador("dlq_indisponivel")
def dlq_indisponivel(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Fail for good, and the runtime's own dead-letter publish fails as well."""
    task = current_task._get_current_object()

    def publish_fails(headers: dict[str, Any]) -> None:
        raise ConnectionError("dead-letter publish refused (probe)")

    task._publish_dead_letter = publish_fails
    raise FinalError("final failure whose dead letter cannot be published")
