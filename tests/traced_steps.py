"""Steps of the tracing tests (``tests/test_otel.py``), on queues of their own.

The shared worker does not load this module, so it never takes these steps' messages: the
tests' own in-process worker runs them, with the in-memory span exporter in its process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.failures.errors import FinalError, RetryableError
from orchestrator.steps import StepContext, escavador, executador
from tasks.executadores.webhook import enviar_webhook


@escavador("rastro")
def rastro(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Collect nothing; say which attempt ran."""
    return {"entrada": payload, "attempt": ctx.attempt}


@escavador("rastro_b")
def rastro_b(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """A second escavador, for a chord."""
    return {"entrada": payload, "attempt": ctx.attempt}


@executador("rastro")
def rastro_executor(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Count the inputs (a chord body gets one per escavador)."""
    return {"inputs": len(ctx.inputs)}


@escavador("rastro_falha")
def rastro_falha(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """``flaky``: fail retryably on the first ``failures`` attempts. ``until_fixed``: fail
    for good until the file ``marker`` exists (then a replay succeeds)."""
    if payload.get("mode") == "flaky" and ctx.attempt <= int(payload.get("failures", 1)):
        raise RetryableError(f"flaky failure on attempt {ctx.attempt}")
    marker = payload.get("marker")
    if marker and not Path(marker).exists():
        raise FinalError(f"not fixed yet: {marker} is missing")
    return {"attempt": ctx.attempt}


rastro_webhook = executador("rastro_webhook")(enviar_webhook.step_spec.function)
"""``executador_webhook``'s own function (its HTTP call) on a queue of these tests."""
