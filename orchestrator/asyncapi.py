"""The deployment's contract as an AsyncAPI 3.0 document, for teams that are not Celery.

It describes what a service written in any language needs to drive the steps: one channel per
step queue (where to publish a plain envelope: a RabbitMQ queue, a Redis stream, a NATS
subject) and one per dead-letter queue, the event destinations a subscriber reads step results and
dead-letter announcements from (:mod:`orchestrator.events`), the operations the workers perform
on them, and the envelope's JSON Schema, generated from the pydantic model so the two cannot
drift apart.
Other teams generate their clients from it (``orchestrator asyncapi > asyncapi.json``).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from orchestrator.app_broker import broker_scheme
from orchestrator.envelope import Envelope
from orchestrator.events import cloudevents, destinations
from orchestrator.steps import registered_steps
from orchestrator.topology import QueueSpec, topology

ASYNCAPI_VERSION = "3.0.0"
PROTOCOLS = {"amqp": "amqp", "amqps": "amqps", "pyamqp": "amqp", "redis-streams": "redis",
             "rediss-streams": "rediss", "nats": "nats", "tls": "nats"}
NATS_QUEUE_SUBJECT = "orq.q."
"""The subject prefix of a durable queue on NATS (the JetStream transport's)."""


def document(broker_url: str) -> dict[str, Any]:
    """The AsyncAPI document of this process's steps on the broker at ``broker_url``."""
    protocol = _protocol(broker_url)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    accepts = {name: sorted(event.value for event in spec.accepts)
               for name, spec in registered_steps().items()}
    for spec in topology:
        channels[spec.name] = _step_channel(spec, protocol, accepts.get(spec.name, []))
        channels[spec.dlq] = _dead_letter_channel(spec, protocol)
        operations[f"run_{spec.name}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{spec.name}"},
            "summary": f"A worker runs {spec.name} on each envelope published here.",
            "messages": [{"$ref": f"#/channels/{spec.name}/messages/envelope"}],
        }
        operations[f"dead_letter_{spec.name}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{spec.dlq}"},
            "summary": f"Messages of {spec.name} that kept failing, with the reason.",
            "messages": [{"$ref": f"#/channels/{spec.dlq}/messages/deadLetter"}],
        }
    producers: dict[str, list[str]] = {}
    for name, step in registered_steps().items():
        producers.setdefault(step.produces.value, []).append(name)
    producers[destinations.DEAD_LETTER_TOPIC] = topology.names()
    for topic, queues in producers.items():
        channel_id = f"events_{topic}"
        channels[channel_id] = _event_channel(topic, sorted(queues), protocol)
        operations[f"publish_{topic}_events"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"Workers publish every {topic} event here; subscribe to follow "
                       "pipelines without Celery.",
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/event"}],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "orchestrator",
            "version": _version(),
            "description": "Escavadores (collectors) and executadores (executors) driven by "
                           "one JSON envelope. Publish an envelope to a step's channel to run "
                           "that step; failed messages end in the step's dead-letter channel.",
        },
        "defaultContentType": "application/json",
        "servers": {"broker": _server(broker_url, protocol)},
        "channels": channels,
        "operations": operations,
        "components": {"messages": _messages(), "schemas": envelope_schemas()},
    }


def envelope_schemas() -> dict[str, Any]:
    """The envelope's JSON Schema from the pydantic model, and the schemas it refers to
    (the event type enum), as ``components.schemas`` entries."""
    schema: dict[str, Any] = Envelope.model_json_schema(
        ref_template="#/components/schemas/{model}")
    referred = schema.pop("$defs", {})
    return {"Envelope": schema, **referred}


def _protocol(broker_url: str) -> str:
    scheme = broker_scheme(broker_url)
    return PROTOCOLS.get(scheme, scheme or "amqp")


def _server(broker_url: str, protocol: str) -> dict[str, Any]:
    parts = urlsplit(broker_url)
    host = parts.hostname or "localhost"
    server: dict[str, Any] = {"host": f"{host}:{parts.port}" if parts.port else host,
                              "protocol": protocol}
    if parts.path and parts.path != "/":
        server["pathname"] = parts.path
    return server


def _address(queue: str, protocol: str) -> str:
    return NATS_QUEUE_SUBJECT + queue if protocol == "nats" else queue


def _step_channel(spec: QueueSpec, protocol: str, accepts: list[str]) -> dict[str, Any]:
    where = {"amqp": "the queue (default exchange, routing key = queue name)",
             "redis": "the stream, in the entry field `payload`",
             "nats": "the subject, captured by the JetStream stream of the queue"}
    channel: dict[str, Any] = {
        "address": _address(spec.name, protocol),
        "description": f"The {spec.kind} {spec.name}: publish an envelope to "
                       f"{where.get(protocol, 'this address')}. Accepted tipo_evento: "
                       f"{', '.join(accepts) or 'see the step'}.",
        "messages": {"envelope": {"$ref": "#/components/messages/envelope"}},
    }
    if protocol.startswith("amqp"):
        channel["bindings"] = {"amqp": {"is": "queue", "queue": {
            "name": spec.name, "durable": True, "exclusive": False, "autoDelete": False}}}
    return channel


def _dead_letter_channel(spec: QueueSpec, protocol: str) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": _address(spec.dlq, protocol),
        "description": f"Dead letters of {spec.name}: the original message, unchanged, with "
                       "the failure in the header x_dead_letter (or RabbitMQ's x-death).",
        "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
    }
    if protocol.startswith("amqp"):
        channel["bindings"] = {"amqp": {"is": "queue", "queue": {
            "name": spec.dlq, "durable": True, "exclusive": False, "autoDelete": False}}}
    return channel


def _event_channel(topic: str, queues: list[str], protocol: str) -> dict[str, Any]:
    """Where ``topic``'s events go on this broker (``{queue}``: the step that produced it)."""
    message = "deadLetterEvent" if topic == destinations.DEAD_LETTER_TOPIC else "resultEvent"
    parameters = {"queue": {"enum": queues, "description": "The step queue of the event."}}
    channel: dict[str, Any] = {
        "messages": {"event": {"$ref": f"#/components/messages/{message}"}},
    }
    if protocol.startswith("amqp"):
        channel.update(
            address=destinations.routing_key(topic, "{queue}"), parameters=parameters,
            description=f"{topic} events: the routing key on the topic exchange "
                        f"{destinations.EXCHANGE}; bind a queue of your own to it "
                        f"(e.g. {topic}.*). Nothing is kept while no queue is bound.",
            bindings={"amqp": {"is": "routingKey", "exchange": {
                "name": destinations.EXCHANGE, "type": "topic", "durable": True,
                "autoDelete": False}}})
    elif protocol == "nats":
        channel.update(
            address=destinations.subject(topic, "{queue}"), parameters=parameters,
            description=f"{topic} events, kept by the JetStream stream "
                        f"{destinations.NATS_STREAM} (newest ORCHESTRATOR_EVENTS_MAX_LEN per "
                        "subject, ORCHESTRATOR_EVENTS_MAX_AGE seconds).")
    else:
        channel.update(
            address=destinations.stream_key(topic),
            description=f"{topic} events of every step (ce-source names it), the event "
                        "JSON in the entry field `payload`; capped at about "
                        "ORCHESTRATOR_EVENTS_MAX_LEN entries. XREAD it.")
    return channel


def _cloudevents_headers(kind: str) -> dict[str, Any]:
    names = ("specversion", "id", "source", "type", "time", "subject", "correlationid")
    return {"type": "object", "description": "CloudEvents attributes (binary content mode): "
            "cloudEvents_<name> application properties on AMQP, ce-<name> headers on NATS "
            "and ce-<name> fields of the stream entry on Redis. type is "
            + ("the tipo_evento." if kind == "result" else cloudevents.DEAD_LETTER_TYPE + "."),
            "properties": {f"ce-{name}": {"type": "string"} for name in names}}


def _messages() -> dict[str, Any]:
    return {
        "resultEvent": {
            "name": "resultEvent",
            "title": "A step's result",
            "summary": "The envelope the step produced, exactly as returned.",
            "contentType": "application/json",
            "headers": _cloudevents_headers("result"),
            "payload": {"$ref": "#/components/schemas/Envelope"},
        },
        "deadLetterEvent": {
            "name": "deadLetterEvent",
            "title": "A dead letter was written",
            "summary": "Which step, which request, why; the message itself is in the DLQ.",
            "contentType": "application/json",
            "headers": _cloudevents_headers("dead_letter"),
            "payload": {"type": "object", "required": ["queue", "reason", "dead_letter_queue"],
                        "properties": {
                            **{name: {"type": ["string", "integer", "null"]}
                               for name in cloudevents.DEAD_LETTER_FIELDS},
                            "dead_letter_queue": {"type": "string"},
                            "timestamp": {"type": "string", "format": "date-time"}}},
        },
        "envelope": {
            "name": "envelope",
            "title": "The envelope",
            "summary": "correlation_id, tipo_evento, payload, timestamp: the fixed contract.",
            "contentType": "application/json",
            "payload": {"$ref": "#/components/schemas/Envelope"},
        },
        "deadLetter": {
            "name": "deadLetter",
            "title": "A dead letter",
            "summary": "The message that failed, as it came, and why it failed.",
            "headers": {"type": "object", "properties": {"x_dead_letter": {
                "type": "object",
                "description": "reason, queue, task, task_id, correlation_id, attempts, "
                               "first_failure_at, last_failure_at, exception_type, "
                               "exception_message, traceback",
                "properties": {"reason": {"type": "string"}, "attempts": {"type": "integer"},
                               "correlation_id": {"type": ["string", "null"]}}}}},
            "payload": {},
        },
    }


def _version() -> str:
    try:
        return metadata.version("orchestrator")
    except metadata.PackageNotFoundError:
        return "0"
