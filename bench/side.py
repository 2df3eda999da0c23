"""What a scenario needs from one side of the comparison (plain Celery or the orchestrator).

Both sides expose the same operations, so every scenario is written once and runs the two
sides with identical code around them: what the timers see differs only by the side's call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from celery import signals

from bench.workers import WorkerSpec

FANOUT_WIDTH = 10
"""Escavadores (or plain tasks) in the fan-out's chord header."""


class CanvasFailed(RuntimeError):
    """A chain or chord finished with an unexpected result."""


class Side(Protocol):
    """One side of the comparison, pointed at one broker at a time."""

    name: str

    def use_broker(self, url: str) -> None:
        """Point the publisher (and later workers) at ``url``; closes older connections."""

    def worker_spec(self) -> WorkerSpec:
        """How to start this side's worker for the current broker."""

    def reset_queues(self) -> None:
        """Declare this side's queues and empty them (and its dead-letter queues)."""

    def publishing(self) -> AbstractContextManager[None]:
        """What surrounds this side's sends (publishes, chains, chords) in a scenario."""

    def publish(self, payload: dict[str, Any]) -> None:
        """Send one single-step message carrying ``payload`` (throughput, backlog)."""

    def run_chain(self, timeout: float) -> None:
        """Send the 4-step chain and wait for its last step; raise if it went wrong."""

    def run_fanout(self, timeout: float) -> None:
        """Send the chord of :data:`FANOUT_WIDTH` into one; wait; raise if it went wrong."""

    def dead_lettered(self) -> int | None:
        """Messages now in this side's dead-letter queues (None: the side has none)."""

    def close(self) -> None:
        """Release broker connections."""


PUBLISH_SIGNALS = (signals.before_task_publish, signals.after_task_publish)


@contextmanager
def without_publish_hooks() -> Iterator[None]:
    """Detach every receiver of Celery's publish signals for the duration.

    Celery's signals are process-wide: the orchestrator's correlation hook, connected when
    the bench process imports the orchestrator, would also run for plain Celery's publishes
    here (measured: ~20 µs, 1.3 % of a publish), charging part of the orchestrator's cost to
    the baseline. A plain Celery deployment has no such hook.
    """
    saved = [list(signal.receivers) for signal in PUBLISH_SIGNALS]
    for signal in PUBLISH_SIGNALS:
        signal.receivers[:] = []
        signal.sender_receivers_cache.clear()
    try:
        yield
    finally:
        for signal, receivers in zip(PUBLISH_SIGNALS, saved, strict=True):
            signal.receivers[:] = receivers
            signal.sender_receivers_cache.clear()
