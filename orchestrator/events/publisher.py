"""Publishing events from a worker process: a connection of its own, and never a failed step.

The guarantee, on every broker: a step's event is handed to this process's publisher after
the step's result was stored and before its message is acknowledged, and sent from the
publisher's thread within ``ORCHESTRATOR_EVENTS_FLUSH_INTERVAL`` (see :class:`EventPublisher`).
A worker that dies before the ack leaves the message unacknowledged; its redelivery returns
the stored result and publishes the same event again, with the same CloudEvents ``id``, so an
event is published *at least once* for each result while the broker stays reachable and the
process is not killed outright within the interval after the ack (a process killed with
SIGKILL, or by the hard time limit, loses the events it still held; a shutdown sends them).
By default the broker is not asked to confirm an event (``ORCHESTRATOR_EVENTS_CONFIRM`` turns
confirms on, and then each event is sent by the step itself before its ack): one in flight
when the broker connection breaks is lost, and a publication that fails is logged, tried once
more on a fresh connection, then dropped. The step itself never fails because of its event:
the step queues keep their own guarantees, and the result stays in the result backend under
its task id.

Each process (each pool child) opens its own connection on first use: a connection is not
shared across ``fork``, and the step's own producer waits for a confirm on every publish,
which an event does not need.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from celery import Celery, signals
from kombu.connection import Connection
from kombu.entity import Exchange
from kombu.messaging import Producer

from orchestrator.app_broker import broker_scheme
from orchestrator.batching import Batcher
from orchestrator.events import cloudevents, destinations
from orchestrator.events.cloudevents import Event
from orchestrator.settings import Settings, get_settings

logger = logging.getLogger("orchestrator.events")

events_exchange = Exchange(destinations.EXCHANGE, type="topic", durable=True)

AMQP_PREFIX = "cloudEvents_"
"""CloudEvents' AMQP binding: attributes are application properties with this prefix."""
HEADER_PREFIX = "ce-"
"""CloudEvents' NATS binding (and HTTP's): attributes are headers with this prefix."""


class Sink(Protocol):
    """One broker's way of declaring the event destinations and sending an event."""

    def declare(self) -> None: ...

    def send(self, event: Event) -> None: ...

    def close(self) -> None: ...


class AmqpSink:
    """RabbitMQ: the topic exchange, routing key ``<topic>.<queue>``, a persistent message."""

    def __init__(self, connection: Connection, settings: Settings) -> None:
        self._channel = connection.channel()
        self._producer = Producer(self._channel, exchange=events_exchange, auto_declare=False)

    def declare(self) -> None:
        events_exchange.bind(self._channel).declare()

    def send(self, event: Event) -> None:
        properties: dict[str, Any] = {"message_id": event.id, "type": event.attributes["type"]}
        if event.correlation_id:
            properties["correlation_id"] = event.correlation_id
        self._producer.publish(
            event.body, routing_key=destinations.routing_key(event.topic, event.queue),
            headers=event.headers(AMQP_PREFIX), content_type=cloudevents.CONTENT_TYPE,
            content_encoding="utf-8", delivery_mode=2, retry=False, **properties)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._channel.close()


class RedisSink:
    """Redis: ``XADD orchestrator.events.<topic> MAXLEN ~ N`` with the envelope in ``payload``."""

    def __init__(self, connection: Connection, settings: Settings) -> None:
        self._channel: Any = connection.default_channel
        self._max_len = settings.events_max_len
        self._wait = settings.events_confirm

    def declare(self) -> None:
        """Nothing to declare: ``XADD`` makes a stream."""

    def send(self, event: Event) -> None:
        fields = {"payload": event.body.decode("utf-8"), **event.headers(HEADER_PREFIX),
                  "content-type": cloudevents.CONTENT_TYPE}
        stream = destinations.stream_key(event.topic)
        append = getattr(self._channel, "append_capped", None)
        if append is not None:  # this project's redis-streams:// transport
            append(stream, fields, self._max_len, wait=self._wait)
            return
        with self._channel.conn_or_acquire() as client:  # Kombu's stock redis://
            client.xadd(stream, fields, maxlen=self._max_len, approximate=True)

    def close(self) -> None:
        """The channel is the connection's: closed with it."""


class NatsSink:
    """NATS: subject ``orq.events.<topic>.<queue>``, kept by the ``ORQ_EVENTS`` stream.

    Unconfirmed events handed over in a burst (the publisher's batch) reach nats-py's loop in
    one trip: the first one schedules a flush of all that are pending by the time it runs."""

    def __init__(self, connection: Connection, settings: Settings) -> None:
        connection.default_channel  # noqa: B018  (connects: the transport's loop is needed)
        self._transport = connection.transport
        self._settings = settings
        self._pending: list[tuple[str, bytes, dict[str, str]]] = []
        self._pending_lock = threading.Lock()

    def declare(self) -> None:
        self._transport.run(self._transport.declare_retained_stream(
            destinations.NATS_STREAM, destinations.NATS_SUBJECTS,
            max_msgs_per_subject=self._settings.events_max_len,
            max_age=self._settings.events_max_age))

    def send(self, event: Event) -> None:
        headers = {**event.headers(HEADER_PREFIX), "content-type": cloudevents.CONTENT_TYPE}
        subject = destinations.subject(event.topic, event.queue)
        if self._settings.events_confirm:
            self._transport.run(self._transport.publish_retained(
                subject, event.body, headers, wait=True))
            return
        with self._pending_lock:
            self._pending.append((subject, event.body, headers))
            first = len(self._pending) == 1
        if first:
            self._transport.submit(self._flush())

    async def _flush(self) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending, []
        try:
            for subject, body, headers in batch:
                await self._transport.publish_retained(subject, body, headers, wait=False)
        except Exception as exc:  # the connection broke: what is left of the batch is lost
            logger.warning("%d events were not published: %s: %s", len(batch),
                           type(exc).__name__, exc)

    def close(self) -> None:
        """Send what is still pending (the transport's loop is the connection's: closed
        with it)."""
        if self._pending:
            with contextlib.suppress(Exception):
                self._transport.run(self._flush(), timeout=5)


SINKS: Mapping[str, type[AmqpSink] | type[RedisSink] | type[NatsSink]] = {
    "amqp": AmqpSink, "amqps": AmqpSink, "pyamqp": AmqpSink,
    "redis-streams": RedisSink, "rediss-streams": RedisSink, "redis": RedisSink,
    "rediss": RedisSink, "nats": NatsSink, "tls": NatsSink,
}
"""The sink of each broker URL scheme; a broker without one has no event destinations."""


def sink_class(broker_url: Any) -> type[AmqpSink] | type[RedisSink] | type[NatsSink] | None:
    return SINKS.get(broker_scheme(broker_url))


def declare_destinations(connection: Connection, settings: Settings | None = None) -> None:
    """Declare the event destinations on ``connection``'s broker (worker start, topology)."""
    settings = settings or get_settings()
    kind = sink_class(connection.as_uri())
    if not settings.events or kind is None:
        return
    sink = kind(connection, settings)
    try:
        sink.declare()
    finally:
        sink.close()


MAX_HELD_EVENTS = 10_000
"""Events a process holds for its next batch at most: with the broker away they would
otherwise pile up in memory; later ones are dropped (and logged)."""


class EventPublisher:
    """This process's event connection and sink, made on first use and after a failure.

    Unconfirmed events are sent in batches from a thread of the publisher's own: the step's
    ``on_success`` only appends its event, and the thread sends what has gathered
    ``ORCHESTRATOR_EVENTS_FLUSH_INTERVAL`` after the first of a batch. Publishing inline
    put the event's framing (py-amqp's, redis-py's, a wakeup of nats-py's loop) between the
    step's end and its ack on every message; a pool process waiting for its next message has
    time to spare for it instead. Closing the publisher (pool-process and worker shutdown)
    sends what is held; a process killed outright loses its last interval's events. With
    ``ORCHESTRATOR_EVENTS_CONFIRM`` (or an interval of 0) each event is sent, and confirmed,
    by the caller, as before.
    """

    def __init__(self, app: Celery, settings: Settings) -> None:
        self._app = app
        self._settings = settings
        self._kind = sink_class(app.conf.broker_url)
        self._connection: Connection | None = None
        self._sink: Sink | None = None
        self._lock = threading.Lock()  # the sink: the flusher and a threads pool share it
        self._batched = not settings.events_confirm and settings.events_flush_interval > 0
        self._batch: Batcher[Event] = Batcher(
            self._send_batch, settings.events_flush_interval, max_held=MAX_HELD_EVENTS,
            name="orchestrator-events")

    @property
    def enabled(self) -> bool:
        return self._settings.events and self._kind is not None

    def publish(self, event: Event) -> bool:
        """Send ``event`` (or hold it for the next batch); False (and a warning) if it could
        not be sent, twice."""
        if not self.enabled:
            return False
        if self._batched and not self._batch.closed:
            if not self._batch.add(event):  # the broker is away: bounded
                logger.warning("event %s (%s from %s) dropped: %d events wait already",
                               event.id, event.topic, event.queue, self._batch.held())
                return False
            return True
        with self._lock:
            return self._send(event)

    def _send(self, event: Event) -> bool:
        for attempt in (1, 2):
            try:
                self._current_sink().send(event)
                return True
            except Exception as exc:  # a broken connection, a refused publish
                self._drop()
                if attempt == 2:
                    logger.warning("event %s (%s from %s) was not published: %s: %s",
                                   event.id, event.topic, event.queue,
                                   type(exc).__name__, exc)
        return False

    def flush(self) -> None:
        """Send every event held now."""
        self._batch.flush()

    def _send_batch(self, batch: list[Event]) -> None:
        with self._lock:
            for number, event in enumerate(batch):
                if not self._send(event):  # twice, on a fresh connection: give up
                    if number + 1 < len(batch):
                        logger.warning("%d more events of this batch dropped",
                                       len(batch) - number - 1)
                    return

    def _current_sink(self) -> Sink:
        if self._sink is None:
            assert self._kind is not None
            options = {**self._app.conf.broker_transport_options,
                       "confirm_publish": self._settings.events_confirm}
            self._connection = self._app.connection_for_write(transport_options=options)
            self._connection.ensure_connection(max_retries=1)
            sink = self._kind(self._connection, self._settings)
            sink.declare()
            self._sink = sink
        return self._sink

    def _drop(self) -> None:
        connection, self._connection, sink, self._sink = self._connection, None, self._sink, None
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.close()
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.release()

    def close(self) -> None:
        """Send what is held, then close the connection (later events go out one by one)."""
        self._batch.close()
        with self._lock:
            self._drop()


_publishers: dict[int, EventPublisher] = {}
_publishers_lock = threading.Lock()


def publisher(app: Celery) -> EventPublisher:
    """This process's publisher (a child forked from a parent that had one makes its own:
    the parent's sockets and threads are not the child's to use)."""
    pid = os.getpid()
    found = _publishers.get(pid)
    if found is None or found._app is not app:
        with _publishers_lock:
            found = _publishers.get(pid)
            if found is None or found._app is not app:
                found = _publishers[pid] = EventPublisher(app, get_settings())
                for other in [key for key in _publishers if key != pid]:
                    del _publishers[other]  # forgotten, not closed: they belong to a parent
    return found


def announce_result(app: Celery, queue: str, result_key: str,
                    envelope: Mapping[str, Any]) -> bool:
    """Publish the envelope a step returned as a result event (``result_key``: its
    idempotency key, which makes the event's id)."""
    events = publisher(app)
    if not events.enabled:
        return False
    return events.publish(cloudevents.result_event(queue, result_key, envelope))


def announce_dead_letter(app: Celery, details: Mapping[str, Any]) -> bool:
    """Publish the announcement that a message went to its DLQ, from its failure details."""
    events = publisher(app)
    if not events.enabled or not details.get("queue"):
        return False
    return events.publish(cloudevents.dead_letter_event(details))


def close_publisher(**_: Any) -> None:
    """Close this process's publisher, sending what it still holds (worker and pool-process
    shutdown)."""
    found = _publishers.pop(os.getpid(), None)
    if found is not None:
        found.close()


signals.worker_process_shutdown.connect(close_publisher, weak=False)
signals.worker_shutdown.connect(close_publisher, weak=False)
