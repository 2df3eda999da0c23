"""Test steps that report what they saw, or fail in a chosen way."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from celery import current_task

from orchestrator.correlation import correlation_id_from_request
from orchestrator.failures.errors import FinalError, RetryableError
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
