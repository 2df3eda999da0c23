"""``orchestrator metrics`` scraped for real: queue and DLQ depths, task outcomes."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.pipeline import run_pipeline
from tests.support.brokers import BrokerUnderTest
from tests.support.http_servers import http_server
from tests.support.net import free_port
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.broker
ORCHESTRATOR_CLI = str(Path(sys.executable).with_name("orchestrator"))



@pytest.fixture()
def metrics_url(worker: WorkerProcess, on_broker: BrokerUnderTest) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with http_server([ORCHESTRATOR_CLI, "metrics", "--port", str(port)], env=worker.env,
                     health_url=url, what="the metrics endpoint"):
        yield url


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_show_queues_dead_letters_and_task_outcomes(metrics_url: str) -> None:
    text = httpx.get(metrics_url, timeout=10).text
    assert "orchestrator_broker_up 1.0" in text
    assert sample(text, "orchestrator_queue_messages", queue="escavador_eco") is not None

    def seen_after_events() -> str | None:
        # the receiver subscribes asynchronously: keep sending until its counter moves
        run_pipeline("eco", {"metrics": True}).wait(timeout=60)
        body = httpx.get(metrics_url, timeout=10).text
        count = sample(body, "orchestrator_tasks_total", task="escavador_eco",
                       outcome="succeeded")
        return body if count and count >= 1 else None

    wait_until(seen_after_events, timeout=60, interval=0.5, message="a succeeded task counted")
    failed = run_pipeline("falha", {"mode": "final"})
    with pytest.raises(Exception, match="final failure"):
        failed.wait(timeout=60)

    def dead_letter_counted() -> bool:
        body = httpx.get(metrics_url, timeout=10).text
        value = sample(body, "orchestrator_dead_letter_messages", queue="escavador_falha")
        return value is not None and value >= 1

    wait_until(dead_letter_counted, timeout=60, message="the DLQ depth")
