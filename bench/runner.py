"""The run: per scenario, per round, per broker, plain then orchestrator, alternated.

Alternating inside each round (and tidying Redis before each measurement) means both sides
see the same machine weather: a neighbour's test suite that slows one side for a minute
slows the next measurement of the other side too, and the per-round ratio survives.

Imports the orchestrator (through :mod:`bench.side_orchestrator`): import this module only
after :mod:`bench.cli` has set the environment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bench import services
from bench.scenarios import (
    Context,
    Metrics,
    io_bound,
    measure_chain,
    measure_drain,
    measure_failover,
    measure_fanout,
    measure_io_drain,
    measure_publish_interleaved,
)
from bench.services import BROKERS, unavailable_reason
from bench.side import Side
from bench.side_orchestrator import BulkOrchestratorSide, OrchestratorSide
from bench.side_plain import PlainSide
from bench.slow_server import SlowServer
from orchestrator.settings import redact_url


@dataclass(frozen=True)
class Plan:
    """What to run, from the command line."""

    brokers: tuple[str, ...]
    scenarios: tuple[str, ...]
    tasks: int
    chain_samples: int
    chord_samples: int
    backlog: int
    rounds: int
    warmup: int
    sample_timeout: float
    redis_url: str
    plain_task_events: bool
    log_dir: Path
    plain_quorum: bool = False
    events_cost: bool = False
    dramatiq: bool = False
    io_tasks: int = 800
    """Also run the orchestrator with its plain events off, to show what they cost."""
    trace_cost: bool = False
    """Also run the orchestrator with its request trace record off (a side of its own)."""


@dataclass
class ScenarioRecord:
    """Per round, each side's metrics (None when that measurement failed)."""

    rounds: list[dict[str, Metrics | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class BrokerRecord:
    name: str
    url: str
    status: str | None
    """None when measured; otherwise why not (not available yet, unreachable)."""
    scenarios: dict[str, ScenarioRecord] = field(default_factory=dict)


Measure = Callable[[Side, Context], Metrics]
PairedMeasure = Callable[[tuple[Side, ...]], dict[str, Metrics]]
"""Measures both sides at once (in turns), returning metrics per side name."""


def _paired_measures(plan: Plan) -> dict[str, PairedMeasure]:
    return {"publish": lambda sides: measure_publish_interleaved(sides, plan.tasks)}


_slow_servers: list[SlowServer] = []


def _slow_server() -> SlowServer:
    """The I/O-bound scenario's HTTP server, started on first use, one per bench run."""
    if not _slow_servers:
        _slow_servers.append(SlowServer(delay=IO_DELAY_SECONDS).start())
    return _slow_servers[0]


IO_DELAY_SECONDS = 0.02


def _measures(plan: Plan) -> dict[str, Measure]:
    return {
        "throughput": lambda side, ctx: measure_drain(side, plan.tasks, ctx),
        "threaded": lambda side, ctx: measure_drain(side, plan.tasks, ctx, spec=io_bound),
        "latency": lambda side, ctx: measure_chain(side, plan.chain_samples, ctx),
        "fanout": lambda side, ctx: measure_fanout(side, plan.chord_samples, ctx),
        "backlog": lambda side, ctx: measure_drain(side, plan.backlog, ctx),
        "failover": lambda side, ctx: measure_failover(side, ctx),
        "io": lambda side, ctx: measure_io_drain(side, plan.io_tasks, ctx, _slow_server().url),
    }


def _brief(metrics: Metrics) -> str:
    shown = []
    for key in ("publish_per_s", "drain_per_s", "p50_ms", "p99_ms", "lost", "duplicates"):
        value = metrics.get(key)
        if value is not None and not math.isnan(value):
            shown.append(f"{key}={value:.1f}")
    return " ".join(shown)


def _run_paired_round(record: ScenarioRecord, measure: PairedMeasure,
                      sides: tuple[Side, ...], plan: Plan, console: Console, title: str,
                      round_number: int) -> None:
    """One round of a measure that takes both sides at once (in turns)."""
    services.tidy_redis(plan.redis_url)
    label = escape(f"{title} {round_number}/{plan.rounds} both sides in turns")
    console.log(f"{label} ...")
    try:
        outcome: dict[str, Metrics | None] = dict(measure(sides))
    except Exception as exc:
        record.errors.append(f"round {round_number}: {type(exc).__name__}: {exc}")
        outcome = {side.name: None for side in sides}
        console.log(f"[red]{label} failed:[/red] {escape(str(exc))}")
    else:
        for name, metrics in outcome.items():
            console.log(f"{label} {name}: {_brief(metrics or {})}")
    record.rounds.append(outcome)


def _run_round(record: ScenarioRecord, measure: Measure, sides: tuple[Side, ...],
               plan: Plan, ctx: Context, console: Console, title: str,
               round_number: int) -> None:
    """One round: each side in turn (in place: an interrupt keeps a half round)."""
    outcome: dict[str, Metrics | None] = {}
    record.rounds.append(outcome)
    for side in sides:
        services.tidy_redis(plan.redis_url)
        label = escape(f"{title} {round_number}/{plan.rounds} {side.name}")
        console.log(f"{label} ...")
        try:
            metrics = measure(side, ctx)
        except Exception as exc:
            record.errors.append(
                f"{side.name} round {round_number}: {type(exc).__name__}: {exc}")
            outcome[side.name] = None
            console.log(f"[red]{label} failed:[/red] {escape(str(exc))}")
        else:
            outcome[side.name] = metrics
            console.log(f"{label}: {_brief(metrics)}")


EVENT_PROBE = "event-publish"
"""The pseudo-side of a throughput round holding the in-process event publication time."""
EVENT_PROBE_COUNT = 2000


def _probe_events(record: ScenarioRecord, sides: tuple[Side, ...], console: Console,
                  title: str, round_number: int) -> None:
    """Time the orchestrator's event publication right after the round's drains."""
    side = next(side for side in sides if isinstance(side, OrchestratorSide))
    label = escape(f"{title} {round_number} event publication")
    try:
        seconds = side.event_publish_seconds(EVENT_PROBE_COUNT)
    except Exception as exc:
        record.errors.append(f"event probe round {round_number}: {type(exc).__name__}: {exc}")
        console.log(f"[red]{label} failed:[/red] {escape(str(exc))}")
        return
    record.rounds[-1][EVENT_PROBE] = {"event_us": seconds * 1e6}
    console.log(f"{label}: {seconds * 1e6:.0f} us per event")


def run(plan: Plan, console: Console) -> tuple[list[BrokerRecord], bool]:
    """Measure every broker of ``plan``; brokers that cannot be measured get a status.

    Returns the records and whether Ctrl-C cut the run short (what was measured is kept).
    """
    ctx = Context(plan.redis_url, plan.log_dir, plan.sample_timeout, plan.warmup)
    plain = PlainSide(plan.redis_url, plan.plain_task_events, plan.plain_quorum)
    orchestrator = OrchestratorSide(plan.redis_url)
    sides: tuple[Side, ...] = (plain, orchestrator)
    if plan.events_cost:
        sides += (OrchestratorSide(plan.redis_url, events=False),)
    if plan.trace_cost:
        sides += (OrchestratorSide(plan.redis_url, trace=False),)
    bulk = BulkOrchestratorSide(plan.redis_url)
    if plan.dramatiq:
        from bench.side_dramatiq import DramatiqSide

        sides += (DramatiqSide(plan.redis_url),)
    measures = _measures(plan)
    records: list[BrokerRecord] = []
    interrupted = False
    try:
        _run_brokers(plan, sides, bulk, measures, ctx, console, records)
    except KeyboardInterrupt:
        interrupted = True
        console.log("[yellow]interrupted: reporting what was measured so far[/yellow]")
    finally:
        for side in (*sides, bulk):
            side.close()
        for server in _slow_servers:
            server.stop()
        _slow_servers.clear()
        services.tidy_redis(plan.redis_url)
    return records, interrupted


def _taking_part(sides: tuple[Side, ...], scenario: str, url: str) -> tuple[Side, ...]:
    """The sides that have this scenario (``scenarios``) and a client for this broker
    (``supports``; a peer such as Dramatiq has no NATS one)."""
    found = []
    for side in sides:
        scenarios = getattr(side, "scenarios", None)
        supports = getattr(side, "supports", None)
        if scenarios is not None and scenario not in scenarios:
            continue
        if supports is not None and not supports(url):
            continue
        found.append(side)
    return tuple(found)


def _run_brokers(plan: Plan, sides: tuple[Side, ...], bulk: Side,
                 measures: dict[str, Measure],
                 ctx: Context, console: Console, records: list[BrokerRecord]) -> None:
    """Fill ``records`` as measurements complete, so an interrupt keeps what was measured.

    Per scenario and round, every broker in turn: brokers compared with each other (Streams
    against stock Redis, NATS against RabbitMQ) see the same machine weather too. The bulk
    side (``run_pipelines``) takes its turns in the publish scenario only.
    """
    available: list[tuple[BrokerRecord, str]] = []
    for name in plan.brokers:
        url = BROKERS[name]
        reason = unavailable_reason(url)
        record = BrokerRecord(name, redact_url(url), reason)
        records.append(record)
        if reason is not None:
            console.log(f"[yellow]{escape(f'[{name}] {reason}')}[/yellow]")
            continue
        record.scenarios = {scenario: ScenarioRecord() for scenario in plan.scenarios}
        available.append((record, url))
    for scenario in plan.scenarios:
        paired = _paired_measures(plan).get(scenario)
        for round_number in range(1, plan.rounds + 1):
            for record, url in available:
                taking_part = _taking_part((*sides, bulk), scenario, url)
                for side in taking_part:
                    side.use_broker(url)
                title = f"[{record.name}] {scenario}"
                target = record.scenarios[scenario]
                if paired is not None:
                    _run_paired_round(target, paired, taking_part, plan, console, title,
                                      round_number)
                else:
                    _run_round(target, measures[scenario], taking_part, plan, ctx, console,
                               title, round_number)
                if plan.events_cost and scenario == "throughput":
                    _probe_events(target, sides, console, title, round_number)
