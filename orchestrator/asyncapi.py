"""The deployment's contract as an AsyncAPI 3.0 document, for teams that are not Celery.

It describes what a service written in any language needs to drive the steps: one channel per
step queue (where to publish a plain envelope: a RabbitMQ queue, a Redis stream, a NATS
subject) and one per dead-letter queue, the operations the workers perform on them, and the
envelope's JSON Schema, generated from the pydantic model so the two cannot drift apart.
Other teams generate their clients from it (``orchestrator asyncapi > asyncapi.json``).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from orchestrator.envelope import Envelope
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
    scheme = urlsplit(broker_url).scheme.split("+")[0]
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


def _messages() -> dict[str, Any]:
    return {
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
