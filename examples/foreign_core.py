"""The design's orchestrator core, written with plain broker clients only (no Celery, nothing of
this project): what a service in another language does, line for line.

    python examples/foreign_core.py --broker-url amqp://guest:guest@127.0.0.1:5672//
    python examples/foreign_core.py --broker-url redis-streams://127.0.0.1:6379/0
    python examples/foreign_core.py --broker-url nats://127.0.0.1:4222

One conversation of the design document, with workers of this project running:

1. subscribe to the events (``resultado_coleta``, ``resultado_execucao``, ``dead_letter``);
2. publish ``iniciar_coleta`` to the queue ``escavador_youtube``;
3. read the ``resultado_coleta`` with our correlation id;
4. publish ``iniciar_execucao`` (built from the collection) to ``executador_arquivo``;
5. read the ``resultado_execucao``; a ``dead_letter`` event for our correlation id ends it.

It prints the conversation as JSON lines and exits 0, or 1 with the reason (a dead letter,
a timeout). Needs ``pika``, ``redis`` or ``nats-py``, whichever the broker is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

EVENTS_EXCHANGE = "orchestrator.events"  # RabbitMQ: topic exchange, key <tipo_evento>.<queue>
EVENT_STREAM_PREFIX = "orchestrator.events."  # Redis: one stream per tipo_evento
EVENT_SUBJECT_PREFIX = "orq.events."  # NATS: orq.events.<tipo_evento>.<queue>
QUEUE_SUBJECT_PREFIX = "orq.q."  # NATS: a step queue's subject
TOPICS = ("resultado_coleta", "resultado_execucao", "dead_letter")


def envelope(tipo_evento: str, payload: dict[str, Any], correlation_id: str) -> dict[str, Any]:
    """The design document's envelope."""
    return {"correlation_id": correlation_id, "tipo_evento": tipo_evento, "payload": payload,
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


class Wire(Protocol):
    """Publish to a step queue; read the next event of a topic for a correlation id."""

    def publish(self, queue: str, message: dict[str, Any]) -> None: ...

    def next_event(self, topics: tuple[str, ...], correlation_id: str,
                   timeout: float) -> tuple[str, dict[str, Any], dict[str, str]]: ...

    def close(self) -> None: ...


class RabbitWire:
    """pika: an exclusive queue of our own bound to the events exchange, made before we
    publish, so no event of our conversation can pass before we listen."""

    def __init__(self, url: str) -> None:
        import pika

        parts = urlsplit(url)
        self.connection = pika.BlockingConnection(pika.ConnectionParameters(
            host=parts.hostname, port=parts.port or 5672,
            virtual_host=parts.path[1:] or "/",
            credentials=pika.PlainCredentials(parts.username or "guest",
                                              parts.password or "guest")))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
        self.queue = self.channel.queue_declare("", exclusive=True,
                                                arguments={"x-max-length": 10_000}
                                                ).method.queue
        for topic in TOPICS:
            self.channel.queue_bind(self.queue, EVENTS_EXCHANGE, routing_key=f"{topic}.*")

    def publish(self, queue: str, message: dict[str, Any]) -> None:
        # The design document's producer, as written.
        self.channel.basic_publish(exchange="", routing_key=queue, body=json.dumps(message))

    def next_event(self, topics: tuple[str, ...], correlation_id: str,
                   timeout: float) -> tuple[str, dict[str, Any], dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                self.connection.sleep(0.05)
                continue
            topic = method.routing_key.split(".", 1)[0]
            event = json.loads(body)
            if topic in topics and event.get("correlation_id") == correlation_id:
                return topic, event, {k: str(v) for k, v in (properties.headers or {}).items()}
        raise TimeoutError(f"no {'/'.join(topics)} event for {correlation_id} in {timeout}s")

    def close(self) -> None:
        self.connection.close()


class RedisWire:
    """redis-py: ``XADD <queue> * payload <envelope>``; ``XREAD`` on the event streams from
    their last entry before we publish."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url.replace("-streams://", "://", 1))
        self.positions = {}
        for topic in TOPICS:
            last = self.client.xrevrange(EVENT_STREAM_PREFIX + topic, count=1)
            self.positions[EVENT_STREAM_PREFIX + topic] = last[0][0] if last else "0-0"

    def publish(self, queue: str, message: dict[str, Any]) -> None:
        self.client.xadd(queue, {"payload": json.dumps(message)})

    def next_event(self, topics: tuple[str, ...], correlation_id: str,
                   timeout: float) -> tuple[str, dict[str, Any], dict[str, str]]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            replies = self.client.xread(self.positions, block=max(int(left * 1000), 1))
            for stream, entries in replies or []:
                key = stream.decode()
                for entry_id, fields in entries:
                    self.positions[key] = entry_id
                    topic = key[len(EVENT_STREAM_PREFIX):]
                    event = json.loads(fields[b"payload"])
                    if topic in topics and event.get("correlation_id") == correlation_id:
                        return topic, event, {k.decode(): v.decode()
                                              for k, v in fields.items() if k != b"payload"}
        raise TimeoutError(f"no {'/'.join(topics)} event for {correlation_id} in {timeout}s")

    def close(self) -> None:
        self.client.close()


class NatsWire:
    """nats-py: JetStream publish to ``orq.q.<queue>``; an ordered consumer of our own on the
    event subjects, delivering only what is published from now on."""

    def __init__(self, url: str) -> None:
        import nats
        from nats.js.api import DeliverPolicy

        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(nats.connect(url))
        self.jetstream = self.client.jetstream()
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        try:
            self.subscriptions = [
                self.loop.run_until_complete(self.jetstream.subscribe(
                    f"{EVENT_SUBJECT_PREFIX}{topic}.*", ordered_consumer=True,
                    deliver_policy=DeliverPolicy.NEW, cb=self.inbox.put))
                for topic in TOPICS]
        except Exception as exc:
            self.loop.run_until_complete(self.client.close())
            raise SystemExit(f"foreign_core: cannot subscribe to {EVENT_SUBJECT_PREFIX}> "
                             f"({type(exc).__name__}: {exc}); a worker declares the "
                             "events stream when it starts") from None

    def publish(self, queue: str, message: dict[str, Any]) -> None:
        self.loop.run_until_complete(self.jetstream.publish(
            QUEUE_SUBJECT_PREFIX + queue, json.dumps(message).encode()))

    def next_event(self, topics: tuple[str, ...], correlation_id: str,
                   timeout: float) -> tuple[str, dict[str, Any], dict[str, str]]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.loop.run_until_complete(asyncio.wait_for(self.inbox.get(), left))
            except TimeoutError:
                break
            topic = msg.subject[len(EVENT_SUBJECT_PREFIX):].split(".", 1)[0]
            event = json.loads(msg.data)
            if topic in topics and event.get("correlation_id") == correlation_id:
                return topic, event, dict(msg.headers or {})
        raise TimeoutError(f"no {'/'.join(topics)} event for {correlation_id} in {timeout}s")

    def close(self) -> None:
        async def finish() -> None:
            for subscription in self.subscriptions:
                await subscription.unsubscribe()
            await self.client.close()
            current = asyncio.current_task()
            rest = [task for task in asyncio.all_tasks() if task is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.loop.run_until_complete(finish())
        self.loop.close()


def open_wire(url: str) -> Wire:
    """The plain client of the broker ``url`` names."""
    scheme = url.split("://", 1)[0]
    if scheme in ("amqp", "amqps", "pyamqp"):
        return RabbitWire(url)
    if scheme in ("redis-streams", "rediss-streams", "redis", "rediss"):
        return RedisWire(url)
    if scheme in ("nats", "tls"):
        return NatsWire(url)
    raise SystemExit(f"foreign_core: unsupported broker URL scheme {scheme!r}")


def converse(wire: Wire, channel_id: str, timeout: float) -> list[dict[str, Any]]:
    """The design's conversation; returns what was sent and received, in order."""
    correlation_id = str(uuid.uuid4())
    said: list[dict[str, Any]] = []

    def step(queue: str, message: dict[str, Any], expected: str) -> dict[str, Any]:
        wire.publish(queue, message)
        said.append({"sent": queue, "envelope": message})
        topic, event, headers = wire.next_event((expected, "dead_letter"), correlation_id,
                                                timeout)
        said.append({"received": topic, "event": event, "headers": headers})
        if topic == "dead_letter":
            raise RuntimeError(f"{event['queue']} dead-lettered our request: "
                               f"{event['reason']}: {event['exception_message']}")
        return event

    collected = step("escavador_youtube",
                     envelope("iniciar_coleta", {"channel_id": channel_id}, correlation_id),
                     "resultado_coleta")
    items = collected["payload"].get("items", [])
    step("executador_arquivo",
         envelope("iniciar_execucao",
                  {"fonte": "youtube", "videos": [item.get("id") for item in items]},
                  correlation_id),
         "resultado_execucao")
    return said


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--channel-id", default="UCabcdefghijklmnopqrstuv")
    parser.add_argument("--timeout", type=float, default=60.0)
    options = parser.parse_args(argv)
    wire = open_wire(options.broker_url)
    try:
        for line in converse(wire, options.channel_id, options.timeout):
            print(json.dumps(line, ensure_ascii=False), flush=True)
    except (RuntimeError, TimeoutError) as exc:
        print(f"foreign_core: {exc}", file=sys.stderr)
        return 1
    finally:
        wire.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
