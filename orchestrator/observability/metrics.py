"""Prometheus metrics: queue depths (Flower has none, flower #1173), dead letters, task outcomes.

Two sources, both read from the broker so one exporter serves a whole deployment:

- at every scrape, the depth of each step queue and of its DLQ (a passive declare per queue,
  which every transport of this project answers);
- continuously, Celery's task events (the same stream Flower reads), counted per task and
  outcome, with a runtime histogram.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from celery import Celery
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from orchestrator.topology import Topology

OUTCOMES = {
    "task-succeeded": "succeeded",
    "task-failed": "failed",
    "task-retried": "retried",
    "task-rejected": "rejected",
    "task-revoked": "revoked",
}


class QueueDepthCollector(Collector):
    """Gauges computed at scrape time from the broker."""

    def __init__(self, app: Celery, topology: Topology) -> None:
        self._app = app
        self._topology = topology

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily("orchestrator_queue_messages",
                                  "Messages in a step queue (RabbitMQ: ready; Streams/NATS: "
                                  "not yet acknowledged)", labels=["queue"])
        dead = GaugeMetricFamily("orchestrator_dead_letter_messages",
                                 "Messages in a step queue's dead-letter queue", labels=["queue"])
        up = GaugeMetricFamily("orchestrator_broker_up", "1 if the broker answered this scrape")
        try:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
                for spec in self._topology:
                    ready.add_metric([spec.name], _depth(connection, spec.name))
                    dead.add_metric([spec.name], _depth(connection, spec.dlq))
            up.add_metric([], 1)
        except Exception:
            up.add_metric([], 0)
        yield ready
        yield dead
        yield up


def _depth(connection: Any, queue: str) -> float:
    channel = connection.channel()
    try:
        return float(channel.queue_declare(queue=queue, passive=True).message_count)
    except Exception:
        return 0.0
    finally:
        with contextlib.suppress(Exception):
            channel.close()


class TaskEventMetrics:
    """Counters fed by Celery's task events (a background receiver thread)."""

    def __init__(self, app: Celery, registry: CollectorRegistry) -> None:
        self._app = app
        self.tasks = Counter("orchestrator_tasks", "Task outcomes seen in Celery's events",
                             ["task", "outcome"], registry=registry)
        self.runtime = Histogram("orchestrator_task_runtime_seconds",
                                 "Runtime of succeeded tasks", ["task"], registry=registry,
                                 buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300))
        self._names: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="metrics-events")

    def start(self) -> TaskEventMetrics:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        uuid = event.get("uuid", "")
        if kind == "task-received" and event.get("name"):
            self._names[uuid] = str(event["name"])
            return
        outcome = OUTCOMES.get(kind)
        if outcome is None:
            return
        name = self._names.pop(uuid, None) if outcome != "retried" else self._names.get(uuid)
        task = name or str(event.get("name") or "unknown")
        self.tasks.labels(task=task, outcome=outcome).inc()
        if outcome == "succeeded" and event.get("runtime") is not None:
            self.runtime.labels(task=task).observe(float(event["runtime"]))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._app.connection() as connection:
                    receiver = self._app.events.Receiver(connection,
                                                         handlers={"*": self.on_event})
                    for _ in receiver.itercapture(limit=None, timeout=1.0, wakeup=False):
                        if self._stop.is_set():
                            return
            except Exception:
                if self._stop.wait(2.0):
                    return
