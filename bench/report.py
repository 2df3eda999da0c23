"""What a run reports: the metrics and targets, the rows, the console tables.

The targets are documented and checked by reading the output, never by a test:

- orchestrator/plain throughput (publish/s and drain/s) >= 0.9;
- chain latency p50 <= 1.2 x plain on the same broker;
- no message lost or duplicated in any scenario (both sides).

Ratios are always orchestrator / plain of the metric as shown: above 1 means a larger
number on the orchestrator's side, which is better for a rate and worse for a time.
With several rounds the ratio is the median of the per-round ratios, not the ratio of the
medians: each round pairs a plain and an orchestrator measurement taken back to back, so
the machine's drift cancels inside a round and only then are rounds combined.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.runner import EVENT_PROBE, BrokerRecord, ScenarioRecord
from bench.scenarios import median, ratio

# -- metrics and targets -----------------------------------------------------------------------

TargetKind = Literal["ratio_min", "ratio_max", "zero"]


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    value: float = 0.0

    def text(self) -> str:
        if self.kind == "ratio_min":
            return f">= {self.value:g}"
        if self.kind == "ratio_max":
            return f"<= {self.value:g}"
        return "0"

    def met(self, plain: float, orchestrator: float, ratio: float) -> bool | None:
        """True/False, or None when a value is missing (nothing to judge)."""
        if self.kind == "zero":
            if math.isnan(plain) and math.isnan(orchestrator):
                return None
            return all(math.isnan(v) or v == 0 for v in (plain, orchestrator))
        if math.isnan(ratio):
            return None
        return ratio >= self.value if self.kind == "ratio_min" else ratio <= self.value


@dataclass(frozen=True)
class Metric:
    """One row of the report: ``source`` is the scenario that measured it."""

    scenario: str
    source: str
    key: str
    label: str
    decimals: int
    has_ratio: bool
    target: Target | None = None
    higher_is_better: bool = False
    """Rates (publish/s, drain/s): a ratio above 1 is good. Times and memory: below 1."""


ZERO = Target("zero")
THROUGHPUT = Target("ratio_min", 0.9)
LATENCY_P50 = Target("ratio_max", 1.2)

METRICS: tuple[Metric, ...] = (
    Metric("throughput", "throughput", "publish_per_s", "publish/s", 0, True, THROUGHPUT, True),
    Metric("publish", "publish", "publish_per_s", "publish/s in turns", 0, True, THROUGHPUT,
           True),
    Metric("throughput", "throughput", "drain_per_s", "drain/s", 0, True, THROUGHPUT, True),
    Metric("throughput", "throughput", "lost", "lost", 0, False, ZERO),
    Metric("throughput", "throughput", "duplicates", "duplicates", 0, False, ZERO),
    Metric("throughput", "throughput", "dead_lettered", "dead-lettered", 0, False, ZERO),
    Metric("memory", "throughput", "peak_rss_mb", "peak RSS MiB", 1, True),
    Metric("threaded", "threaded", "drain_per_s", "drain/s, escavador pool", 0, True,
           THROUGHPUT, True),
    Metric("threaded", "threaded", "lost", "lost", 0, False, ZERO),
    Metric("threaded", "threaded", "duplicates", "duplicates", 0, False, ZERO),
    Metric("threaded", "threaded", "worker_cpu_ms_per_task", "worker CPU ms/task", 2, True),
    Metric("latency", "latency", "p50_ms", "chain p50 ms", 1, True, LATENCY_P50),
    Metric("latency", "latency", "p99_ms", "chain p99 ms", 1, True),
    Metric("latency", "latency", "failed", "failed chains", 0, False, ZERO),
    Metric("fanout", "fanout", "p50_ms", "chord p50 ms", 1, True),
    Metric("fanout", "fanout", "p99_ms", "chord p99 ms", 1, True),
    Metric("fanout", "fanout", "failed", "failed chords", 0, False, ZERO),
    Metric("backlog", "backlog", "publish_s", "publish time s", 2, True),
    Metric("backlog", "backlog", "drain_s", "drain time s", 2, True),
    Metric("backlog", "backlog", "lost", "lost", 0, False, ZERO),
    Metric("backlog", "backlog", "duplicates", "duplicates", 0, False, ZERO),
    Metric("backlog", "backlog", "dead_lettered", "dead-lettered", 0, False, ZERO),
    Metric("io", "io", "drain_per_s", "drain/s, 20 ms HTTP step", 0, True, THROUGHPUT, True),
    Metric("io", "io", "lost", "lost", 0, False, ZERO),
    Metric("io", "io", "duplicates", "duplicates", 0, False, ZERO),
    Metric("io", "io", "peak_rss_mb", "peak RSS MiB", 1, True),
)


def _without_nan(data: dict[str, Any]) -> dict[str, Any]:
    """NaN is not JSON: a value that could not be measured becomes null."""
    return {name: None if isinstance(value, float) and math.isnan(value) else value
            for name, value in data.items()}


# -- rows: medians per side, a ratio, the target -----------------------------------------------

PLAIN = "plain"
ORCHESTRATOR = "orchestrator"


@dataclass(frozen=True)
class Row:
    scenario: str
    metric: str
    key: str
    plain: float
    orchestrator: float
    ratio: float
    target: str
    target_ratio: float | None
    """The ratio the target names (for the chart), None for non-ratio targets."""
    ok: bool | None
    decimals: int
    better: str
    """"higher" or "lower": which way a ratio is an improvement."""

    def to_json(self) -> dict[str, Any]:
        """NaN is not JSON: missing values become null."""
        data = asdict(self)
        for name in ("plain", "orchestrator", "ratio"):
            if math.isnan(data[name]):
                data[name] = None
        return data


def _values(record: ScenarioRecord, side: str, key: str) -> list[float]:
    values = []
    for outcome in record.rounds:
        metrics = outcome.get(side)
        if metrics is not None and key in metrics:
            values.append(metrics[key])
    return values


def _round_ratios(record: ScenarioRecord, key: str, numerator: str = ORCHESTRATOR,
                  denominator: str = PLAIN) -> list[float]:
    """Per round, ``numerator``'s metric over ``denominator``'s (measured back to back)."""
    ratios = []
    for outcome in record.rounds:
        top, bottom = outcome.get(numerator), outcome.get(denominator)
        if top is not None and bottom is not None:
            ratios.append(ratio(top.get(key, math.nan), bottom.get(key, math.nan)))
    return ratios


def _incomplete(record: ScenarioRecord) -> bool:
    """True when some side's measurement in some round failed."""
    return any(outcome.get(side) is None for outcome in record.rounds
               for side in (PLAIN, ORCHESTRATOR))


def _row(metric: Metric, record: ScenarioRecord) -> Row | None:
    plain_values = _values(record, PLAIN, metric.key)
    orchestrator_values = _values(record, ORCHESTRATOR, metric.key)
    nothing = not plain_values and not orchestrator_values
    if nothing and (metric.key == "dead_lettered" or not record.rounds):
        return None
    plain = median(plain_values)
    orchestrator = median(orchestrator_values)
    value = median(_round_ratios(record, metric.key)) if metric.has_ratio else math.nan
    ok = metric.target.met(plain, orchestrator, value) if metric.target else None
    if metric.target is not None and metric.target.kind == "zero" and _incomplete(record):
        ok = False  # a measurement that failed cannot vouch for exactly-once
    target = metric.target
    target_ratio = target.value if target is not None and target.kind != "zero" else None
    return Row(metric.scenario, metric.label, metric.key, plain, orchestrator, value,
               target.text() if target else "", target_ratio, ok, metric.decimals,
               "higher" if metric.higher_is_better else "lower")


def rows(broker: BrokerRecord) -> list[Row]:
    """The report rows of one broker, in :data:`METRICS` order."""
    found: list[Row] = []
    for metric in METRICS:
        record = broker.scenarios.get(metric.source)
        if record is None:
            continue
        row = _row(metric, record)
        if row is not None:
            found.append(row)
    return found


# -- the cost of the plain events (--events-cost) ---------------------------------------------

WITHOUT_EVENTS = "orchestrator-no-events"
"""The side that runs the orchestrator's worker with ``ORCHESTRATOR_EVENTS=false``."""

COST_METRICS = (("throughput", "drain/s", "drain_per_s", 1),
                ("throughput", "worker CPU ms/task", "worker_cpu_ms_per_task", 3),
                ("latency", "chain p50 ms", "p50_ms", 2),
                ("latency", "chain p99 ms", "p99_ms", 2))


@dataclass(frozen=True)
class CostRow:
    """The orchestrator with events over the same without: a drain ratio of 0.95 is 5 %."""

    scenario: str
    metric: str
    without_events: float
    with_events: float
    ratio: float
    decimals: int

    def to_json(self) -> dict[str, Any]:
        return _without_nan(asdict(self))


WORKER_PROCESSES = 2
"""The bench worker's pool size: a drain rate R keeps each process busy 2 / R s per task."""


def _event_share(record: ScenarioRecord) -> list[float]:
    """Per round: the in-process time of one event over a pool process's time per task."""
    shares = []
    for outcome in record.rounds:
        probe, measured = outcome.get(EVENT_PROBE), outcome.get(ORCHESTRATOR)
        if probe is not None and measured is not None and measured.get("drain_per_s"):
            shares.append(probe["event_us"] * 1e-6 * measured["drain_per_s"]
                          / WORKER_PROCESSES)
    return shares


WITHOUT_TRACE = "orchestrator-no-trace"
"""The side that runs the orchestrator's worker with ``ORCHESTRATOR_TRACE_ENABLED=false``."""


def trace_cost_rows(broker: BrokerRecord) -> list[CostRow]:
    """``--trace-cost``: the orchestrator with its trace record over the same without
    (``without_events``/``with_events`` are then without and with the trace)."""
    return _against(broker, WITHOUT_TRACE)


def _against(broker: BrokerRecord, without: str) -> list[CostRow]:
    """A row per metric both the orchestrator and the side ``without`` measured."""
    found = []
    for scenario, label, key, decimals in COST_METRICS:
        record = broker.scenarios.get(scenario)
        if record is None or not _values(record, without, key):
            continue
        found.append(CostRow(scenario, label, median(_values(record, without, key)),
                             median(_values(record, ORCHESTRATOR, key)),
                             median(_round_ratios(record, key, ORCHESTRATOR, without)),
                             decimals))
    return found


def cost_rows(broker: BrokerRecord) -> list[CostRow]:
    """Rows for the scenarios where the events-off side was measured too, and the event
    publication's own time next to a task's (``--events-cost`` probes it each round)."""
    found = []
    throughput = broker.scenarios.get("throughput")
    if throughput is not None and _values(throughput, EVENT_PROBE, "event_us"):
        found.append(CostRow("throughput", "event publish us", math.nan,
                             median(_values(throughput, EVENT_PROBE, "event_us")), math.nan, 0))
        found.append(CostRow("throughput", "event share of a task", math.nan, math.nan,
                             median(_event_share(throughput)), 3))
    return found + _against(broker, WITHOUT_EVENTS)


def cost_table(broker: BrokerRecord, broker_rows: list[CostRow],
               what: str = "events") -> Table:
    """scenario | metric | without events | with events | ratio (``what``: "trace")"""
    title = "the plain events" if what == "events" else "the request trace record"
    result = Table(title=f"{broker.name}: cost of {title}", title_justify="left")
    for column in ("scenario", "metric", f"without {what}", f"with {what}", "ratio"):
        result.add_column(column, justify="left" if column in ("scenario", "metric")
                          else "right")
    for row in broker_rows:
        result.add_row(row.scenario, row.metric, _number(row.without_events, row.decimals),
                       _number(row.with_events, row.decimals), _number(row.ratio, 3))
    return result


# -- bulk triggering (run_pipelines) ----------------------------------------------------------

BULK = "orchestrator-bulk"
"""The side that starts the publish scenario's pipelines with ``run_pipelines``."""
BULK_TARGET = 5.0
"""Issue 16: bulk triggering at least 5x the single ``run_pipeline`` rate."""


@dataclass(frozen=True)
class BulkRow:
    """Pipelines started per second one at a time, in bulk, and the per-round ratio."""

    one_at_a_time: float
    bulk: float
    ratio: float

    def to_json(self) -> dict[str, Any]:
        return _without_nan(asdict(self))


def bulk_rows(broker: BrokerRecord) -> list[BulkRow]:
    record = broker.scenarios.get("publish")
    if record is None or not _values(record, BULK, "publish_per_s"):
        return []
    return [BulkRow(median(_values(record, ORCHESTRATOR, "publish_per_s")),
                    median(_values(record, BULK, "publish_per_s")),
                    median(_round_ratios(record, "publish_per_s", BULK, ORCHESTRATOR)))]


def bulk_table(broker: BrokerRecord, broker_rows: list[BulkRow]) -> Table:
    result = Table(title=f"{broker.name}: bulk triggering, confirms on", title_justify="left")
    for column in ("run_pipeline/s", "run_pipelines/s", "ratio", "target", "ok?"):
        result.add_column(column, justify="right")
    for row in broker_rows:
        result.add_row(_number(row.one_at_a_time, 0), _number(row.bulk, 0),
                       _number(row.ratio, 2), f">= {BULK_TARGET:g}",
                       _verdict(row.ratio >= BULK_TARGET if not math.isnan(row.ratio)
                                else None))
    return result


# -- failover after SIGKILL --------------------------------------------------------------------

FAILOVER_TARGET_S = 5.0
"""Issue 16: a killed worker's message runs on another within 5 s, on every broker."""


@dataclass(frozen=True)
class FailoverRow:
    seconds: float
    lost: float
    duplicates: float

    def to_json(self) -> dict[str, Any]:
        return _without_nan(asdict(self))


def failover_rows(broker: BrokerRecord) -> list[FailoverRow]:
    record = broker.scenarios.get("failover")
    if record is None or not _values(record, ORCHESTRATOR, "failover_s"):
        return []
    return [FailoverRow(median(_values(record, ORCHESTRATOR, "failover_s")),
                        sum(_values(record, ORCHESTRATOR, "lost")),
                        sum(_values(record, ORCHESTRATOR, "duplicates")))]


def failover_table(broker: BrokerRecord, broker_rows: list[FailoverRow]) -> Table:
    result = Table(title=f"{broker.name}: failover after SIGKILL (kill to run elsewhere)",
                   title_justify="left")
    for column in ("seconds", "target", "ok?", "lost", "duplicates"):
        result.add_column(column, justify="right")
    for row in broker_rows:
        ok = None if math.isnan(row.seconds) else row.seconds <= FAILOVER_TARGET_S
        result.add_row(_number(row.seconds, 2), f"<= {FAILOVER_TARGET_S:g}", _verdict(ok),
                       _number(row.lost, 0), _number(row.duplicates, 0))
    return result


# -- against Dramatiq (--dramatiq) -------------------------------------------------------------

DRAMATIQ = "dramatiq"
PEER_SYSTEMS = (PLAIN, ORCHESTRATOR, BULK)
PEER_METRICS = (("throughput", "publish/s", "publish_per_s", 0),
                ("publish", "publish/s in turns", "publish_per_s", 0),
                ("throughput", "drain/s", "drain_per_s", 0),
                ("throughput", "peak RSS MiB", "peak_rss_mb", 1),
                ("threaded", "drain/s, escavador pool", "drain_per_s", 0),
                ("threaded", "worker CPU ms/task", "worker_cpu_ms_per_task", 2),
                ("io", "drain/s, 20 ms HTTP step", "drain_per_s", 0))


@dataclass(frozen=True)
class PeerRow:
    """One metric for Dramatiq and each Celery side, and each side's per-round ratio to it."""

    scenario: str
    metric: str
    dramatiq: float
    systems: dict[str, float]
    ratios: dict[str, float]
    decimals: int

    def to_json(self) -> dict[str, Any]:
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value
        return {"scenario": self.scenario, "metric": self.metric,
                "dramatiq": clean(self.dramatiq),
                "systems": {name: clean(value) for name, value in self.systems.items()},
                "ratio_to_dramatiq": {name: clean(value) for name, value in self.ratios.items()}}


def peer_rows(broker: BrokerRecord) -> list[PeerRow]:
    found = []
    for scenario, label, key, decimals in PEER_METRICS:
        record = broker.scenarios.get(scenario)
        if record is None or not _values(record, DRAMATIQ, key):
            continue
        systems = {name: median(_values(record, name, key)) for name in PEER_SYSTEMS
                   if _values(record, name, key)}
        ratios = {name: median(_round_ratios(record, key, name, DRAMATIQ)) for name in systems}
        found.append(PeerRow(scenario, label, median(_values(record, DRAMATIQ, key)),
                             systems, ratios, decimals))
    return found


def peer_table(broker: BrokerRecord, broker_rows: list[PeerRow]) -> Table:
    """scenario | metric | dramatiq | each side's value (its ratio to Dramatiq)"""
    result = Table(title=f"{broker.name}: against Dramatiq (RabbitMQ with confirms; Redis "
                         "lists on the same server)", title_justify="left")
    for column in ("scenario", "metric", DRAMATIQ, *PEER_SYSTEMS):
        result.add_column(column, justify="left" if column in ("scenario", "metric")
                          else "right")
    for row in broker_rows:
        cells = [f"{_number(row.systems[name], row.decimals)} ({_number(row.ratios[name], 2)})"
                 if name in row.systems else "" for name in PEER_SYSTEMS]
        result.add_row(row.scenario, row.metric, _number(row.dramatiq, row.decimals), *cells)
    return result


# -- the console tables ------------------------------------------------------------------------

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
        events = cost_rows(broker)
        if events:
            console.print(cost_table(broker, events))
        traced = trace_cost_rows(broker)
        if traced:
            console.print(cost_table(broker, traced, "trace"))
        bulk = bulk_rows(broker)
        if bulk:
            console.print(bulk_table(broker, bulk))
        peers = peer_rows(broker)
        if peers:
            console.print(peer_table(broker, peers))
        failover = failover_rows(broker)
        if failover:
            console.print(failover_table(broker, failover))
        for scenario, record in broker.scenarios.items():
            for error in record.errors:
                console.print(f"[red]{escape(f'{broker.name} {scenario}: {error}')}[/red]")
