"""From per-round measurements to report rows: medians per side, a ratio, the target.

With several rounds the ratio is the median of the per-round ratios, not the ratio of the
medians: each round pairs a plain and an orchestrator measurement taken back to back, so
the machine's drift cancels inside a round and only then are rounds combined.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from bench.runner import BrokerRecord, ScenarioRecord
from bench.stats import median, ratio
from bench.targets import METRICS, Metric

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


def _round_ratios(record: ScenarioRecord, key: str) -> list[float]:
    ratios = []
    for outcome in record.rounds:
        plain, orchestrator = outcome.get(PLAIN), outcome.get(ORCHESTRATOR)
        if plain is not None and orchestrator is not None:
            ratios.append(ratio(orchestrator.get(key, math.nan), plain.get(key, math.nan)))
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
    """The report rows of one broker, in :data:`~bench.targets.METRICS` order."""
    found: list[Row] = []
    for metric in METRICS:
        record = broker.scenarios.get(metric.source)
        if record is None:
            continue
        row = _row(metric, record)
        if row is not None:
            found.append(row)
    return found
