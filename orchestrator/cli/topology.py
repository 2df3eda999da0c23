"""``orchestrator topology``: what queues, dead-letter exchanges and DLQs exist (and declare)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from orchestrator.cli.common import console, print_json
from orchestrator.topology import topology


@click.command("topology")
@click.option("--declare", is_flag=True, help="Declare everything on the broker (idempotent).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def topology_command(declare: bool, as_json: bool) -> None:
    """Print each step's queue, its dead-letter exchange and DLQ; --declare creates them."""
    from orchestrator.celery_app import app
    from orchestrator.events.publisher import declare_destinations

    if declare:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            topology.declare(connection)
            declare_destinations(connection)
    rows: list[dict[str, Any]] = [
        {"queue": s.name, "kind": s.kind, "dead_letter_exchange": s.dlx,
         "dead_letter_queue": s.dlq, "delivery_limit": s.delivery_limit,
         "arguments": s.queue_arguments()}
        for s in topology
    ]
    if as_json:
        print_json({"declared": declare, "queues": rows})
        return
    # Fits 80 columns: the dead-letter exchange is always <queue>.dlx (said in the caption,
    # listed by --json); a name that does not fit folds onto the next line, never shortened.
    table = Table(title="Topology" + (" (declared)" if declare else ""),
                  caption="dead-letter exchange of each queue: <queue>.dlx")
    for column in ("queue", "kind", "dead-letter queue"):
        table.add_column(column, overflow="fold")
    table.add_column("delivery limit", justify="right")
    for spec in topology:
        table.add_row(spec.name, spec.kind, spec.dlq, str(spec.delivery_limit))
    console.print(table)
