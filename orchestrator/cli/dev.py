"""``orchestrator dev``: broker, workers, Flower and the console on this machine; ``--demo`` runs
a pipeline."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import click
from rich.table import Table

from orchestrator.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    console,
    print_error,
    print_json,
)
from orchestrator.devmode.session import DevSession
from orchestrator.devmode.state import DevAlreadyRunning, running_dev
from orchestrator.settings import get_settings


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop what was started, whatever was going on."""


@contextlib.contextmanager
def _quiet_if_the_pipe_closed() -> Iterator[None]:
    """``orchestrator dev | tee log`` and Ctrl-C: the reader may be gone before the last
    line; that must not skip the cleanup."""
    try:
        yield
    except SystemExit:
        pass  # Rich's own answer to a broken pipe: stdout now goes to /dev/null
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (Python flushes it at exit)


@click.command("dev")
@click.option("--demo", is_flag=True, help="Serve the bundled sample feed and run a pipeline.")
@click.option("--once", is_flag=True, help="Stop everything after start-up (and the demo).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where the embedded broker, logs and files live [ORCHESTRATOR_DATA_DIR].")
@click.option("--flower/--no-flower", default=True, show_default=True, help="Start Flower.")
@click.option("--flower-port", type=int, default=None, help="Flower's port (default: a free one).")
@click.option("--console/--no-console", "with_console", default=True, show_default=True,
              help="Start the operator console (orchestrator console).")
@click.option("--console-port", type=int, default=None,
              help="The console's port (default: a free one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only (with --once).")
@click.option("--env", "print_env", is_flag=True,
              help="Print `export ...` lines pointing a shell at the running dev session of "
                   "the data directory, and exit.")
def dev_command(demo: bool, once: bool, data_dir: Path | None, flower: bool,
                flower_port: int | None, with_console: bool, console_port: int | None,
                as_json: bool, print_env: bool) -> None:
    """Run the orchestrator locally: embedded Valkey broker unless ORCHESTRATOR_BROKER_URL
    is set, workers for every queue (escavadores on threads), Flower and the operator console.
    Ctrl-C stops all of it."""
    data_dir = (data_dir or get_settings().data_dir).resolve()
    if print_env:
        _print_env(data_dir)
        return
    session = DevSession(data_dir=data_dir, flower=flower, flower_port=flower_port,
                         console=with_console, console_port=console_port, demo=demo)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            raise Interrupted()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    report: dict[str, object] = {}
    try:
        try:
            _say(as_json, "[bold]orchestrator dev[/bold]: starting...")
            session.start()
            report["services"] = dict(session.facts)
            if not as_json:
                with _quiet_if_the_pipe_closed():
                    _print_facts(session.facts)
            if demo:
                result = session.run_demo()
                report["demo"] = result
                if not as_json:
                    _say(as_json, f"demo pipeline [bold]{result['correlation_id']}[/bold]: "
                                  f"{' -> '.join(result['steps'])}")
                    with _quiet_if_the_pipe_closed():
                        console.print_json(data=result["final"])
            if not once:
                _say(as_json, "running; Ctrl-C stops everything")
                while not stopping.wait(1.0):
                    dead = session.check_alive()
                    if dead:
                        print_error(f"{dead} exited; stopping (see its log)")
                        raise SystemExit(EXIT_FAILED)
        finally:
            stopping.set()  # a signal from here on does not interrupt the stop
            _say(as_json, "stopping...")
            session.stop()
    except DevAlreadyRunning as exc:
        print_error(exc)
        raise SystemExit(EXIT_FAILED) from None
    except Interrupted:
        raise SystemExit(EXIT_INTERRUPTED) from None
    if as_json and report:
        with _quiet_if_the_pipe_closed():
            print_json(report)


def _say(as_json: bool, text: str) -> None:
    if not as_json:
        with _quiet_if_the_pipe_closed():
            console.print(text)


def _print_env(data_dir: Path) -> None:
    state = running_dev(data_dir)
    if state is None:
        print_error(f"no orchestrator dev is running on {data_dir}; start one with "
                    "`orchestrator dev`")
        raise SystemExit(EXIT_FAILED)
    sys.stdout.write("".join(line + "\n" for line in state.export_lines()))


def _print_facts(facts: dict[str, str]) -> None:
    table = Table(title="orchestrator dev", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("where")
    for key, value in facts.items():
        table.add_row(key, value)
    console.print(table)
