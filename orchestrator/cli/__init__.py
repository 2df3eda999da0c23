"""The ``orchestrator`` command line: run pipelines, show topology, operate dead letters."""

from __future__ import annotations

import sys

import click

from orchestrator.cli.asyncapi import asyncapi_command
from orchestrator.cli.common import fail_cleanly
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
    """Console-script entry point: broker/config errors become one line, not a traceback."""
    with fail_cleanly():
        cli.main(standalone_mode=True)
    sys.exit(0)
