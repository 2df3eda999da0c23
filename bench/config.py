"""Names, URLs and environments shared by the bench process and the workers it starts.

Both sides get the same reliability settings from here (time limits, prefetch, result
expiry), so the only difference left between them is the orchestrator's layer.
Nothing in this module imports the orchestrator: the plain worker imports it too.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The project checkout: the workers run from it so ``bench`` is importable there."""

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
"""Results, idempotency keys and the exactly-once ledger of both sides (tests use db 15)."""

STEP_MODULES = '["bench.steps"]'
"""The orchestrator side loads only the bench steps, so its topology is the bench's queues."""

ENV_BROKER = "BENCH_BROKER_URL"
ENV_REDIS = "BENCH_REDIS_URL"
ENV_PLAIN_EVENTS = "BENCH_PLAIN_EVENTS"
ENV_PLAIN_QUORUM = "BENCH_PLAIN_QUORUM"

SCENARIOS = ("throughput", "threaded", "publish", "latency", "fanout", "backlog", "failover",
             "io")
"""Every scenario, in the order a run takes them."""
WITHOUT_FAILOVER = frozenset(SCENARIOS) - {"failover"}
"""What every side but the orchestrator's takes part in: failover is the transports' behaviour,
and the orchestrator's worker is enough to show it."""

SOFT_TIME_LIMIT = 300
TIME_LIMIT = 360
ENV_PREFETCH = "BENCH_PREFETCH_MULTIPLIER"
"""Set by ``--prefetch`` for every process of the run (both Celery sides alike)."""


def prefetch_multiplier() -> int:
    """Both Celery sides' ``worker_prefetch_multiplier``: 1 (the shipped setting) unless
    ``--prefetch`` asked for the short-steps setting."""
    return int(os.environ.get(ENV_PREFETCH, "1"))


RESULT_TTL = 3600
"""Results and idempotency records live one hour: a backlog run must not fill Redis for a week."""


def base_env() -> dict[str, str]:
    """The bench process's environment with the checkout on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def orchestrator_env(broker_url: str, redis_url: str) -> dict[str, str]:
    """``ORCHESTRATOR_*`` values of the orchestrator side (publisher and worker alike).

    Every knob that also exists on the plain side is pinned, so a user's own
    ``ORCHESTRATOR_PREFETCH_MULTIPLIER`` (say) cannot tilt the comparison.
    """
    return {
        "ORCHESTRATOR_BROKER_URL": broker_url,
        "ORCHESTRATOR_RESULT_BACKEND": redis_url,
        "ORCHESTRATOR_IDEMPOTENCY_URL": redis_url,
        "ORCHESTRATOR_STEP_MODULES": STEP_MODULES,
        "ORCHESTRATOR_PREFETCH_MULTIPLIER": str(prefetch_multiplier()),
        "ORCHESTRATOR_SOFT_TIME_LIMIT": str(SOFT_TIME_LIMIT),
        "ORCHESTRATOR_TIME_LIMIT": str(TIME_LIMIT),
        "ORCHESTRATOR_RESULT_EXPIRES": str(RESULT_TTL),
        "ORCHESTRATOR_IDEMPOTENCY_TTL": str(RESULT_TTL),
        ENV_REDIS: redis_url,
    }


def plain_env(broker_url: str, redis_url: str, task_events: bool,
              quorum: bool = False) -> dict[str, str]:
    """``BENCH_*`` values read by :mod:`bench.plain_app` (publisher and worker alike)."""
    return {
        ENV_BROKER: broker_url,
        ENV_REDIS: redis_url,
        ENV_PLAIN_EVENTS: "1" if task_events else "0",
        ENV_PLAIN_QUORUM: "1" if quorum else "0",
    }
