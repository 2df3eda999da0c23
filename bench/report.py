"""The console report: one rich table per broker."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.runner import BrokerRecord
from bench.summary import Row, rows


def _number(value: float, decimals: int) -> str:
    return "-" if math.isnan(value) else f"{value:,.{decimals}f}"


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return ""
    return "[green]ok[/green]" if ok else "[bold red]NO[/bold red]"


def table(broker: BrokerRecord, broker_rows: list[Row]) -> Table:
    """scenario | metric | plain | orchestrator | ratio | target | ok?"""
    title = f"{broker.name}  ({broker.url})"
    result = Table(title=title, title_justify="left")
    for column, justify in (("scenario", "left"), ("metric", "left"), ("plain", "right"),
                            ("orchestrator", "right"), ("ratio", "right"),
                            ("target", "left"), ("ok?", "center")):
        result.add_column(column, justify=justify)  # type: ignore[arg-type]
    if broker.status is not None:
        result.add_row("-", escape(broker.status), "", "", "", "", "")
        return result
    previous = None
    for row in broker_rows:
        scenario = row.scenario if row.scenario != previous else ""
        previous = row.scenario
        result.add_row(scenario, row.metric, _number(row.plain, row.decimals),
                       _number(row.orchestrator, row.decimals), _number(row.ratio, 3),
                       row.target, _verdict(row.ok))
    return result


def render(console: Console, records: list[BrokerRecord]) -> None:
    """Print each broker's table, then any measurement that failed."""
    for broker in records:
        console.print(table(broker, rows(broker)))
        for scenario, record in broker.scenarios.items():
            for error in record.errors:
                console.print(f"[red]{escape(f'{broker.name} {scenario}: {error}')}[/red]")
