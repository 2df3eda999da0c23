"""The baseline: a plain Celery app with the orchestrator's base settings and no layer on top.

Same as ``celeryconfig.py``: JSON only, ``acks_late``, requeue on a lost worker, prefetch 1,
publisher confirms, the same time limits, a Redis result backend, and worker task events for
Flower (unless ``--no-plain-events``). Not here (the orchestrator's layer, whose cost is what
the bench measures): the message gate, envelopes, the correlation header, idempotency, quorum
queues with dead-lettering, and what the orchestrator does differently with the same settings
(its result backend, events published without waiting for confirms).

It must not import the orchestrator. Exception: a broker URL whose transport is not one of
Kombu's (``redis-streams://``, ``nats://``) needs this project's transports registered, and
importing ``orchestrator.transports`` does only that (the package loads its app lazily).
"""

from __future__ import annotations

import importlib
import os
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES

from bench import accounting
from bench.config import (
    DEFAULT_REDIS_URL,
    ENV_BROKER,
    ENV_PLAIN_EVENTS,
    ENV_PLAIN_QUORUM,
    ENV_REDIS,
    RESULT_TTL,
    SOFT_TIME_LIMIT,
    TIME_LIMIT,
    prefetch_multiplier,
)

QUEUE = "bench_plain"
TASK = "bench_plain.noop"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


def work_queue() -> Queue:
    """A classic durable queue (the orchestrator's are quorum queues: part of its layer);
    a quorum queue with ``--plain-quorum``, to take the queue type out of the comparison."""
    quorum = os.environ.get(ENV_PLAIN_QUORUM, "0") == "1"
    return Queue(QUEUE, Exchange(QUEUE, type="direct", durable=True), routing_key=QUEUE,
                 durable=True, queue_arguments={"x-queue-type": "quorum"} if quorum else None)


def register_project_transport(url: str) -> None:
    """Make ``redis-streams://`` and ``nats://`` resolvable when Kombu does not know them."""
    scheme = urlsplit(url).scheme
    if scheme and scheme not in TRANSPORT_ALIASES:
        importlib.import_module("orchestrator.transports")


def settings(broker_url: str, redis_url: str, task_events: bool) -> dict[str, Any]:
    """The Celery configuration of the baseline."""
    conf: dict[str, Any] = {
        "broker_url": broker_url,
        "result_backend": redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_acks_on_failure": False,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": prefetch_multiplier(),
        "broker_transport_options": {"confirm_publish": True},
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5.0,
        "task_soft_time_limit": SOFT_TIME_LIMIT,
        "task_time_limit": TIME_LIMIT,
        "result_expires": RESULT_TTL,
        "task_queues": (work_queue(),),
        "task_default_queue": QUEUE,
        "task_default_exchange": QUEUE,
        "task_default_exchange_type": "direct",
        "task_default_routing_key": QUEUE,
    }
    if task_events:  # what the orchestrator's celeryconfig sends for Flower, nothing more
        conf["worker_send_task_events"] = True
    return conf


_broker_url = os.environ.get(ENV_BROKER, DEFAULT_BROKER_URL)
register_project_transport(_broker_url)

app = Celery("bench_plain")
app.conf.update(settings(
    _broker_url,
    os.environ.get(ENV_REDIS, DEFAULT_REDIS_URL),
    os.environ.get(ENV_PLAIN_EVENTS, "0") == "1",
))


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def noop(data: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Do nothing but the accounting; a chord body reports how many results it got."""
    if isinstance(data, list):
        return {"inputs": len(data)}
    if isinstance(data, dict):
        return accounting.record(data)
    return {}
