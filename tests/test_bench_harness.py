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


def test_the_peers_and_the_bulk_side_take_part_only_where_they_can() -> None:
    from bench.config import SCENARIOS, WITHOUT_FAILOVER
    from bench.runner import _taking_part
    from bench.side_dramatiq import DramatiqSide, dramatiq_url

    class CelerySide:  # what the plain, orchestrator and bulk sides declare
        def __init__(self, name: str, scenarios: frozenset[str]) -> None:
            self.name = name
            self.scenarios = scenarios

    plain = CelerySide("plain", WITHOUT_FAILOVER)
    bulk = CelerySide("orchestrator-bulk", frozenset({"publish"}))
    peer = DramatiqSide("")
    orchestrator = CelerySide("orchestrator", frozenset(SCENARIOS))
    sides: Any = (plain, orchestrator, bulk, peer)
    amqp, nats = "amqp://guest:guest@127.0.0.1:5672//", "nats://127.0.0.1:4222"
    assert _taking_part(sides, "publish", amqp) == (plain, orchestrator, bulk, peer)
    assert _taking_part(sides, "throughput", amqp) == (plain, orchestrator, peer)
    assert _taking_part(sides, "threaded", amqp) == (plain, orchestrator, peer)
    assert _taking_part(sides, "latency", amqp) == (plain, orchestrator)
    assert _taking_part(sides, "throughput", nats) == (plain, orchestrator)
    assert _taking_part(sides, "failover", nats) == (orchestrator,)
    assert dramatiq_url("amqp://guest:guest@127.0.0.1:5672//") == \
        "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert dramatiq_url("redis-streams://127.0.0.1:6379/12") == "redis://127.0.0.1:6379/12"


def test_every_system_is_a_per_round_ratio_to_dramatiq() -> None:
    from bench.report import DRAMATIQ, peer_rows
    from bench.runner import BrokerRecord, ScenarioRecord

    throughput = ScenarioRecord(rounds=[
        {"plain": {"drain_per_s": 100.0}, "orchestrator": {"drain_per_s": 90.0},
         DRAMATIQ: {"drain_per_s": 400.0}},
        {"plain": {"drain_per_s": 50.0}, "orchestrator": {"drain_per_s": 40.0},
         DRAMATIQ: {"drain_per_s": 100.0}},
        {"plain": {"drain_per_s": 100.0}, "orchestrator": {"drain_per_s": 100.0},
         DRAMATIQ: {"drain_per_s": 200.0}},
    ])
    [row] = peer_rows(BrokerRecord("amqp", "amqp://", None, {"throughput": throughput}))
    assert (row.metric, row.dramatiq) == ("drain/s", 200.0)
    assert row.ratios == {"plain": 0.5, "orchestrator": 0.4}  # medians of per-round ratios
