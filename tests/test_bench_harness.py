"""The bench harness's own fairness rules (the bench itself is run by hand, not by tests)."""

from __future__ import annotations

from typing import Any

import pytest
from celery import signals

import orchestrator.correlation  # noqa: F401  (connects the hook the plain side must not pay)
from bench.side import without_publish_hooks


def test_plain_side_publishes_without_hooks_other_apps_connected() -> None:
    calls: list[str] = []

    def record(sender: str | None = None, **_: Any) -> None:
        calls.append(str(sender))

    signals.before_task_publish.connect(record, weak=False)
    try:
        assert signals.before_task_publish.receivers
        with without_publish_hooks():
            signals.before_task_publish.send(sender="plain", headers={})
            signals.after_task_publish.send(sender="plain", headers={})
        signals.before_task_publish.send(sender="orchestrator", headers={})
        assert calls == ["orchestrator"]

        with pytest.raises(RuntimeError), without_publish_hooks():
            raise RuntimeError("a failed publish turn")
        signals.before_task_publish.send(sender="again", headers={})
        assert calls == ["orchestrator", "again"]
    finally:
        signals.before_task_publish.disconnect(record)


def test_the_events_cost_is_the_per_round_ratio_with_over_without() -> None:
    from bench.report import WITHOUT_EVENTS, cost_rows
    from bench.runner import BrokerRecord, ScenarioRecord

    throughput = ScenarioRecord(rounds=[
        {"plain": {"drain_per_s": 100.0}, "orchestrator": {"drain_per_s": 90.0},
         WITHOUT_EVENTS: {"drain_per_s": 100.0}},
        {"plain": {"drain_per_s": 100.0}, "orchestrator": {"drain_per_s": 50.0},
         WITHOUT_EVENTS: {"drain_per_s": 50.0}},
        {"plain": {"drain_per_s": 100.0}, "orchestrator": {"drain_per_s": 80.0},
         WITHOUT_EVENTS: {"drain_per_s": 100.0}},
    ])
    broker = BrokerRecord("amqp", "amqp://", None, {"throughput": throughput,
                                                    "latency": ScenarioRecord()})
    [row] = cost_rows(broker)
    assert (row.metric, row.without_events, row.with_events) == ("drain/s", 100.0, 80.0)
    assert row.ratio == 0.9  # the median of 0.9, 1.0 and 0.8

    throughput.rounds[0]["event-publish"] = {"event_us": 500.0}  # 0.5 ms; 2 / 90 s a task
    probe, share, _ = cost_rows(broker)
    assert probe.with_events == 500.0
    assert share.ratio == pytest.approx(0.0005 * 90 / 2)
