"""An event as it goes on the wire: the body the design fixes, and CloudEvents attributes.

The body of a result event is the envelope itself (``correlation_id``, ``tipo_evento``,
``payload``, ``timestamp``), exactly what the step returned: a subscriber that knows only the
design document reads it with ``json.loads``. The CloudEvents attributes travel next to it
(*binary content mode*), under each binding's names: ``cloudEvents_`` application properties
on AMQP, ``ce-`` headers on NATS (and ``ce-`` fields of the stream entry on Redis, which has
no binding). ``correlationid`` is an extension attribute (lower-case letters only, as the
specification requires) carrying the request's correlation id.

``id`` is derived from the step's idempotency key (one result per request and step): a step
whose message is delivered again (its worker died after the publication), or a plain envelope
sent twice, returns the stored result and publishes the same event with the same id, so a
subscriber deduplicates on ``id`` as the specification intends (``source`` + ``id`` identify
one event).

``traceparent`` (and ``tracestate``) are the CloudEvents distributed-tracing extension: the
W3C context of the step attempt that produced the event, taken when the event is made (it
leaves later, in a batch, from the publisher's thread), present only while OpenTelemetry
tracing is on (:mod:`orchestrator.observability.otel`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.events.destinations import DEAD_LETTER_TOPIC
from orchestrator.observability.otel import trace_context

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
DEAD_LETTER_TYPE = "orchestrator.dead_letter"
"""``type`` of a dead-letter announcement; a result event's ``type`` is its ``tipo_evento``."""

_ID_NAMESPACE = uuid.UUID("0b6f5d2e-61a4-4c59-9a57-2f4a8f0c7e11")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

DEAD_LETTER_FIELDS = ("correlation_id", "queue", "task", "task_id", "reason", "attempts",
                      "exception_type", "exception_message")
"""What a dead-letter announcement says (its body), from the dead letter's details."""


@dataclass(frozen=True)
class Event:
    """One event: its topic and step queue (where it goes), body and CloudEvents attributes."""

    topic: str
    queue: str
    body: bytes
    attributes: Mapping[str, str]

    @property
    def id(self) -> str:
        return self.attributes["id"]

    @property
    def correlation_id(self) -> str | None:
        return self.attributes.get("correlationid")

    def headers(self, prefix: str) -> dict[str, str]:
        """The attributes under a binding's prefix (``cloudEvents_``, ``ce-``), but
        ``datacontenttype``: every binding carries it as the message's own content type."""
        return {prefix + name: value for name, value in self.attributes.items()
                if name != "datacontenttype"}


def source(queue: str) -> str:
    """``source``: the step that produced the event, as a URI reference."""
    return f"/orchestrator/{queue}"


def result_event(queue: str, result_key: str, envelope: Mapping[str, Any]) -> Event:
    """The event for the envelope a step returned (its ``tipo_evento`` is the topic);
    ``result_key`` names that result (the idempotency key) and makes the id."""
    topic = str(envelope["tipo_evento"])
    correlation_id = str(envelope["correlation_id"])
    attributes = {
        "specversion": SPEC_VERSION,
        "id": str(uuid.uuid5(_ID_NAMESPACE, f"{result_key}:{topic}")),
        "source": source(queue),
        "type": topic,
        "time": str(envelope.get("timestamp") or _now()),
        "subject": correlation_id,
        "datacontenttype": CONTENT_TYPE,
        "correlationid": correlation_id,
        **trace_context(),
    }
    return Event(topic, queue, _ENCODER.encode(dict(envelope)).encode(), attributes)


def dead_letter_event(details: Mapping[str, Any]) -> Event:
    """The announcement of a dead letter, from its failure details
    (:func:`orchestrator.failures.dead_letter.failure_details`)."""
    queue = str(details["queue"])
    body = {name: details.get(name) for name in DEAD_LETTER_FIELDS}
    body["dead_letter_queue"] = f"{queue}.dlq"
    body["timestamp"] = details.get("last_failure_at") or _now()
    attributes = {
        "specversion": SPEC_VERSION,
        "id": str(uuid.uuid4()),  # every dead-lettering is an event of its own
        "source": source(queue),
        "type": DEAD_LETTER_TYPE,
        "time": str(body["timestamp"]),
        "datacontenttype": CONTENT_TYPE,
    }
    correlation_id = details.get("correlation_id")
    if correlation_id:
        attributes["subject"] = attributes["correlationid"] = str(correlation_id)
    attributes.update(trace_context())
    return Event(DEAD_LETTER_TOPIC, queue, _ENCODER.encode(body).encode(), attributes)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
