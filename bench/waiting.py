"""Waiting with timeouts: a benchmark must end, even when a side loses messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class BenchTimeout(RuntimeError):
    """A wait ran out of time."""


def wait_until(condition: Callable[[], T], timeout: float, interval: float, what: str) -> T:
    """Poll ``condition`` until it is truthy; :class:`BenchTimeout` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class CountOutcome:
    """Where a count stopped: ``complete`` when it reached its target."""

    count: int
    complete: bool
    finished_at: float
    """``time.monotonic()`` when the count was last read."""


def wait_for_count(read: Callable[[], int], target: int, *, stall_timeout: float,
                   overall_timeout: float, interval: float = 0.02) -> CountOutcome:
    """Poll ``read`` until it returns ``target``; give up if it stops moving.

    Returns instead of raising, so a run that lost messages still reports how many.
    A stall (no progress for ``stall_timeout`` s) ends the wait early: lost messages never
    arrive, and waiting for the overall timeout would only waste the machine's time.
    """
    start = time.monotonic()
    last_count, last_progress = -1, start
    while True:
        count = read()
        now = time.monotonic()
        if count >= target:
            return CountOutcome(count, True, now)
        if count != last_count:
            last_count, last_progress = count, now
        if now - last_progress > stall_timeout or now - start > overall_timeout:
            return CountOutcome(count, False, now)
        time.sleep(interval)
