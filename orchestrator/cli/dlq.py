"""``orchestrator dlq``: list, show, replay and purge dead letters (each with ``--json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from orchestrator.cli.common import (
    EXIT_FAILED,
    check_replay_journal,
    console,
    one_line,
    print_error,
    print_json,
)
from orchestrator.failures import dead_letter_queues as dlq

ERROR_CHARS = 80
"""``dlq list`` shows this much of a dead letter's error (``dlq show`` has all of it)."""


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@click.group("dlq")
def dlq_group() -> None:
    """Inspect and operate the dead-letter queues (<queue>.dlq)."""


@dlq_group.command("list")
@click.argument("queue", required=False)
@click.option("--limit", default=200, show_default=True, help="At most this many entries.")
@click.option("--correlation-id", "correlation_id", default=None,
              help="Only the dead letters of this request.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def list_command(queue: str | None, limit: int, correlation_id: str | None,
                 as_json: bool) -> None:
    """Count per DLQ, then the entries: id, queue, reason, attempts, age, correlation id,
    error."""
    counts = dlq.counts(queue)
    letters = (dlq.list_dead_letters(queue, limit=limit) if correlation_id is None
               else dlq.list_dead_letters(queue, limit=limit, correlation_id=correlation_id))
    if as_json:
        print_json({"counts": counts, "entries": [letter.summary() for letter in letters]})
        return
    totals = Table(title="Dead-letter queues")
    totals.add_column("DLQ")
    totals.add_column("messages", justify="right")
    for name, count in counts.items():
        totals.add_row(name, str(count))
    console.print(totals)
    print_entries(console, [letter.summary() for letter in letters])


def print_entries(out: Console, entries: Sequence[dict[str, Any]]) -> None:
    """Dead letters (their ``summary()``) for a terminal of 100 columns: three lines each,
    the id first and whole on its own line (it is what ``show`` and ``replay`` take), with
    queue, reason, attempts and age; then the correlation id; then the error, shortened."""
    if not entries:
        return
    id_width = max(len(str(row["id"])) for row in entries)
    queue_width = max(len(str(row["queue"])) for row in entries)
    reason_width = max(len(str(row["reason"])) for row in entries)
    out.print(f"[bold]Entries[/bold] ({len(entries)}, oldest first per queue; "
              "`dlq show ID` for one in full)")
    for row in entries:
        attempts = "?" if row["attempts"] is None else row["attempts"]
        task = row["task"]
        also = f"  task {task}" if task and task != row["queue"] else ""
        error = one_line(row["last_error"]) or "(no error recorded)"
        if len(error) > ERROR_CHARS:
            error = error[:ERROR_CHARS - 1] + "…"
        # Text, not markup: ids, names and errors are shown as they are.
        out.print(Text.assemble(
            (f"{row['id']!s:<{id_width}}", "bold"),
            f"  {row['queue']!s:<{queue_width}}  {row['reason']!s:<{reason_width}}  "
            f"attempts {attempts}  {_age(row['age_seconds'])} ago"))
        out.print(Text(f"    correlation id {row['correlation_id'] or '?'}{also}"))
        out.print(Text(f"    {error}", style="dim"))


@dlq_group.command("show")
@click.argument("letter_id", metavar="ID_OR_CORRELATION_ID")
@click.option("--queue", default=None, help="Look only in this queue's DLQ.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def show_command(letter_id: str, queue: str | None, as_json: bool) -> None:
    """One dead letter in full (details, traceback, headers, body), or every dead letter of
    a request given its correlation id (--json: then a list)."""
    try:
        letters = dlq.find(letter_id, queue=queue)
    except dlq.DeadLetterNotFound as exc:
        print_error(exc)
        raise SystemExit(EXIT_FAILED) from None
    by_id = letters[0].id == letter_id
    if as_json:
        print_json(letters[0].full() if by_id else [letter.full() for letter in letters])
        return
    for number, letter in enumerate(letters):
        if not by_id:
            console.print(f"[bold]dead letter {number + 1} of {len(letters)} of request "
                          f"{escape(letter_id)}[/bold]")
        print_letter(letter.full())


def print_letter(full: dict[str, Any]) -> None:
    """A dead letter for people: what failed and why first, then the traceback, the body."""
    details = full.get("details") or {}
    fields = (("id", full.get("id")), ("queue", full.get("queue")), ("dlq", full.get("dlq")),
              ("reason", full.get("reason")), ("task", full.get("task")),
              ("correlation id", full.get("correlation_id")),
              ("attempts", full.get("attempts")),
              ("first failure", details.get("first_failure_at")),
              ("last failure", details.get("last_failure_at")),
              ("error", full.get("last_error")), ("content type", full.get("content_type")))
    for label, value in fields:
        console.print(f"[bold]{label + ':':<16}[/bold]{escape(str(value))}")
    if details.get("traceback"):
        console.print("[bold]traceback:[/bold]")
        console.print(escape(str(details["traceback"]).rstrip()))
    console.print("[bold]body:[/bold]")
    body = full.get("body")
    if isinstance(body, str):
        console.print(escape(body))
    else:
        console.print_json(data=body, default=str)


@dlq_group.command("replay")
@click.argument("letter_id", metavar="[ID_OR_CORRELATION_ID]", required=False)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter (of --queue).")
@click.option("--queue", default=None, help="Only this queue's DLQ.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def replay_command(letter_id: str | None, all_: bool, queue: str | None, as_json: bool) -> None:
    """Send dead letters back to their queue: retry count reset, correlation id kept. One
    by its id, every one of a request by its correlation id, or --all."""
    if bool(letter_id) == all_:
        raise click.UsageError("give a dead-letter ID or --all (an ID may be a request's "
                               "correlation id)")
    check_replay_journal()
    try:
        moved = (dlq.replay(all_=True, queue=queue) if letter_id is None
                 else dlq.replay_any(letter_id, queue=queue))
    except dlq.DeadLetterNotFound as exc:
        print_error(exc)
        raise SystemExit(EXIT_FAILED) from None
    if as_json:
        print_json({"replayed": [letter.summary() for letter in moved]})
        return
    for letter in moved:
        console.print(f"replayed {letter.id} -> {letter.queue} "
                      f"(correlation_id {letter.summary()['correlation_id']})")
    console.print(f"{len(moved)} message(s) replayed")


@dlq_group.command("purge")
@click.option("--queue", default=None, help="Only this queue's DLQ (default: every DLQ).")
@click.option("--yes", is_flag=True, help="Confirm: the dead letters are deleted for good.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def purge_command(queue: str | None, yes: bool, as_json: bool) -> None:
    """Delete dead letters for good (asks for --yes)."""
    if not yes:
        raise click.UsageError("purge deletes dead letters for good: add --yes to confirm")
    removed = dlq.purge(queue)
    if as_json:
        print_json({"purged": removed})
        return
    for name, count in removed.items():
        console.print(f"{name}: {count} purged")
