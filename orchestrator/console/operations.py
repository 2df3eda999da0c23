"""What each console page asks of the deployment: blocking calls, run off the event loop.

Every function here is one page's worth of work through the public APIs (the DLQ functions
of :mod:`orchestrator.failures.dead_letter_queues`, :func:`orchestrator.trace.timeline`),
returning plain data for a template. They block on the broker and Redis, so the web handlers
run them on the console's worker thread, never on Tornado's loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from orchestrator.cli.common import check_replay_journal
from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.topology import original_queue

LIST_LIMIT = 500
"""Dead letters one listing page reads at most (the counts are always the DLQs' own)."""


@dataclass
class Overview:
    """The dead-letter page: totals per DLQ, counts per queue and reason, the entries."""

    counts: dict[str, int]
    groups: list[tuple[str, str, int]]
    letters: list[dict[str, Any]]
    listed: int
    queue: str | None = None
    reason: str | None = None
    limit: int = LIST_LIMIT


@dataclass
class Trace:
    """The trace page: the timeline (None before a search), and what sits in a DLQ now."""

    correlation_id: str
    timeline: Any = None
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    unavailable: str | None = None


def queue_of(name: str) -> str:
    """The step queue an operator's ``name`` means (``falha``, ``escavador_falha`` or its
    DLQ); :class:`~orchestrator.names.UnknownName` if none."""
    [dead_letter_queue] = dlq.dead_letter_queues(name)
    return original_queue(dead_letter_queue)


def overview(queue: str | None = None, reason: str | None = None,
             limit: int = LIST_LIMIT) -> Overview:
    """Counts of every DLQ, then the listed dead letters grouped by queue and reason."""
    step_queue = queue_of(queue) if queue else None
    counts = dlq.counts()
    letters = [letter.summary() for letter in dlq.list_dead_letters(step_queue, limit=limit)]
    groups = Counter((str(row["queue"]), str(row["reason"])) for row in letters)
    shown = [row for row in letters if reason is None or str(row["reason"]) == reason]
    return Overview(counts=counts,
                    groups=[(q, r, n) for (q, r), n in sorted(groups.items())],
                    letters=shown, listed=len(letters), queue=step_queue, reason=reason,
                    limit=limit)


def waiting(queue: str) -> int:
    """How many dead letters one queue's DLQ holds."""
    return sum(dlq.counts(queue_of(queue)).values())


def letter(letter_id: str, queue: str | None = None) -> dlq.DeadLetter:
    """One dead letter (:class:`~orchestrator.failures.dead_letter_queues.DeadLetterNotFound`
    if it is not there)."""
    return dlq.show(letter_id, queue=queue_of(queue) if queue else None)


def replay_one(letter_id: str, queue: str | None = None) -> list[dict[str, Any]]:
    """Replay one dead letter; its summary."""
    check_replay_journal()
    moved = dlq.replay(letter_id, queue=queue_of(queue) if queue else None)
    return [letter.summary() for letter in moved]


def replay_all(queue: str) -> list[dict[str, Any]]:
    """Replay what one queue's DLQ holds now; their summaries."""
    check_replay_journal()
    return [letter.summary() for letter in dlq.replay(queue=queue_of(queue), all_=True)]


def purge(queue: str) -> dict[str, int]:
    """Delete one queue's dead letters; how many per DLQ."""
    return dlq.purge(queue_of(queue))


def trace(correlation_id: str) -> Trace:
    """The request's timeline, and its dead letters that wait in a DLQ now."""
    try:
        from orchestrator.trace import timeline
    except ImportError:
        return Trace(correlation_id, unavailable="this installation has no trace recorder "
                                                 "(orchestrator.trace)")
    found = timeline(correlation_id)
    waiting = [letter.summary() for letter in dlq.list_dead_letters(
        correlation_id=correlation_id, limit=LIST_LIMIT)]
    return Trace(correlation_id, timeline=found, dead_letters=waiting)
