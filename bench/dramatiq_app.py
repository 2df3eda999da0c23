"""The peer: Dramatiq, the fastest mainstream Python task queue, doing the bench's no-op.

Run by ``dramatiq bench.dramatiq_app``; the broker comes from ``BENCH_DRAMATIQ_BROKER``:
``amqp://`` is Dramatiq's RabbitMQ broker *with publisher confirms* (``confirm_delivery``,
off by default: compared at the orchestrator's safety), ``redis://`` its Redis broker (lists
and Lua, not Streams). No result backend: Dramatiq's users rarely run one, and the no-op
scenario reads the ledger, not results. Like the other sides, each message is recorded in
the ledger (:mod:`bench.accounting`), which is what the drain clock counts.

It must not import the orchestrator.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from bench import accounting

ENV_DRAMATIQ_BROKER = "BENCH_DRAMATIQ_BROKER"
QUEUE = "bench_dramatiq"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


def make_broker(url: str) -> dramatiq.Broker:
    """Dramatiq's broker for ``url`` (``amqp://`` or ``redis://``)."""
    if url.startswith("amqp"):
        return RabbitmqBroker(url=url, confirm_delivery=True)
    if url.startswith("redis"):
        return RedisBroker(url=url)  # type: ignore[no-untyped-call]
    raise ValueError(f"Dramatiq has no broker for {url.split('://', 1)[0]}://")


broker = make_broker(os.environ.get(ENV_DRAMATIQ_BROKER, DEFAULT_BROKER))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(payload: dict[str, Any]) -> None:
    """Do nothing but the accounting."""
    accounting.record(payload)
