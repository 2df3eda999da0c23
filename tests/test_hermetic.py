"""The suite passes whatever the machine's brokers hold.

A user's run with the default settings leaves queues, streams and consumers on the machine's
brokers, possibly declared with other arguments (another delivery limit: RabbitMQ then refuses
the suite's declaration with PRECONDITION_FAILED). This test plants such state where a user's
run would put it, then runs a pipeline on the suite's own broker (its own vhost, its own
servers). What it planted, and only that, it removes again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import amqp
import nats
import pytest
import redis
from nats.js import api

from orchestrator.pipeline import run_pipeline
from tests.support.brokers import MACHINE_URLS, BrokerUnderTest
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.broker

QUEUE = "escavador_eco"
CONFLICTING = {"x-queue-type": "quorum", "x-delivery-limit": 97,
               "x-dead-letter-exchange": "elsewhere.dlx"}


def plant_on_rabbitmq() -> Callable[[], None] | None:
    """``escavador_eco`` in the default vhost with other arguments."""
    connection = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                                 virtual_host="/", connect_timeout=5)
    connection.connect()
    channel = connection.channel()
    try:
        channel.queue_declare(QUEUE, durable=True, auto_delete=False, arguments=CONFLICTING)
    except amqp.exceptions.PreconditionFailed:
        connection.close()
        return None  # already there, with yet other arguments: the state we want

    def remove() -> None:
        channel.queue_delete(QUEUE)
        connection.close()

    return remove


def plant_on_redis() -> Callable[[], None] | None:
    """A stream ``escavador_eco`` in database 0 holding an entry that is not a message."""
    client = redis.Redis.from_url(MACHINE_URLS["redis-streams"].replace("redis-streams", "redis"))
    if client.exists(QUEUE):
        return None
    client.xadd(QUEUE, {"not": "a kombu message"})
    return lambda: client.delete(QUEUE)


def plant_on_nats() -> Callable[[], None] | None:
    """The JetStream stream of ``escavador_eco`` with other settings."""

    async def create() -> bool:
        client = await nats.connect(MACHINE_URLS["nats"], connect_timeout=5)
        try:
            await client.jetstream().add_stream(api.StreamConfig(
                name=QUEUE, subjects=[f"orq.q.{QUEUE}"], max_age=60.0, max_msgs=3))
            return True
        except Exception:
            return False  # exists already, whatever its settings
        finally:
            await client.close()

    async def delete() -> None:
        client = await nats.connect(MACHINE_URLS["nats"], connect_timeout=5)
        try:
            await client.jetstream().delete_stream(QUEUE)
        finally:
            await client.close()

    return (lambda: asyncio.run(delete())) if asyncio.run(create()) else None


PLANTERS = {"amqp": plant_on_rabbitmq, "redis-streams": plant_on_redis, "nats": plant_on_nats}


@pytest.fixture()
def users_leftovers(broker: BrokerUnderTest) -> Iterator[None]:
    try:
        remove = PLANTERS[broker.name]()
    except Exception as exc:  # the machine's broker itself is not there
        from tests.conftest import _unreachable

        _unreachable(f"the machine's {broker.name} broker", f"{type(exc).__name__}: {exc}")
    try:
        yield
    finally:
        if remove is not None:
            with contextlib.suppress(Exception):
                remove()


def test_a_users_leftovers_on_the_machines_broker_do_not_reach_the_suite(
    users_leftovers: None, worker: WorkerProcess, on_broker: BrokerUnderTest
) -> None:
    assert on_broker.url != MACHINE_URLS[on_broker.name]
    handle = run_pipeline("eco", {"n": 1}, execute=["eco"])
    [final] = handle.wait(timeout=60)
    assert str(final.correlation_id) == handle.correlation_id
    assert worker.alive
