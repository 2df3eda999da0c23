"""``orchestrator trace CORRELATION_ID``: where one request is, step by step and attempt by
attempt (``--json``: the :class:`~orchestrator.trace.Timeline`; ``--follow``: until it ends)."""

from __future__ import annotations

import json
import sys
import time
import uuid

import click
import redis
from rich.table import Table
from rich.text import Text

from orchestrator.cli.common import (
    BACKEND_VARIABLE,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    ServiceError,
    check_redis,
    console,
    err_console,
    print_error,
    print_json,
    redis_failure,
)
from orchestrator.settings import get_settings
from orchestrator.trace import Timeline, TraceEvent, timeline
from orchestrator.trace.record import redis_url

SETTLE_SECONDS = 0.5
"""``--follow``: how long after the end it looks once more for late events."""
COLUMNS = ("time (UTC)", "kind", "step", "attempt", "worker", "what")


def correlation_id_argument(_: click.Context, __: click.Parameter, value: str) -> str:
    """A correlation id is a UUID (the envelope refuses anything else): its canonical form."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a correlation id (a UUID)") from None


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def what(event: TraceEvent) -> str:
    """The last column: reason, delay, runtime or detail, as the kind has them."""
    parts: list[str] = []
    if event.kind == "published" and event.last_step:
        parts.append("last step")
    if event.reason:
        parts.append(event.reason)
    if event.delay_seconds is not None:
        parts.append(f"retry in {event.delay_seconds:.1f} s")
    if event.runtime_seconds is not None:
        parts.append(f"ran {_seconds(event.runtime_seconds)}")
    if event.detail and event.detail != event.reason:
        parts.append(event.detail)
    if event.by_broker:
        parts.append("dead-lettered by the broker")
    if event.dead_letter_id and event.kind == "dead_lettered":
        parts.append(f"dlq id {event.dead_letter_id}")
    return "; ".join(parts)


def row(event: TraceEvent) -> tuple[str, ...]:
    return (event.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], event.kind,
            event.queue or event.task or "?",
            "" if event.attempt is None else str(event.attempt), event.worker or "",
            what(event))


def summary_line(found: Timeline) -> str:
    state = "finished" if found.finished else "not finished"
    return (f"request {found.correlation_id}: {found.outcome} ({state}), "
            f"{len(found.events)} events")


def print_timeline(found: Timeline) -> None:
    table = Table(title=summary_line(found), title_justify="left")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for event in found.events:
        table.add_row(*(Text(cell) for cell in row(event)))
    console.print(table)


def print_notes(found: Timeline) -> None:
    for note in found.notes:
        err_console.print(Text(f"warning: {note}", style="yellow"))


def _event_key(event: TraceEvent) -> tuple[object, ...]:
    return (event.kind, event.task_id, event.at, event.attempt, event.dead_letter_id)


def _read(correlation_id: str) -> Timeline:
    url = redis_url(get_settings())
    try:
        return timeline(correlation_id)
    except (redis.RedisError, OSError) as exc:
        raise redis_failure("the trace record", url, exc, _variable()) from None


def _variable() -> str:
    return ("ORCHESTRATOR_IDEMPOTENCY_URL" if get_settings().idempotency_url
            else BACKEND_VARIABLE)


def unknown_message(correlation_id: str) -> str:
    retention = get_settings().trace_retention
    return (f"no trace of request {correlation_id}: an unknown correlation id, or one whose "
            f"last event is older than ORCHESTRATOR_TRACE_RETENTION ({retention} s)")


def follow(correlation_id: str, as_json: bool, timeout: float, interval: float) -> None:
    """Print each new event as it is recorded, until the pipeline ends (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    shown: set[tuple[object, ...]] = set()
    noted: set[str] = set()
    if not as_json:
        console.print(Text("  ".join(COLUMNS), style="bold"))
    settling = False
    while True:
        found = _read(correlation_id)
        for note in set(found.notes) - noted:
            err_console.print(Text(f"warning: {note}", style="yellow"))
            noted.add(note)
        for event in found.events:
            key = _event_key(event)
            if key in shown:
                continue
            shown.add(key)
            if as_json:
                sys.stdout.write(event.model_dump_json() + "\n")
            else:
                console.print(Text("  ".join(cell for cell in row(event) if cell)))
            sys.stdout.flush()
        if found.finished and not settling:
            # A broker's dead letter can be read before the last events of the workers
            # are written (each writes its batch within 50 ms): one more look for them.
            settling = True
            time.sleep(SETTLE_SECONDS)
            continue
        if found.finished:
            if as_json:
                sys.stdout.write(json.dumps({"correlation_id": correlation_id,
                                             "outcome": found.outcome, "finished": True}) + "\n")
            else:
                console.print(Text(summary_line(found), style="bold"))
            return
        if time.monotonic() >= deadline:
            said = "" if found.events else f" ({unknown_message(correlation_id)})"
            raise ServiceError(f"request {correlation_id} did not finish within {timeout:g} s"
                               f"{said}; it may still be running", EXIT_TIMEOUT)
        time.sleep(interval)


@click.command("trace")
@click.argument("correlation_id", callback=correlation_id_argument)
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON only: the timeline (with --follow, one event per line).")
@click.option("--follow", "follow_", is_flag=True,
              help="Print new events as they come, until the pipeline ends.")
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(min=0),
              help="--follow: give up after this many seconds (exit 4).")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.05),
              help="--follow: seconds between two looks.")
def trace_command(correlation_id: str, as_json: bool, follow_: bool, timeout: float,
                  interval: float) -> None:
    """One request's timeline across every step and attempt: published, received, started,
    retried, succeeded, failed, dead-lettered, replayed, with worker, queue and times."""
    check_redis("the trace record", redis_url(get_settings()), _variable(),
                note="nothing to show")
    if follow_:
        follow(correlation_id, as_json, timeout, interval)
        return
    found = _read(correlation_id)
    print_notes(found)
    if not found.events:
        print_error(unknown_message(correlation_id))
        raise SystemExit(EXIT_FAILED)
    if as_json:
        print_json(found.model_dump(mode="json"))
        return
    print_timeline(found)
