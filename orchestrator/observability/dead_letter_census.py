"""Dead letters per reason, counted from the DLQs themselves, at a bounded cost.

The reason of a dead letter is in the message (this project's ``x_dead_letter`` header, or
RabbitMQ's ``x-death``), so counting reasons means reading the DLQ, with the same reads as
``orchestrator dlq list`` (no side effect on any broker). Two bounds keep a scrape cheap on a
huge DLQ:

- at most ``limit`` dead letters are read per DLQ, oldest first; the rest are counted under
  the reason :data:`UNREAD`, so the reasons of a DLQ always add up to its depth;
- a DLQ is read again only when its depth changed or its count is older than ``max_age``
  seconds; an empty DLQ is never read.

The same read gives the time of the oldest dead letter (its ``last_failure_at``, or the
broker's death time), which is how the DLQ's oldest age is known on RabbitMQ.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from orchestrator.failures.dead_letter_queues import DeadLetter, peek
from orchestrator.utc import parse_utc

UNREAD = "unread"
"""The reason shown for the dead letters past the read limit."""


@dataclass(frozen=True)
class Census:
    """One DLQ's dead letters by reason, as of ``taken_at``."""

    depth: int
    reasons: dict[str, int] = field(default_factory=dict)
    oldest_failed_at: float | None = None
    taken_at: float = 0.0


def failed_at(letter: DeadLetter) -> float | None:
    """Unix time a dead letter died (``last_failure_at``); None when it does not say."""
    when = letter.details.get("last_failure_at")
    moment = parse_utc(str(when)) if when else None
    return None if moment is None else moment.timestamp()


def take_census(connection: Any, dlq: str, depth: int, limit: int) -> Census:
    """Read up to ``limit`` dead letters of ``dlq`` and count them by reason."""
    letters = peek(connection, dlq, min(depth, limit)) if depth > 0 and limit > 0 else []
    reasons = Counter(str(letter.details.get("reason") or "unknown") for letter in letters)
    if depth > len(letters):
        reasons[UNREAD] += depth - len(letters)
    return Census(depth=depth, reasons=dict(reasons),
                  oldest_failed_at=failed_at(letters[0]) if letters else None,
                  taken_at=time.monotonic())


class DeadLetterCensus:
    """Keeps each DLQ's last census; reads a DLQ again only when it may have changed."""

    def __init__(self, limit: int = 1000, max_age: float = 60.0) -> None:
        self.limit = limit
        self.max_age = max_age
        self._last: dict[str, Census] = {}

    def count(self, connection: Any, dlq: str, depth: int) -> Census:
        last = self._last.get(dlq)
        if depth == 0:
            census = Census(depth=0, taken_at=time.monotonic())
        elif (last is not None and last.depth == depth
              and time.monotonic() - last.taken_at < self.max_age):
            return last
        else:
            census = take_census(connection, dlq, depth, self.limit)
        self._last[dlq] = census
        return census
