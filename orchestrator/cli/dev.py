"""``orchestrator dev``: broker, worker and Flower on this machine; ``--demo`` runs a pipeline."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click
from rich.table import Table

from orchestrator.cli.common import console, err_console, print_json
from orchestrator.devmode.session import DevSession
from orchestrator.settings import get_settings


@click.command("dev")
@click.option("--demo", is_flag=True, help="Serve the bundled sample feed and run a pipeline.")
@click.option("--once", is_flag=True, help="Stop everything after start-up (and the demo).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where the embedded broker, logs and files live [ORCHESTRATOR_DATA_DIR].")
@click.option("--flower/--no-flower", default=True, show_default=True, help="Start Flower.")
@click.option("--flower-port", type=int, default=None, help="Flower's port (default: a free one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only (with --once).")
def dev_command(demo: bool, once: bool, data_dir: Path | None, flower: bool,
                flower_port: int | None, as_json: bool) -> None:
    """Run the orchestrator locally: embedded Valkey broker unless ORCHESTRATOR_BROKER_URL
    is set, a worker for every queue, and Flower. Ctrl-C stops all of it."""
    session = DevSession(data_dir=(data_dir or get_settings().data_dir).resolve(),
                         flower=flower, flower_port=flower_port, demo=demo)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    report: dict[str, object] = {}
    try:
        if not as_json:
            console.print("[bold]orchestrator dev[/bold]: starting...")
        session.start()
        report["services"] = dict(session.facts)
        if not as_json:
            _print_facts(session.facts)
        if demo:
            result = session.run_demo()
            report["demo"] = result
            if not as_json:
                console.print(f"demo pipeline [bold]{result['correlation_id']}[/bold]: "
                              f"{' -> '.join(result['steps'])}")
                console.print_json(data=result["final"])
        if once:
            return
        console.print("running; Ctrl-C stops everything")
        while not stopping.wait(1.0):
            dead = session.check_alive()
            if dead:
                err_console.print(f"[red]error:[/red] {dead} exited; stopping (see its log)")
                raise SystemExit(1)
    finally:
        if not as_json:
            console.print("stopping...")
        session.stop()
        if as_json and report:
            print_json(report)


def _print_facts(facts: dict[str, str]) -> None:
    table = Table(title="orchestrator dev", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("where")
    for key, value in facts.items():
        table.add_row(key, value)
    console.print(table)
