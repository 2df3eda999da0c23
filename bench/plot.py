"""``--plot``: a bar chart of the orchestrator/plain ratios, one bar per broker and metric.

Reads the JSON document (not live objects), so a chart can be redrawn from any saved run:
``python -c "import json,sys; from bench.plot import draw; ..."``. matplotlib is an optional
dependency (``pip install -e '.[bench]'``) imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PARITY = 1.0


def _ratio_rows(data: dict[str, Any]) -> tuple[list[tuple[str, str, str]],
                                               dict[str, dict[str, float]]]:
    """Metric order (scenario, label, better) and, per broker, ratio by label."""
    order: list[tuple[str, str, str]] = []
    by_broker: dict[str, dict[str, float]] = {}
    for broker, info in data["brokers"].items():
        for row in info["rows"]:
            if row["ratio"] is None:
                continue
            key = (row["scenario"], row["metric"], row.get("better", "lower"))
            if key not in order:
                order.append(key)
            by_broker.setdefault(broker, {})[row["metric"]] = float(row["ratio"])
    return order, by_broker


def _target_value(rows: list[dict[str, Any]], label: str) -> float | None:
    for row in rows:
        if row["metric"] == label and row.get("target_ratio") is not None:
            return float(row["target_ratio"])
    return None


def draw(data: dict[str, Any], path: Path) -> Path | None:
    """Write the chart to ``path``; None when no broker produced a ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order, by_broker = _ratio_rows(data)
    if not order:
        return None
    brokers = list(by_broker)
    all_rows = [row for info in data["brokers"].values() for row in info["rows"]]
    width = 0.8 / max(len(brokers), 1)
    figure, axes = plt.subplots(figsize=(max(8.0, 1.1 * len(order) + 2), 5.0))
    for index, broker in enumerate(brokers):
        positions = [i - 0.4 + width * (index + 0.5) for i in range(len(order))]
        heights = [by_broker[broker].get(label, float("nan")) for _, label, _ in order]
        bars = axes.bar(positions, heights, width=width, label=broker)
        axes.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    labelled = False
    for i, (_, label, _) in enumerate(order):
        target = _target_value(all_rows, label)
        if target is not None:
            axes.hlines(target, i - 0.45, i + 0.45, colors="crimson", linestyles="--",
                        linewidth=1.5, label="_nolegend_" if labelled else "target")
            labelled = True
    axes.axhline(PARITY, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(order)))
    axes.set_xticklabels([f"{scenario}\n{label}\n({better} is better)"
                          for scenario, label, better in order], fontsize=8)
    axes.set_ylabel("orchestrator / plain")
    started = data.get("started_at", "")[:19]
    axes.set_title(f"Orchestrator vs plain Celery, same run ({started} UTC; "
                   f"{data['machine']['nproc']} CPUs). 1.0 = parity")
    axes.legend(fontsize=8)
    skipped = [f"{name}: {info['status']}" for name, info in data["brokers"].items()
               if info["status"] != "measured"]
    if skipped:
        figure.text(0.01, 0.005, "not measured - " + "; ".join(skipped)[:180], fontsize=7,
                    color="dimgrey")
    figure.tight_layout(rect=(0, 0.03 if skipped else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
