"""What the report shows per scenario, and the targets of the issue.

The targets are documented and checked by reading the output, never by a test:

- orchestrator/plain throughput (publish/s and drain/s) >= 0.9;
- chain latency p50 <= 1.2 x plain on the same broker;
- no message lost or duplicated in any scenario (both sides).

Ratios are always orchestrator / plain of the metric as shown: above 1 means a larger
number on the orchestrator's side, which is better for a rate and worse for a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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
)
