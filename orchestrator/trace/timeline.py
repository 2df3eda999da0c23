"""Reading a request's timeline: the trace record, plus what only the broker knows.

The record (:mod:`orchestrator.trace.record`) has every event the orchestrator's own code
saw. A message the *broker* dead-lettered (past the delivery limit after crashes, or rejected
by a failure outside the step runtime) never passed through that code on its way to the DLQ:
its ``dead_lettered`` event is made here, when the timeline is read, from the request's dead
letters (:func:`~orchestrator.failures.dead_letter_queues.list_dead_letters` by correlation
id), marked ``by_broker``. So is a dead letter of the runtime's whose recorded event was lost
(a process killed within the flush interval).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import ValidationError

from orchestrator.headers import DEAD_LETTER
from orchestrator.trace.model import Timeline, TraceEvent, build
from orchestrator.trace.record import read_events
from orchestrator.utc import parse_utc

if TYPE_CHECKING:
    from celery import Celery

    from orchestrator.failures.dead_letter_queues import DeadLetter

logger = logging.getLogger("orchestrator.trace")


def recorded_events(correlation_id: str) -> list[TraceEvent]:
    """The record's events of one request (an entry that does not parse is skipped)."""
    events = []
    for data in read_events(correlation_id):
        try:
            events.append(TraceEvent.from_record(data))
        except (ValidationError, TypeError, ValueError, OverflowError):
            logger.warning("skipped a trace entry of %s that does not parse", correlation_id)
    return events


LOST_AFTER = 10.0
"""Seconds after which a dead letter of the runtime's own that the record lacks counts as
one whose event was lost: before, its event may just not be flushed yet (a worker writes its
batch within 50 ms, but the dead letter is in the DLQ before that)."""


def dead_letter_events(correlation_id: str, recorded: Iterable[TraceEvent],
                       letters: Iterable[DeadLetter],
                       now: datetime | None = None) -> list[TraceEvent]:
    """A ``dead_lettered`` event for each dead letter the record does not have: every one
    the broker made, and the runtime's own whose event was lost."""
    recorded = list(recorded)
    known = {event.task_id for event in recorded if event.kind == "dead_lettered"}
    moment_now = now or datetime.now(UTC)
    found = []
    for letter in letters:
        own = DEAD_LETTER in letter.headers
        task_id = letter.details.get("task_id") or letter.headers.get("id")
        failed_at = parse_utc(letter.details.get("last_failure_at"))
        if own and ((task_id and task_id in known) or failed_at is None
                    or (moment_now - failed_at).total_seconds() < LOST_AFTER):
            continue
        # The letter in a DLQ is its task's latest death, after all that is recorded of it
        # (RabbitMQ's x-death time has whole seconds only).
        earlier = [event.at for event in recorded if event.task_id == task_id]
        at = max([*earlier, failed_at or moment_now])
        if earlier and at == max(earlier):
            at += timedelta(microseconds=1)
        summary = letter.summary()
        found.append(TraceEvent(
            kind="dead_lettered", at=at, correlation_id=correlation_id,
            task_id=str(task_id) if task_id else None, task=summary["task"],
            queue=letter.queue, attempt=letter.details.get("attempts"),
            reason=summary["reason"], detail=summary["last_error"] or None,
            by_broker=not own, dead_letter_id=letter.id))
    return found


def _queues_to_search(events: Iterable[TraceEvent]) -> list[str | None]:
    """The DLQs that can hold this request's dead letters: those of the queues its recorded
    messages went to (every step's when nothing recorded names one). A request that
    succeeded has none to look for, so ``--follow`` and the console's reloads read no DLQ
    once it finished, and a running one reads one or two, not every step's."""
    queues = sorted({event.queue for event in events if event.queue})
    return list(queues) if queues else [None]


def timeline(correlation_id: str, *, app: Celery | None = None,
             dead_letters: bool = True) -> Timeline:
    """Request ``correlation_id``'s timeline: every recorded event, the broker's dead letters
    merged in (``dead_letters=False``: the record alone, no broker connection), sorted, with
    the outcome. An unknown id gives an empty timeline (outcome ``unknown``), never an
    error; an unreachable Redis raises redis-py's error; unreadable DLQs are a note."""
    events = recorded_events(correlation_id)
    notes: list[str] = []
    if dead_letters and build(correlation_id, events).outcome != "succeeded":
        from orchestrator.failures import dead_letter_queues as dlq  # reads the broker

        try:
            letters = [letter for queue in _queues_to_search(events)
                       for letter in dlq.list_dead_letters(queue, app=app,
                                                           correlation_id=correlation_id)]
        except Exception as exc:
            notes.append(f"the dead-letter queues could not be read ({type(exc).__name__}: "
                         f"{exc}): dead letters made by the broker are not shown")
        else:
            events.extend(dead_letter_events(correlation_id, events, letters))
    return build(correlation_id, events, notes)
