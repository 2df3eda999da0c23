"""The shipped alert rules and Grafana dashboard: every expression parses as PromQL (the
``promql-parser`` package, a port of Prometheus's own parser), the rule file has the shape
Prometheus loads, and every metric they name is exported by a running ``orchestrator
metrics``, scraped over HTTP on each broker after a step ran and a dead letter exists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.pipeline import run_pipeline
from tests.support.brokers import BrokerUnderTest
from tests.support.scrape import metrics_endpoint, samples, scrape
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

promql = pytest.importorskip("promql_parser", reason="in the dev extra: pip install -e '.[dev]'")
yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "orchestrator.json"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$queue": ".*"}
DURATION_RE = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        query = variable["query"]["query"]
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
        found.append(match.group(1) if match else query)  # label_values(): Grafana's own
    return found


def as_promql(expression: str) -> Any:
    for variable, stand_in in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, stand_in)
    return promql.parse(expression)


def metric_names(expression: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector) and node.name:
            names.add(node.name)

    promql.walk(as_promql(expression), visit)
    return names


def used_metrics() -> set[str]:
    expressions = [rule["expr"] for rule in rules()] + dashboard_expressions()
    return {name for expression in expressions for name in metric_names(expression)}


def test_the_alert_rules_have_the_shape_prometheus_loads() -> None:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names)), f"duplicate group names: {names}"
    alerts = {rule["alert"] for rule in rules()}
    assert {"OrchestratorDeadLettersGrowing", "OrchestratorOldestMessageTooOld",
            "OrchestratorQueueWithoutConsumer"} <= alerts
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations",
                             "keep_firing_for"}, rule
        assert DURATION_RE.match(str(rule.get("for", "0s"))), rule["for"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        as_promql(rule["expr"])  # raises on a syntax error


def test_every_dashboard_expression_parses() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    for expression in expressions:
        as_promql(expression)


def test_the_parser_refuses_a_broken_expression() -> None:
    with pytest.raises(Exception):  # noqa: B017  (whatever the parser raises)
        as_promql("sum by (queue (orchestrator_queue_messages)")
    assert metric_names("rate(a_total[5m]) / on (queue) b") == {"a_total", "b"}


@pytest.fixture()
def metrics_url(worker: WorkerProcess, on_broker: BrokerUnderTest) -> Iterator[str]:
    with metrics_endpoint(worker.env) as url:
        yield url


@pytest.mark.broker
def test_every_metric_the_rules_and_dashboard_use_is_exported(metrics_url: str) -> None:
    failed = run_pipeline("falha", {"mode": "final"})
    with pytest.raises(Exception):  # noqa: B017  (the step's own failure, re-raised)
        failed.wait(timeout=60)
    needed = used_metrics()
    assert {"orchestrator_queue_oldest_message_age_seconds", "orchestrator_queue_consumers",
            "orchestrator_dead_letters", "orchestrator_step_queue_wait_seconds_count"} <= needed

    absent: set[str] = set()

    def all_there() -> bool:
        run_pipeline("eco", {"alerts": True}).wait(timeout=60)
        exported = {name for name, _, _ in samples(scrape(metrics_url))}
        absent.clear()
        absent.update(needed - exported)
        return not absent

    try:
        wait_until(all_there, timeout=60, interval=0.5, message="every metric with a sample")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: never exported {sorted(absent)}") from None
    assert dlq.counts("falha")  # the DLQ the dead-letter metrics were read from exists
