"""The orchestrator side's bench steps: do-nothing steps on the real step runtime.

Loaded by ``ORCHESTRATOR_STEP_MODULES='["bench.steps"]'`` in the bench process and in its
orchestrator worker, never shipped as a feature. They cover the four event types so a chain
``iniciar_coleta -> resultado_coleta -> iniciar_execucao -> resultado_execucao`` runs through
validation, correlation header, idempotency and the dead-letter topology like a real one.
Each step does nothing but the exactly-once accounting, and that only when the payload asks.
"""

from __future__ import annotations

from typing import Any

from bench import accounting
from orchestrator.envelope import EventType
from orchestrator.steps import StepContext, escavador, executador, step


@escavador("bench")
def coletar(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """iniciar_coleta -> resultado_coleta: the throughput and backlog message, and chain step 1
    (and the failover scenario's message, held on its first delivery)."""
    accounting.hold_first_delivery(payload)
    return accounting.record({k: v for k, v in payload.items() if k != accounting.HOLD})


@step("executador", "bench_planejar", accepts={EventType.RESULTADO_COLETA},
      produces=EventType.INICIAR_EXECUCAO)
def planejar(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """resultado_coleta -> iniciar_execucao: chain step 2 (a planner)."""
    return accounting.record(payload)


@executador("bench")
def executar(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """resultado_coleta(s) or iniciar_execucao -> resultado_execucao: chain step 3, chord body.

    Returns how many inputs arrived so the fan-out can check that all ten did.
    """
    accounting.record(payload)
    return {"inputs": len(ctx.inputs)}


@step("executador", "bench_registrar", accepts={EventType.RESULTADO_EXECUCAO},
      produces=EventType.RESULTADO_EXECUCAO)
def registrar(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """resultado_execucao -> resultado_execucao: chain step 4 (a recorder)."""
    return accounting.record(payload)
