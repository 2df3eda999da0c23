"""The JSON file of a run: settings, machine, every round's raw metrics and the report rows.

Absolute figures are only comparable on the same machine at the same time, so the file
records the machine (and its load when the run began and ended) next to the numbers.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.config import prefetch_multiplier
from bench.report import bulk_rows, cost_rows, failover_rows, peer_rows, rows, trace_cost_rows
from bench.runner import BrokerRecord, Plan


def stamp(moment: datetime) -> str:
    """``20251127T101500Z``: sortable, and safe in a file name."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total_mib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mib": _memory_total_mib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "celery": _version("celery"),
        "kombu": _version("kombu"),
        "redis_py": _version("redis"),
        "hostname": platform.node(),
    }


def _clean(value: Any) -> Any:
    """NaN -> null, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def document(plan: Plan, records: list[BrokerRecord], started: datetime, finished: datetime,
             load_start: list[float], load_end: list[float],
             interrupted: bool = False) -> dict[str, Any]:
    """Everything the run produced, as one JSON-ready dict."""
    document: dict[str, Any] = _clean({
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "interrupted": interrupted,
        "machine": {**machine_info(), "load_average_start": load_start,
                    "load_average_end": load_end},
        "settings": {
            "brokers": list(plan.brokers),
            "scenarios": list(plan.scenarios),
            "tasks": plan.tasks,
            "chain_samples": plan.chain_samples,
            "chord_samples": plan.chord_samples,
            "backlog": plan.backlog,
            "rounds": plan.rounds,
            "warmup": plan.warmup,
            "sample_timeout_s": plan.sample_timeout,
            "redis_url": plan.redis_url,
            "plain_task_events": plan.plain_task_events,
            "plain_quorum": plan.plain_quorum,
            "events_cost": plan.events_cost,
            "trace_cost": plan.trace_cost,
            "worker": f"prefork, concurrency 2, prefetch multiplier {prefetch_multiplier()}",
            "log_dir": str(plan.log_dir),
        },
        "brokers": {
            record.name: {
                "url": record.url,
                "status": record.status or "measured",
                "rows": [row.to_json() for row in rows(record)],
                "events_cost": [row.to_json() for row in cost_rows(record)],
                "trace_cost": [row.to_json() for row in trace_cost_rows(record)],
                "bulk_publish": [row.to_json() for row in bulk_rows(record)],
                "against_dramatiq": [row.to_json() for row in peer_rows(record)],
                "failover": [row.to_json() for row in failover_rows(record)],
                "scenarios": {
                    name: {"rounds": scenario.rounds, "errors": scenario.errors}
                    for name, scenario in record.scenarios.items()
                },
            }
            for record in records
        },
    })
    return document


def write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path
