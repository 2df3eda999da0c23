"""Plain JSON envelopes from any client run the step whose queue they were published to.

The design document's producer is a plain client: ``basic_publish(exchange='',
routing_key='escavador_youtube', body=json.dumps(envelope))``, with no Celery headers and no
content type; on Redis Streams an ``XADD <queue> * payload <envelope>``, on NATS a JetStream
publish to ``orq.q.<queue>``. The worker's gate (:mod:`orchestrator.failures.gate`) asks
:func:`plain_envelope` whether a delivery without task headers is such an envelope for one of
its step queues; if so, :func:`as_task_message` turns it into the Celery task message a
pipeline would have sent, on the same delivery (same tag: it is acked only after the step
succeeded). From there it is a step like any other: correlation id, idempotency key,
retries, time limits and dead-lettering. The envelope itself is validated by the step
runtime, which dead-letters an invalid one (``invalid_envelope``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from kombu.message import Message

from orchestrator.headers import CORRELATION_ID, PUBLISHED_AT, carried_trace_context
from orchestrator.observability.publish_time import envelope_time

ENVELOPE_FIELDS = frozenset({"correlation_id", "tipo_evento", "payload"})
"""What makes a JSON object an envelope here (``timestamp`` too, checked by the runtime)."""

PLAIN_ORIGIN = "plain-client"
"""The ``origin`` of a task message made from a plain envelope (Flower shows it)."""


def plain_envelope(body: Any, headers: Any, max_bytes: int) -> dict[str, Any] | None:
    """The envelope ``body`` holds, when it is a plain one (no task headers), else None."""
    if isinstance(headers, dict) and "task" in headers:
        return None
    if not isinstance(body, bytes | str) or len(body) > max_bytes:
        return None
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(decoded, dict) and decoded.keys() >= ENVELOPE_FIELDS:
        return decoded
    return None


def as_task_message(message: Message, task_name: str, envelope: dict[str, Any]) -> Message:
    """The Celery task message for ``envelope``, on ``message``'s delivery."""
    task_id = str(uuid.uuid4())
    correlation_id = str(envelope.get("correlation_id"))
    headers: dict[str, Any] = {
        "lang": "py", "task": task_name, "id": task_id, "root_id": task_id,
        "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
        "timelimit": [None, None], "origin": PLAIN_ORIGIN, "kwargsrepr": "{}",
        "argsrepr": f"(<envelope {envelope.get('tipo_evento')} "
                    f"correlation_id={correlation_id}>,)",
        CORRELATION_ID: correlation_id,
        **carried_trace_context(message.headers),
    }
    published = envelope_time(envelope.get("timestamp"))
    if published is not None:  # the producer's only publish time: its queue wait starts there
        headers[PUBLISHED_AT] = published
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return Message(
        body=json.dumps([[envelope], {}, embed]).encode(),
        delivery_tag=message.delivery_tag,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_info=message.delivery_info,
        properties=message.properties,
        headers=headers,
        accept=message.accept,
        channel=message.channel,
    )
