"""The ``orchestrator`` command line: run pipelines, show topology, operate dead letters."""

from __future__ import annotations

import sys

import click

from orchestrator.cli.asyncapi import asyncapi_command
from orchestrator.cli.common import EXIT_INTERRUPTED, err_console, fail_cleanly
from orchestrator.cli.dev import dev_command
from orchestrator.cli.dlq import dlq_group
from orchestrator.cli.metrics import metrics_command
from orchestrator.cli.run import run_command
from orchestrator.cli.topology import topology_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Orchestrator core: escavadores (collectors) and executadores (executors) on Celery."""


cli.add_command(run_command)
cli.add_command(topology_command)
cli.add_command(dlq_group)
cli.add_command(dev_command)
cli.add_command(metrics_command)
cli.add_command(asyncapi_command)


def main() -> None:
    """Console-script entry point: every failure is one line on stderr with its exit code
    (README, "Triggering pipelines"), click's usage errors included."""
    try:
        with fail_cleanly():
            code = cli.main(standalone_mode=False)
    except click.ClickException as exc:
        context = getattr(exc, "ctx", None)
        hint = f" (see {context.command_path} --help)" if context is not None else ""
        err_console.print(f"[red]error:[/red] {exc.format_message()}{hint}")
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("[red]error:[/red] interrupted")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
