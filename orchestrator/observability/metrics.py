"""Prometheus metrics: queue depths and ages (Flower has neither, flower #1173), consumers,
dead letters by reason, task outcomes, queue waits and run times.

Two sources, both read from the broker so one exporter serves a whole deployment:

- at every scrape, per step queue and its DLQ: the depth (a passive declare, which every
  transport of this project answers), the age of the oldest message and the consumers
  (:mod:`.queue_age`, one reader per broker), and the dead letters by reason
  (:mod:`.dead_letter_census`, a bounded read of the DLQ);
- continuously, Celery's task events (the same stream Flower reads): outcomes per task, and
  per step the wait in the queue (publish, or ETA, to start; the ``task-started`` event of
  :class:`~orchestrator.step_request.StepRequest` carries the ready time) and the run time.

The metric names are a contract: ``deploy/prometheus/alerts.yml`` and the Grafana dashboard
use them, and ``tests/test_metrics_alerts.py`` checks that each one they name is exported.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from celery import Celery
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from orchestrator.observability.dead_letter_census import DeadLetterCensus
from orchestrator.observability.queue_age import (
    QueueReading,
    ReadyHeadEstimate,
    broker_kind,
    read_amqp_consumers,
    read_nats,
    read_streams,
)
from orchestrator.topology import Topology

OUTCOMES = {
    "task-succeeded": "succeeded",
    "task-failed": "failed",
    "task-retried": "retried",
    "task-rejected": "rejected",
    "task-revoked": "revoked",
}

WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                600, 1800, 3600)
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TRACKED_TASKS = 100_000
"""Tasks remembered between their events (a worker that died never sends the last one)."""


class StartLog:
    """Per step queue, the newest ready time of a message a worker started (task events);
    what bounds the oldest waiting message on RabbitMQ (:class:`.ReadyHeadEstimate`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._newest: dict[str, float] = {}

    def record(self, queue: str, ready_at: float) -> None:
        with self._lock:
            if ready_at > self._newest.get(queue, 0.0):
                self._newest[queue] = ready_at

    def newest(self, queue: str) -> float | None:
        with self._lock:
            return self._newest.get(queue)


class QueueDepthCollector(Collector):
    """Gauges computed at scrape time from the broker."""

    def __init__(self, app: Celery, topology: Topology, starts: StartLog | None = None,
                 census: DeadLetterCensus | None = None) -> None:
        self._app = app
        self._topology = topology
        self._starts = starts or StartLog()
        self._census = census or DeadLetterCensus()
        self._estimate = ReadyHeadEstimate()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily("orchestrator_queue_messages",
                                  "Messages in a step queue (RabbitMQ: ready; Streams/NATS: "
                                  "not yet acknowledged)", labels=["queue"])
        dead = GaugeMetricFamily("orchestrator_dead_letter_messages",
                                 "Messages in a step queue's dead-letter queue", labels=["queue"])
        age = GaugeMetricFamily("orchestrator_queue_oldest_message_age_seconds",
                                "Age of the oldest message orchestrator_queue_messages counts "
                                "(0 when empty; RabbitMQ: an upper bound, see README)",
                                labels=["queue"])
        dead_age = GaugeMetricFamily("orchestrator_dead_letter_oldest_message_age_seconds",
                                     "Seconds since the oldest dead letter of a step queue's "
                                     "DLQ was dead-lettered (0 when empty)", labels=["queue"])
        consumers = GaugeMetricFamily("orchestrator_queue_consumers",
                                      "Consumers of a step queue (NATS: open pull requests)",
                                      labels=["queue"])
        reasons = GaugeMetricFamily("orchestrator_dead_letters",
                                    "Dead letters in a step queue's DLQ by reason (past the "
                                    "read limit: reason=\"unread\")", labels=["queue", "reason"])
        up = GaugeMetricFamily("orchestrator_broker_up", "1 if the broker answered this scrape")
        try:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
                kind = broker_kind(connection)
                for spec in self._topology:
                    depth = _depth(connection, spec.name)
                    dead_depth = _depth(connection, spec.dlq)
                    ready.add_metric([spec.name], depth)
                    dead.add_metric([spec.name], dead_depth)
                    now = time.time()
                    reading = self._read(connection, kind, spec.name, int(depth))
                    age.add_metric([spec.name], reading.oldest_age(now))
                    if reading.consumers is not None:
                        consumers.add_metric([spec.name], reading.consumers)
                    census = self._count_dead_letters(connection, spec.dlq, int(dead_depth))
                    for reason, count in sorted(census.items()):
                        reasons.add_metric([spec.name, reason], count)
                    dead_age.add_metric([spec.name], self._dead_letter_age(
                        connection, kind, spec.dlq, int(dead_depth), now))
            up.add_metric([], 1)
        except Exception:
            up.add_metric([], 0)
        yield from (ready, dead, age, dead_age, consumers, reasons, up)

    def _read(self, connection: Any, kind: str, queue: str, depth: int) -> QueueReading:
        """The broker's reading of one queue; RabbitMQ step queues get the estimate."""
        try:
            if kind == "redis-streams":
                return read_streams(connection, queue)
            if kind == "nats":
                return read_nats(connection, queue)
            estimate = self._estimate.observe(queue, depth, self._starts.newest(queue))
            return QueueReading(estimate.oldest_at, read_amqp_consumers(connection, queue))
        except Exception:
            return QueueReading(None, None)


    def _count_dead_letters(self, connection: Any, dlq: str, depth: int) -> dict[str, int]:
        """Dead letters by reason; {} when the DLQ could not be read this time."""
        try:
            return self._census.count(connection, dlq, depth).reasons
        except Exception:
            return {}

    def _dead_letter_age(self, connection: Any, kind: str, dlq: str, depth: int,
                         now: float) -> float:
        """Seconds since the oldest dead letter died: the stream's own time on Streams and
        NATS, the dead letter's recorded death time on RabbitMQ (from the census's read)."""
        if depth <= 0:
            return 0.0
        if kind != "amqp":
            return self._read(connection, kind, dlq, depth).oldest_age(now)
        try:
            oldest = self._census.count(connection, dlq, depth).oldest_failed_at
        except Exception:
            oldest = None
        return QueueReading(oldest, None).oldest_age(now)


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
    """Counters and histograms fed by Celery's task events (a background receiver thread).

    ``orchestrator_task_runtime_seconds`` (succeeded tasks, by task) stays as it was; the
    ``orchestrator_step_*`` histograms are per step queue and task, from the events of
    :class:`~orchestrator.step_request.StepRequest`: the queue wait its ``task-started`` event
    carries (start minus ready time: the worker's clock against the producer's), the run
    time from the outcome (Celery's ``runtime`` when it succeeded, else the time between the
    started and the failed or retried event).
    """

    def __init__(self, app: Celery, registry: CollectorRegistry,
                 starts: StartLog | None = None) -> None:
        self._app = app
        self.starts = starts or StartLog()
        self.tasks = Counter("orchestrator_tasks", "Task outcomes seen in Celery's events",
                             ["task", "outcome"], registry=registry)
        self.runtime = Histogram("orchestrator_task_runtime_seconds",
                                 "Runtime of succeeded tasks", ["task"], registry=registry,
                                 buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300))
        self.queue_wait = Histogram("orchestrator_step_queue_wait_seconds",
                                    "Seconds a step's message waited from its publish (or its "
                                    "ETA) to its start", ["queue", "task"], registry=registry,
                                    buckets=WAIT_BUCKETS)
        self.run_time = Histogram("orchestrator_step_run_seconds",
                                  "Seconds a step ran, whatever its outcome", ["queue", "task"],
                                  registry=registry, buckets=RUN_BUCKETS)
        self._names: OrderedDict[str, str] = OrderedDict()
        self._started: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._stop = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="metrics-events")

    def start(self) -> TaskEventMetrics:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        receiver = self._receiver
        if receiver is not None:  # its consume loop looks at this every second
            receiver.should_stop = True

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        uuid = event.get("uuid", "")
        if kind == "task-received" and event.get("name"):
            _remember(self._names, uuid, str(event["name"]))
            return
        if kind == "task-started":
            self._on_started(uuid, event)
            return
        outcome = OUTCOMES.get(kind)
        if outcome is None:
            return
        name = self._names.pop(uuid, None) if outcome != "retried" else self._names.get(uuid)
        task = name or str(event.get("name") or "unknown")
        self.tasks.labels(task=task, outcome=outcome).inc()
        if outcome == "succeeded" and event.get("runtime") is not None:
            self.runtime.labels(task=task).observe(float(event["runtime"]))
        started = self._started.pop(uuid, None)
        if started is None or outcome in ("rejected", "revoked"):
            return
        queue, started_at = started
        if outcome == "succeeded" and event.get("runtime") is not None:
            ran = float(event["runtime"])
        else:
            ran = float(event.get("timestamp") or started_at) - started_at
        self.run_time.labels(queue=queue, task=task).observe(max(ran, 0.0))

    def _on_started(self, uuid: str, event: dict[str, Any]) -> None:
        queue = event.get("queue")
        if not queue:  # not a step (Celery's own tasks): no queue wait to speak of
            return
        started_at = float(event.get("timestamp") or time.time())
        _remember(self._started, uuid, (str(queue), started_at))
        if event.get("queue_wait") is not None:
            task = self._names.get(uuid) or str(queue)
            self.queue_wait.labels(queue=queue, task=task).observe(float(event["queue_wait"]))
        if event.get("ready_at") is not None:
            self.starts.record(str(queue), float(event["ready_at"]))

    def _run(self) -> None:
        """Capture events until stopped. Without a timeout: Kombu's consume loop raises after
        ``timeout`` seconds without an event, and each reconnect (a new auto-delete event
        queue) lost every event sent in between, which a quiet deployment's next step is."""
        while not self._stop.is_set():
            try:
                with self._app.connection() as connection:
                    receiver = self._app.events.Receiver(connection,
                                                         handlers={"*": self.on_event})
                    self._receiver = receiver
                    if self._stop.is_set():
                        return
                    receiver.capture(limit=None, timeout=None, wakeup=False)
            except Exception:
                if self._stop.wait(2.0):
                    return


def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
    """Keep ``value`` under ``key``, forgetting the oldest entries past TRACKED_TASKS."""
    table[key] = value
    while len(table) > TRACKED_TASKS:
        table.popitem(last=False)
