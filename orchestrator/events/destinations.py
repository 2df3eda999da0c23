"""Where events go on each broker: names other services subscribe to, so they are fixed here.

Every event has a *topic*: the envelope's ``tipo_evento`` (``resultado_coleta``, ...) or
:data:`DEAD_LETTER_TOPIC` for a dead-letter announcement, and the step queue it came from.

- RabbitMQ: the durable topic exchange :data:`EXCHANGE`, routing key ``<topic>.<queue>``
  (``resultado_coleta.escavador_youtube``). A subscriber binds its own queue with a pattern
  (``resultado_coleta.*``, ``#.escavador_youtube``, ``#``); with no queue bound, RabbitMQ drops
  the event.
- Redis Streams: one capped stream per topic, ``orchestrator.events.<topic>``; a subscriber
  ``XREAD``\\ s it (or makes its own consumer group on it).
- NATS JetStream: subject ``orq.events.<topic>.<queue>``, captured by the limits-retention
  stream :data:`NATS_STREAM`; a subscriber makes its own (ephemeral or durable) consumer.

Queue names are ``[a-z0-9_-]`` (:func:`orchestrator.topology.queue_name`), so they are valid
routing-key words and subject tokens as they are.
"""

from __future__ import annotations

from orchestrator.envelope import EventType

EXCHANGE = "orchestrator.events"
STREAM_PREFIX = "orchestrator.events."
SUBJECT_PREFIX = "orq.events."
NATS_STREAM = "ORQ_EVENTS"

DEAD_LETTER_TOPIC = "dead_letter"
"""The topic of dead-letter announcements (a message of a step went to its DLQ)."""

TOPICS = (*(event.value for event in EventType), DEAD_LETTER_TOPIC)
"""Every topic an event may have: the four envelope types and the dead-letter one."""


def routing_key(topic: str, queue: str) -> str:
    """RabbitMQ: the routing key of ``topic``'s events from ``queue``."""
    return f"{topic}.{queue}"


def stream_key(topic: str) -> str:
    """Redis Streams: the stream holding ``topic``'s events of every step."""
    return STREAM_PREFIX + topic


def subject(topic: str, queue: str) -> str:
    """NATS: the subject of ``topic``'s events from ``queue``."""
    return f"{SUBJECT_PREFIX}{topic}.{queue}"


NATS_SUBJECTS = [SUBJECT_PREFIX + ">"]
"""What :data:`NATS_STREAM` captures."""
