"""Producers that are the brokers' own clients and import nothing of this project.

What a service in another language does: pika exactly as in the design document (default
exchange, routing key = queue, no properties), redis-py ``XADD <queue> * payload <bytes>``,
nats-py JetStream publish to ``orq.q.<queue>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import nats
import pika
import redis


def publish_with_pika(url: str, queue: str, bodies: Sequence[bytes]) -> None:
    parts = urlsplit(url)
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        host=parts.hostname, port=parts.port or 5672, virtual_host=parts.path[1:] or "/",
        credentials=pika.PlainCredentials(parts.username or "guest", parts.password or "guest")))
    channel = connection.channel()
    for body in bodies:
        channel.basic_publish(exchange="", routing_key=queue, body=body)
    connection.close()


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.replace("redis-streams://", "redis://", 1))


def publish_with_redis(url: str, queue: str, bodies: Sequence[bytes]) -> None:
    client = redis_client(url)
    for body in bodies:
        client.xadd(queue, {"payload": body})
    client.close()


def publish_with_nats(url: str, queue: str, bodies: Sequence[bytes]) -> None:
    async def publish() -> None:
        client = await nats.connect(url)
        jetstream = client.jetstream()
        for body in bodies:
            await jetstream.publish(f"orq.q.{queue}", body, headers={"Odd-Header": "ü ?"})
        await client.close()

    asyncio.run(publish())


PUBLISHERS: dict[str, Callable[[str, str, Sequence[bytes]], None]] = {
    "amqp": publish_with_pika, "redis-streams": publish_with_redis, "nats": publish_with_nats}
"""By broker name: ``PUBLISHERS[name](url, queue, bodies)``."""
