"""No bytes can stop a worker: whatever a plain client puts on a step queue ends in its DLQ.

The producers here are the brokers' own clients (pika, redis-py, nats-py) and import nothing
of this project: that is how a stray message arrives in production. Each message must be in
``escavador_eco.dlq`` within one delivery, with a reason and its original bytes, and the
worker must go on serving.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import nats
import pika
import pytest
import redis

from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.pipeline import run_pipeline
from tests.support.brokers import BrokerUnderTest
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.broker

QUEUE = "escavador_eco"
JUNK = [b"hello, not json", b"[1, 2]", b"42", b"", b"\xff\xfe\x00 binary",
        b'{"correlation_id": "not kombu"}', b'{"body": "abc', b'{"body": "!!", "properties": '
        b'{"body_encoding": "base64"}}', b'{"body": "e30=", "properties": []}']


def publish_with_pika(url: str, bodies: list[bytes]) -> None:
    """The design document's producer: the default exchange, no properties at all."""
    parts = urlsplit(url)
    parameters = pika.ConnectionParameters(
        host=parts.hostname, port=parts.port or 5672, virtual_host=parts.path[1:] or "/",
        credentials=pika.PlainCredentials(parts.username or "guest", parts.password or "guest"))
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    for body in bodies:
        channel.basic_publish(exchange="", routing_key=QUEUE, body=body)
    connection.close()


def publish_with_redis(url: str, bodies: list[bytes]) -> None:
    client = redis.Redis.from_url(url.replace("redis-streams://", "redis://"))
    for body in bodies:
        client.xadd(QUEUE, {"payload": body})
    client.xadd(QUEUE, {"data": b"an entry without the payload field"})
    client.close()


def publish_with_nats(url: str, bodies: list[bytes]) -> None:
    async def publish() -> None:
        client = await nats.connect(url)
        jetstream = client.jetstream()
        for body in bodies:
            await jetstream.publish(f"orq.q.{QUEUE}", body, headers={"Odd-Header": "ü ?"})
        await client.close()

    asyncio.run(publish())


PUBLISHERS: dict[str, Callable[[str, list[bytes]], None]] = {
    "amqp": publish_with_pika, "redis-streams": publish_with_redis, "nats": publish_with_nats}


def test_junk_on_a_step_queue_ends_in_its_dlq_and_the_worker_keeps_serving(
    worker: WorkerProcess, on_broker: BrokerUnderTest
) -> None:
    marker = uuid.uuid4().hex.encode()
    bodies = [body + b" " + marker if body.startswith(b"hello") else body for body in JUNK]
    before = {letter.fingerprint for letter in dlq.list_dead_letters(QUEUE)}
    PUBLISHERS[on_broker.name](on_broker.url, bodies)
    expected = len(bodies) + (1 if on_broker.name == "redis-streams" else 0)

    def new_letters() -> list[dlq.DeadLetter]:
        return [letter for letter in dlq.list_dead_letters(QUEUE)
                if letter.fingerprint not in before]

    letters = wait_until(lambda: (found := new_letters()) and len(found) >= expected and found,
                         timeout=60, message=f"{expected} dead letters")
    assert worker.alive
    assert sorted(letter.body for letter in letters if letter.body in bodies) == sorted(bodies)
    for letter in letters:
        assert letter.details["reason"] in ("malformed_body", "content_type_refused",
                                            "not_a_task"), letter.details
        assert letter.details["exception_message"], "the reason says what was wrong"
        shown = letter.full()  # what `orchestrator dlq show` prints
        json.dumps(shown, default=str)
    handle = run_pipeline("eco", {"after": "junk"}, execute=["eco"])
    [final] = handle.wait(timeout=60)
    assert str(final.correlation_id) == handle.correlation_id
    assert worker.alive
