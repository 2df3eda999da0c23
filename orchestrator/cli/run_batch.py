"""``orchestrator run --from FILE``: start one pipeline per JSON line, confirmed in bulk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from orchestrator.cli.common import EXIT_CONFIG, EXIT_FAILED, console, print_error, print_json
from orchestrator.pipeline import PipelineError
from orchestrator.pipeline_batch import PipelineRequest, run_pipelines


def read_requests(source: str) -> tuple[list[int], list[PipelineRequest]]:
    """The requests of ``source`` (a path, or ``-`` for stdin) and their line numbers; blank
    lines are skipped. A line that is not a request is a usage error naming the line."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {source!r}: {exc}",
                                 param_hint="--from") from None
    numbers: list[int] = []
    requests: list[PipelineRequest] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            requests.append(PipelineRequest.from_json(json.loads(line)))
        except (ValueError, PipelineError) as exc:
            raise click.BadParameter(f"line {number}: {exc}", param_hint="--from") from None
        numbers.append(number)
    return numbers, requests


def run_from(numbers: list[int], requests: list[PipelineRequest], as_json: bool) -> None:
    """Start every pipeline of ``requests`` (read from the lines ``numbers``); exit 1 when
    any was not confirmed by the broker."""
    try:
        outcome = run_pipelines(requests)
    except PipelineError as exc:  # "pipeline N: ..." counts requests; say the file's line
        index, _, reason = str(exc).removeprefix("pipeline ").partition(": ")
        line = numbers[int(index) - 1] if index.isdigit() else "?"
        print_error(f"line {line}: {reason or exc}")
        raise SystemExit(EXIT_CONFIG) from None
    report = [{"line": numbers[item.index], "correlation_id": item.correlation_id,
               "steps": list(item.steps), "confirmed": item.confirmed, "error": item.error,
               "result_id": item.handle.result.id if item.handle else None}
              for item in outcome.items]
    if as_json:
        print_json(report)
    else:
        for entry in report:
            if entry["confirmed"]:
                console.print(f"line {entry['line']}: {entry['correlation_id']}")
    if outcome.failed:
        first = outcome.failed[0]
        print_error(f"{len(outcome.failed)} of {len(requests)} pipelines were not confirmed "
                    f"(first: line {numbers[first.index]}, {first.error}); send those lines "
                    "again")
        raise SystemExit(EXIT_FAILED)
