"""The message headers this project sets, and which of them a message passes on.

A retry and a dead letter are new messages built from the one being processed. Celery hands a
task every header of its message that is not one of its own (``request.headers``), and that
includes what the broker added on the way: RabbitMQ's ``x-death`` and ``x-first-death-*``
(from the delay queues of native delayed delivery, from dead-lettering), ``x-delivery-count``
(quorum queues, and this project's transports). Copied into a retry, ``x-death`` makes
RabbitMQ see a dead-letter cycle as soon as the retry's delay passes a delay queue an earlier
retry passed, and it drops the retry without a word (Celery's own retry strips those headers
for that reason). So a message's successors carry :data:`CARRIED` and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CORRELATION_ID = "x_correlation_id"
"""The pipeline's correlation id (Celery's ``correlation_id`` property is the task id)."""

FIRST_FAILURE_AT = "x_first_failure_at"
"""When the first attempt of a retried message failed (ISO 8601, UTC)."""

REPLAY_ID = "x_replay_id"
"""Set by a replay, so a broker's duplicate detection does not take it for the original."""

DEAD_LETTER = "x_dead_letter"
"""The failure details of a dead letter written by this project."""

PUBLISHED_AT = "x_published_at"
"""When the message was published (Unix seconds, the producer's clock): every publish stamps
its own, so a retry or a replay counts its queue wait from its own publish, never carried."""

TRACE_CONTEXT = ("traceparent", "tracestate")
"""W3C trace context, as OpenTelemetry's propagators write it."""

CARRIED = frozenset({CORRELATION_ID, FIRST_FAILURE_AT, REPLAY_ID, *TRACE_CONTEXT})
"""What a retry or a dead letter takes from the message it replaces."""


def carried(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers of ``headers`` that a retry or a dead letter of that message carries."""
    return {name: value for name, value in (headers or {}).items() if name in CARRIED}


def carried_trace_context(carrier: Any) -> dict[str, str]:
    """The W3C trace context (:data:`TRACE_CONTEXT`) a foreign producer sent with a message,
    from whatever carries it (AMQP headers, NATS headers, a stream entry's fields); text
    values only, bytes read as ASCII."""
    if not isinstance(carrier, Mapping):
        return {}
    found: dict[str, str] = {}
    for name in TRACE_CONTEXT:
        value = carrier.get(name)
        if isinstance(value, bytes):
            value = value.decode("ascii", errors="replace")
        if isinstance(value, str) and value:
            found[name] = value
    return found
