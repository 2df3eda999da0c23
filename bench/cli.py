"""``python -m bench``: options, environment, run, report, JSON and chart.

The environment is set *before* anything imports the orchestrator: its app reads
``ORCHESTRATOR_*`` once, at import, and the bench steps must be the only steps it loads.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console

from bench.config import (
    DEFAULT_REDIS_URL,
    ENV_PREFETCH,
    SCENARIOS,
    orchestrator_env,
    plain_env,
)
from bench.services import BROKERS

SCENARIO_NAMES = SCENARIOS
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
EXIT_MEASUREMENT_FAILED = 1
EXIT_INTERRUPTED = 130


def _split(value: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise click.BadParameter(f"unknown {what} {', '.join(unknown) or '(none)'}; "
                                 f"choose from {', '.join(known)}")
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--broker", "brokers", default="amqp", show_default=True,
              help=f"Comma list of: {', '.join(BROKERS)}.")
@click.option("--tasks", default=5000, show_default=True, type=click.IntRange(1),
              help="Messages in the throughput scenario.")
@click.option("--chain-samples", default=200, show_default=True, type=click.IntRange(1),
              help="Chains timed in the latency scenario.")
@click.option("--chord-samples", default=50, show_default=True, type=click.IntRange(1),
              help="Chords timed in the fan-out scenario.")
@click.option("--backlog", default=100_000, show_default=True, type=click.IntRange(1),
              help="Messages queued in the backlog scenario.")
@click.option("--scenarios", default=",".join(SCENARIO_NAMES), show_default=True,
              help="Comma list of scenarios (memory comes with throughput).")
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1),
              help="Plain/orchestrator alternations per scenario; medians are reported.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(0),
              help="Untimed chains/chords before the latency and fan-out samples.")
@click.option("--sample-timeout", default=30.0, show_default=True, type=float,
              help="Seconds one chain or chord may take before it counts as failed.")
@click.option("--redis-url", default=DEFAULT_REDIS_URL, show_default=True,
              help="Results, idempotency and ledger database of both sides (tidied).")
@click.option("--plain-events/--no-plain-events", "plain_task_events", default=True,
              show_default=True,
              help="Worker task events (what Flower shows) on the plain side too, as the "
                   "orchestrator sends them: the same Celery settings on both sides. "
                   "--no-plain-events counts the events as part of the orchestrator's cost.")
@click.option("--plain-quorum", is_flag=True,
              help="RabbitMQ: put plain Celery's queue on a quorum queue too, as the "
                   "orchestrator's are, to take the queue type out of the comparison.")
@click.option("--events-cost", is_flag=True,
              help="Also measure the orchestrator with its plain events off (a third side) "
                   "and report what publishing them costs.")
@click.option("--trace-cost", is_flag=True,
              help="Also measure the orchestrator with its request trace record off (a side "
                   "of its own) and report what writing it costs.")
@click.option("--io-tasks", default=800, show_default=True, type=click.IntRange(1),
              help="Messages in the I/O-bound scenario (each step: one HTTP request answered "
                   "after 20 ms; Celery workers -P threads -c 16, Dramatiq -p 2 -t 8).")
@click.option("--prefetch", default=1, show_default=True, type=click.IntRange(1),
              help="Both Celery sides' prefetch multiplier: 1 as shipped, or the README's "
                   "setting for short steps (8).")
@click.option("--dramatiq/--no-dramatiq", default=True, show_default=True,
              help="Also measure Dramatiq (RabbitMQ and Redis; throughput and publish) and "
                   "report every system's rate as a ratio to it.")
@click.option("--plot", is_flag=True, help="Also draw the ratios as a PNG (matplotlib).")
@click.option("--out", "out_dir", default=str(DEFAULT_OUT), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where the JSON (and PNG) go.")
def main(brokers: str, tasks: int, chain_samples: int, chord_samples: int, backlog: int,
         scenarios: str, rounds: int, warmup: int, sample_timeout: float, redis_url: str,
         plain_task_events: bool, plain_quorum: bool, events_cost: bool, trace_cost: bool,
         io_tasks: int, prefetch: int, dramatiq: bool, plot: bool, out_dir: Path) -> None:
    """Measure the orchestrator against plain Celery, as ratios from one run."""
    broker_names = _split(brokers, tuple(BROKERS), "broker")
    scenario_names = _split(scenarios, SCENARIO_NAMES, "scenario")
    # Piped output (a CI log, `| tee`) would get 80 columns and a wrapped table.
    console = Console(log_path=False, width=None if sys.stdout.isatty() else 120)

    os.environ[ENV_PREFETCH] = str(prefetch)  # read by every process of the run
    os.environ.update(orchestrator_env(BROKERS[broker_names[0]], redis_url))
    os.environ.update(plain_env(BROKERS[broker_names[0]], redis_url, plain_task_events,
                                plain_quorum))

    from bench import report, results, services
    from bench.runner import Plan, run

    problem = services.check_redis(redis_url)
    if problem is not None:
        raise click.ClickException(f"Redis {redis_url} is not reachable: {problem}")

    started = datetime.now(UTC)
    name = f"{results.stamp(started)}-{'_'.join(broker_names)}"
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    plan = Plan(broker_names, scenario_names, tasks, chain_samples, chord_samples, backlog,
                rounds, warmup, sample_timeout, redis_url, plain_task_events, log_dir,
                plain_quorum=plain_quorum, events_cost=events_cost, dramatiq=dramatiq,
                io_tasks=io_tasks, trace_cost=trace_cost)
    load_start = results.load_average()
    console.log(f"machine load {load_start}; worker logs in {log_dir}")

    records, interrupted = run(plan, console)

    finished = datetime.now(UTC)
    data = results.document(plan, records, started, finished, load_start,
                            results.load_average(), interrupted)
    report.render(console, records)
    json_path = results.write(out_dir / f"{name}.json", data)
    console.print(f"results: {json_path}")
    if plot:
        from bench.plot import draw

        png = draw(data, out_dir / f"{name}.png")
        console.print(f"chart: {png}" if png else "chart: no ratio to draw")
    # Missed targets are read, not enforced (exit 0); a broken measurement is an error.
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if any(scenario.errors for record in records for scenario in record.scenarios.values()):
        sys.exit(EXIT_MEASUREMENT_FAILED)
