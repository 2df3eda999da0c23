"""A request's timeline: its events, and what they say about where the request is.

The shapes are a contract (``/work/briefs/trace_contract.md``: the console reads them):
:class:`TraceEvent` and :class:`Timeline` may gain fields, never lose or rename one.

Where a request is comes from the events alone, per task id (a retry keeps its task id):
the last event of a task says whether it is done (``succeeded``), dead (``dead_lettered``,
or ``failed`` with nothing after it) or still pending (anything else: published, received,
started, retried, replayed). A published task with nothing after it in its canvas (no chain
link, callback or chord body) is a *last step*. The pipeline has finished when nothing is
pending and either every last step succeeded, or something died (a chain stops at a dead
step; a chord's body is never sent after a dead header).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

EventKind = Literal["published", "received", "started", "retried", "succeeded", "failed",
                    "dead_lettered", "replayed"]
Outcome = Literal["unknown", "running", "succeeded", "failed", "dead_lettered"]


class TraceEvent(BaseModel):
    """One thing that happened to one message of a request."""

    kind: EventKind
    at: datetime
    """Timezone-aware UTC."""
    correlation_id: str
    task_id: str | None = None
    task: str | None = None
    """The Celery task name (a step's is its queue's)."""
    queue: str | None = None
    attempt: int | None = None
    """1 for the first run, +1 per retry."""
    worker: str | None = None
    """The Celery hostname of the worker (None for a publish by a client)."""
    reason: str | None = None
    delay_seconds: float | None = None
    runtime_seconds: float | None = None
    detail: str | None = None
    # Added to the contract:
    last_step: bool | None = None
    """``published``: True when nothing follows this task in its canvas."""
    by_broker: bool = False
    """``dead_lettered`` by the broker (delivery limit, a reject), which the runtime never
    sees: merged in from the dead-letter queues when the timeline is read."""
    dead_letter_id: str | None = None
    """``dead_lettered``: the id ``orchestrator dlq show``/``replay`` take, while the dead
    letter is still in its DLQ."""

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> TraceEvent:
        """An event as :mod:`orchestrator.trace.record` stores it (``at``: epoch seconds)."""
        fields = {name: value for name, value in data.items() if name in cls.model_fields}
        at = fields.get("at")
        if isinstance(at, int | float):
            fields["at"] = datetime.fromtimestamp(at, UTC)
        return cls(**fields)


class Timeline(BaseModel):
    """Every recorded event of one request, oldest first, and what they add up to."""

    correlation_id: str
    events: list[TraceEvent] = Field(default_factory=list)
    outcome: Outcome = "unknown"
    finished: bool = False
    """True once the pipeline's last step succeeded, or it failed/dead-lettered with nothing
    pending."""
    # Added to the contract:
    notes: list[str] = Field(default_factory=list)
    """What the timeline could not look at (the broker's DLQs unreachable, ...)."""


PENDING = "pending"
DONE = "done"
DEAD = "dead"
FAILED = "failed"
NO_TASK_ID = "(no task id)"


def task_states(events: Iterable[TraceEvent]) -> dict[str, str]:
    """Per task id, from its last event: done, dead, failed or pending."""
    states: dict[str, str] = {}
    for event in events:
        # A message without a task id (refused by the gate) counts as one task of its own.
        key = event.task_id or event.dead_letter_id or NO_TASK_ID
        if event.kind == "succeeded":
            states[key] = DONE
        elif event.kind == "dead_lettered":
            states[key] = DEAD
        elif event.kind == "failed":
            # A failure the runtime dead-lettered is followed by its dead_lettered event;
            # one it could not is rejected to the broker's DLQ (merged in when read).
            if states.get(key) != DEAD:
                states[key] = FAILED
        elif event.kind == "published" and states.get(key) in (DONE, DEAD):
            # A second publication of a finished task (the same step sent twice) is
            # answered from its stored result: not new work.
            continue
        else:
            states[key] = PENDING
    return states


def build(correlation_id: str, events: Iterable[TraceEvent],
          notes: Iterable[str] = ()) -> Timeline:
    """The timeline of ``events`` (any order): sorted, with its outcome."""
    ordered = sorted(events, key=lambda event: event.at)
    if not ordered:
        return Timeline(correlation_id=correlation_id, notes=list(notes))
    states = task_states(ordered)
    last_steps = {event.task_id for event in ordered
                  if event.kind == "published" and event.last_step}
    published = any(event.kind == "published" for event in ordered)
    values = set(states.values())
    outcome: Outcome
    finished = False
    if PENDING in values:
        outcome = "running"
    elif DEAD in values:
        outcome, finished = "dead_lettered", True
    elif FAILED in values:
        outcome, finished = "failed", True
    elif last_steps or not published:
        # Every task done, a last step among them (or, for messages no publisher recorded,
        # e.g. a plain envelope from a foreign client, whatever ran).
        outcome, finished = "succeeded", True
    else:
        outcome = "running"  # done so far, but the last step's publication is not in yet
    return Timeline(correlation_id=correlation_id, events=ordered, outcome=outcome,
                    finished=finished, notes=list(notes))
