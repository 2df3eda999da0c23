"""Steps for the crash tests: a slow one with a side effect, and one that kills its process."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from orchestrator.steps import StepContext, escavador
from tests.steps.probes import observed


def _append_once(path: str, key: str) -> None:
    """The side effect, made idempotent with the step's key (as real executadores do)."""
    existing = Path(path).read_text().splitlines() if Path(path).exists() else []
    if key not in existing:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _wait(seconds: float, release_marker: str | None) -> None:
    if not release_marker:
        time.sleep(seconds)
        return
    deadline = time.monotonic() + seconds
    while not Path(release_marker).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@escavador("lento")
def lento(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Sleep, do a side effect (a line per idempotency key), sleep again, then finish.

    With ``release_marker`` the first sleep ends as soon as that file exists (``seconds`` is
    then its upper bound): a test that needs steps running at once releases them when it has
    seen them all, instead of sleeping for a margin."""
    started = payload.get("started_marker")
    if started:
        Path(started).write_text(str(os.getpid()))
    _wait(float(payload.get("seconds", 1)), payload.get("release_marker"))
    effects = payload.get("effects_file")
    if effects:
        _append_once(effects, ctx.idempotency_key)
    time.sleep(float(payload.get("after_seconds", 0)))
    return observed(ctx)


@escavador("crash")
def crash(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Kill the worker process that runs it: a poison message."""
    if payload.get("crash", True):
        os._exit(13)
    return observed(ctx)


@escavador("teimoso", soft_time_limit=1, time_limit=2)
def teimoso(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Ignore the soft time limit, so only the hard limit (a killed process) stops it."""
    deadline = time.monotonic() + float(payload.get("seconds", 10))
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            ctx.logger.info("ignoring the soft time limit")
    return observed(ctx)
