"""Queue topology: one work queue per step, each with its own dead-letter exchange and queue.

Names are the contract other services rely on: ``escavador_<fonte>`` and
``executador_<nome>`` for work, ``<queue>.dlx`` for the dead-letter exchange configured on the
queue, ``<queue>.dlq`` for the dead letters. On RabbitMQ the work queues are quorum queues
with a delivery limit (a message that keeps killing its worker is dead-lettered by the broker
instead of looping forever). They hang off one *topic* exchange because Celery's native delayed
delivery (used for retry countdowns on quorum queues) cannot route through direct exchanges.

Kombu's virtual transports (Redis, Redis Streams, NATS) route in the publisher, reading the
exchange's binding table first; there a step is published through the anonymous exchange
straight to its queue (:func:`routes_through_exchange`), which reaches the same queue, since a
work queue is bound by its own name only. An extra queue bound to ``orchestrator`` by an
operator therefore gets copies on RabbitMQ only.

The DLQs are *classic* queues on RabbitMQ: operators read them by taking messages and
returning them, which a classic queue does without side effects (a returned message goes back
where it was; no delivery is counted), where a quorum queue counts each read as a delivery
and, on RabbitMQ 4, drops the message after its default delivery limit of 20.

Queue arguments are immutable on RabbitMQ: changing ``delivery_limit`` for an existing queue
fails with PRECONDITION_FAILED. :func:`declare` turns that into an error that says so, except
for a DLQ declared by an earlier version with other arguments (a quorum DLQ): that one is used
as it is, with a warning saying how to move it to the new arguments.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from orchestrator.app_broker import broker_scheme
from orchestrator.transports.dead_lettering import DeadLetterRoute

WORK_EXCHANGE = "orchestrator"
DLQ_SUFFIX = ".dlq"
DLX_SUFFIX = ".dlx"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*\Z")  # \Z: "$" also matches before "\n"

StepKind = Literal["escavador", "executador"]

logger = logging.getLogger("orchestrator.topology")

SERVER_ROUTED_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})
"""Broker URL schemes whose broker routes through exchanges itself (RabbitMQ)."""


class TopologyError(RuntimeError):
    """The broker refused the topology (e.g. an existing queue with other arguments)."""


def queue_name(kind: StepKind, name: str) -> str:
    """``escavador_<fonte>`` or ``executador_<nome>``; refuses names a broker would mangle."""
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{kind} name {name!r}: use lower-case letters, digits, '_' or '-' only"
        )
    return f"{kind}_{name}"


def routes_through_exchange(broker_url: Any) -> bool:
    """Whether steps are published through the ``orchestrator`` exchange on this broker.

    True on RabbitMQ, whose native delayed delivery (retry countdowns on quorum queues)
    needs a topic exchange. False on the virtual transports, where the exchange costs a
    binding-table read per publish (a round trip on Kombu's stock Redis transport) and
    delayed delivery does not exist.
    """
    first = broker_url[0] if isinstance(broker_url, list | tuple) else broker_url
    return _routes_through_exchange(str(first or "amqp"))


@functools.lru_cache(maxsize=64)
def _routes_through_exchange(url: str) -> bool:
    """Per URL, parsed once: the router asks on every publish."""
    return broker_scheme(url) in SERVER_ROUTED_SCHEMES


def dlq_name(queue: str) -> str:
    """The dead-letter queue of ``queue``."""
    return queue + DLQ_SUFFIX


def dlx_name(queue: str) -> str:
    """The dead-letter exchange configured on ``queue``."""
    return queue + DLX_SUFFIX


def is_dead_letter_queue(queue: str) -> bool:
    """True for a ``<queue>.dlq`` name."""
    return queue.endswith(DLQ_SUFFIX)


def original_queue(dead_letter_queue: str) -> str:
    """The work queue a DLQ belongs to."""
    if not is_dead_letter_queue(dead_letter_queue):
        raise ValueError(f"{dead_letter_queue!r} is not a dead-letter queue")
    return dead_letter_queue[: -len(DLQ_SUFFIX)]


work_exchange = Exchange(WORK_EXCHANGE, type="topic", durable=True)


@dataclass(frozen=True)
class QueueSpec:
    """One step's queue and its dead-letter pair."""

    name: str
    kind: StepKind
    delivery_limit: int

    @property
    def dlq(self) -> str:
        return dlq_name(self.name)

    @property
    def dlx(self) -> str:
        return dlx_name(self.name)

    def queue_arguments(self) -> dict[str, Any]:
        """Broker arguments of the work queue (RabbitMQ reads them; other transports too)."""
        route = DeadLetterRoute(exchange=self.dlx, routing_key=self.dlq,
                                delivery_limit=self.delivery_limit)
        return {"x-queue-type": "quorum", **route.arguments()}

    def work_queue(self) -> Queue:
        """The Kombu queue workers consume; routed by its own name only."""
        return Queue(
            self.name,
            exchange=work_exchange,
            routing_key=self.name,
            durable=True,
            queue_arguments=self.queue_arguments(),
        )

    def dead_letter_exchange(self) -> Exchange:
        return Exchange(self.dlx, type="direct", durable=True)

    def dead_letter_queue(self) -> Queue:
        """The DLQ: a plain durable queue, never listed in ``task_queues``."""
        return Queue(
            self.dlq,
            exchange=self.dead_letter_exchange(),
            routing_key=self.dlq,
            durable=True,
            queue_arguments={"x-queue-type": "classic"},
        )


class Topology:
    """All step queues known to this process, in declaration order."""

    def __init__(self) -> None:
        self._queues: dict[str, QueueSpec] = {}

    def add(self, spec: QueueSpec) -> QueueSpec:
        existing = self._queues.get(spec.name)
        if existing is not None and existing != spec:
            raise ValueError(f"queue {spec.name!r} declared twice with different settings")
        self._queues[spec.name] = spec
        return spec

    def __iter__(self) -> Iterator[QueueSpec]:
        return iter(list(self._queues.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._queues

    def get(self, name: str) -> QueueSpec:
        try:
            return self._queues[name]
        except KeyError:
            raise KeyError(f"unknown queue {name!r}; known: {', '.join(self._queues)}") from None

    def names(self) -> list[str]:
        return list(self._queues)

    def work_queues(self) -> list[Queue]:
        """What ``task_queues`` lists: work queues only, so no worker eats dead letters."""
        return [spec.work_queue() for spec in self._queues.values()]

    def declare(self, connection: Connection) -> list[str]:
        """Declare every exchange and queue idempotently; returns the names declared."""
        declared: list[str] = []
        channel = connection.channel()
        try:
            for spec in self._queues.values():
                for entity in (spec.dead_letter_exchange(), spec.dead_letter_queue(),
                               spec.work_queue()):
                    try:
                        entity.bind(channel).declare()
                    except Exception as exc:
                        if not (entity.name == spec.dlq and _inequivalent(exc)):
                            raise _explain_declare_error(entity, exc) from exc
                        _close_quietly(channel)  # the refusal closed it on the broker
                        _keep_existing_dlq(connection, spec.dead_letter_queue(), exc)
                        channel = connection.channel()
                    declared.append(entity.name)
        finally:
            _close_quietly(channel)
        return declared


def _keep_existing_dlq(connection: Connection, queue: Queue, exc: Exception) -> None:
    """An existing DLQ with other arguments keeps its dead letters: use it as it is."""
    channel = connection.channel()
    try:
        queue.bind(channel).queue_declare(passive=True)
        queue.bind(channel).bind_to(queue.exchange.name, routing_key=queue.routing_key)
    finally:
        _close_quietly(channel)
    logger.warning(
        "dead-letter queue %r exists with other arguments (%s); using it as it is. A quorum "
        "DLQ counts every listing as a delivery (RabbitMQ 4 drops a message after 20): "
        "replay or purge it, delete it, and the next worker start declares it classic.",
        queue.name, exc)


def _inequivalent(exc: Exception) -> bool:
    text = str(exc)
    return "PRECONDITION_FAILED" in text or "inequivalent arg" in text


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # a refused declare already closed it on the broker's side
        return


def _explain_declare_error(entity: Queue | Exchange, exc: Exception) -> TopologyError:
    text = str(exc)
    if _inequivalent(exc):
        return TopologyError(
            f"{entity.name!r} already exists on the broker with other arguments ({text}). "
            "Queue arguments cannot change in place: drain and delete the queue, or change "
            "the limit with a broker policy (see README, 'Changing the topology')."
        )
    return TopologyError(f"declaring {entity.name!r} failed: {text}")


topology = Topology()
"""The process-wide topology, filled by the ``@escavador``/``@executador`` decorators."""
