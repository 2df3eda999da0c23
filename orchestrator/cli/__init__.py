"""The ``orchestrator`` command line: run pipelines, show topology, operate dead letters."""

from __future__ import annotations

import os
import sys

import click

from orchestrator.cli.asyncapi import asyncapi_command
from orchestrator.cli.common import EXIT_INTERRUPTED, err_console, fail_cleanly, print_error
from orchestrator.cli.console import console_command
from orchestrator.cli.dev import dev_command
from orchestrator.cli.dlq import dlq_group
from orchestrator.cli.metrics import metrics_command
from orchestrator.cli.run import run_command
from orchestrator.cli.topology import topology_command
from orchestrator.cli.trace import trace_command
from orchestrator.devmode.state import running_dev
from orchestrator.settings import get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(context: click.Context) -> None:
    """Orchestrator core: escavadores (collectors) and executadores (executors) on Celery."""
    if context.invoked_subcommand != "dev":
        adopt_running_dev()


def adopt_running_dev() -> None:
    """With no broker configured, use the ``orchestrator dev`` running on the data directory
    (``./data`` unless ORCHESTRATOR_DATA_DIR says otherwise), and say so in one line."""
    if os.environ.get("ORCHESTRATOR_BROKER_URL"):
        return
    state = running_dev(get_settings().data_dir.resolve())
    if state is None or not state.broker_url:
        return
    for name, value in state.environment().items():
        os.environ.setdefault(name, value)
    get_settings.cache_clear()
    err_console.print(f"using the orchestrator dev running on {state.data_dir} (pid "
                      f"{state.pid}): broker {state.broker_url}", markup=False, highlight=False)


cli.add_command(run_command)
cli.add_command(topology_command)
cli.add_command(dlq_group)
cli.add_command(dev_command)
cli.add_command(metrics_command)
cli.add_command(asyncapi_command)
cli.add_command(trace_command)
cli.add_command(console_command)


def main() -> None:
    """Console-script entry point: every failure is one line on stderr with its exit code
    (README, "Triggering pipelines"), click's usage errors included."""
    try:
        with fail_cleanly():
            code = cli.main(standalone_mode=False)
    except click.ClickException as exc:
        context = getattr(exc, "ctx", None)
        hint = f" (see {context.command_path} --help)" if context is not None else ""
        print_error(f"{exc.format_message()}{hint}")
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print_error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
