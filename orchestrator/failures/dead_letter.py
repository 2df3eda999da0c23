"""Dead letters: what a message carries when it is moved to ``<queue>.dlq``, and the move.

A dead letter is the original task message, unchanged (headers, body, content type), plus one
header, :data:`DEAD_LETTER_HEADER`, describing why it died. Because the body is untouched, a
dead letter is replayable as it is. Messages the *broker* dead-letters (RabbitMQ's delivery
limit, a plain reject) carry RabbitMQ's ``x-death`` header instead; :func:`describe` reads both
so the CLI shows one format.

The move is "publish to the DLQ with confirmation, then ack the original": interrupted half way
the message is at worst in both places (never in neither), and the replay path removes the
duplicate by task id. This module is the one writer of dead letters on the worker's side:
:func:`publish_task_dead_letter` for the step runtime, :func:`publish_raw_dead_letter` for the
gate; the transports' own moves (reject, delivery limit) are the broker's, as on RabbitMQ.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kombu.messaging import Producer

from orchestrator import headers as message_headers
from orchestrator.failures import decision
from orchestrator.topology import topology
from orchestrator.transports import dead_lettering

DEAD_LETTER_HEADER = message_headers.DEAD_LETTER

# Reasons, stable strings operators filter on.
REASON_FAILED = decision.REASON_FAILED  # a final error, no retry
REASON_RETRIES_EXHAUSTED = decision.REASON_RETRIES_EXHAUSTED
REASON_DELIVERY_LIMIT = dead_lettering.REASON_DELIVERY_LIMIT  # killed its worker too often
REASON_INVALID_ENVELOPE = "invalid_envelope"
REASON_INVALID_ARGUMENTS = "invalid_arguments"  # a step message whose arguments do not fit
REASON_CONTENT_TYPE = "content_type_refused"  # pickle, yaml, anything but JSON
REASON_MALFORMED = "malformed_body"  # not JSON, or not a Celery task body
REASON_NOT_A_TASK = "not_a_task"  # no task headers
REASON_UNKNOWN_TASK = "unknown_task"
REASON_OVERSIZED = "oversized"
REASON_REJECTED = dead_lettering.REASON_REJECTED  # broker dead-lettered: reject, no requeue

MAX_TRACEBACK_CHARS = 4000


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure_details(
    *,
    reason: str,
    queue: str,
    task_name: str | None,
    task_id: str | None,
    correlation_id: str | None,
    attempts: int,
    exc: BaseException | None = None,
    detail: str | None = None,
    first_failure_at: str | None = None,
) -> dict[str, Any]:
    """The content of :data:`DEAD_LETTER_HEADER` (JSON-safe, short enough for a header)."""
    last = now_iso()
    details: dict[str, Any] = {
        "reason": reason,
        "queue": queue,
        "task": task_name,
        "task_id": task_id,
        "correlation_id": correlation_id,
        "attempts": attempts,
        "first_failure_at": first_failure_at or last,
        "last_failure_at": last,
        "exception_type": type(exc).__name__ if exc is not None else None,
        "exception_message": (str(exc) if exc is not None else detail or "")[:2000],
        "traceback": _short_traceback(exc),
    }
    return details


def _short_traceback(exc: BaseException | None) -> str | None:
    if exc is None or exc.__traceback__ is None:
        return None
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text[-MAX_TRACEBACK_CHARS:]


def publish_raw_dead_letter(
    producer: Producer,
    *,
    body: bytes | str,
    headers: Mapping[str, Any],
    properties: Mapping[str, Any],
    content_type: str | None,
    content_encoding: str | None,
    details: dict[str, Any],
) -> None:
    """A delivery as it came (the gate's refusals) to its queue's DLQ with ``details``;
    waits for the broker's confirm."""
    spec = topology.get(details["queue"])
    new_headers = dict(headers or {})
    new_headers.pop("x-death", None)
    new_headers[DEAD_LETTER_HEADER] = details
    kept_properties = {
        key: value
        for key, value in (properties or {}).items()
        if key in ("correlation_id", "reply_to", "priority", "message_id")
        and value is not None
    }
    producer.publish(
        body if isinstance(body, bytes) else body.encode("utf-8"),
        exchange=spec.dead_letter_exchange(),
        routing_key=spec.dlq,
        headers=new_headers,
        content_type=content_type or "application/octet-stream",
        content_encoding=content_encoding or "binary",
        delivery_mode=2,
        retry=True,
        retry_policy={"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5},
        declare=[spec.dead_letter_exchange()],
        **kept_properties,
    )


def publish_task_dead_letter(task: Any, headers: dict[str, Any], reprs: Mapping[str, str],
                             ) -> None:
    """The step message ``task`` is running, rebuilt from its request (a pool process has
    no raw bytes), to its queue's DLQ with ``headers``; waits for the broker's confirm."""
    request = task.request
    spec = topology.get(task.step_spec.queue)
    task.signature_from_request(request).apply_async(
        exchange=spec.dlx,
        routing_key=spec.dlq,
        headers=headers,
        retries=request.retries or 0,
        **reprs,
    )


def describe(headers: Mapping[str, Any] | None,
             delivery_limit: int | None = None) -> dict[str, Any]:
    """Failure details of a message from the DLQ, whichever side dead-lettered it.

    ``attempts`` is how many times the step ran, on every broker, and nothing a reader does
    changes it: this project's own dead letters record it; for one the broker moved past
    ``delivery_limit`` it is ``delivery_limit + 1`` (a quorum queue, like the transports,
    dead-letters on the return after the last allowed redelivery); for one rejected without
    requeue it is the task's retry count + 1. The DLQ's own delivery count
    (``x-delivery-count`` as the reader sees it) says how often the *dead letter* was read,
    so it is never used.
    """
    headers = dict(headers or {})
    own = headers.get(DEAD_LETTER_HEADER)
    if isinstance(own, Mapping):
        return dict(own)
    details: dict[str, Any] = {
        "reason": REASON_REJECTED,
        "queue": None,
        "task": headers.get("task"),
        "task_id": headers.get("id"),
        "correlation_id": headers.get(message_headers.CORRELATION_ID),
        "attempts": _retries(headers) + 1,
        "first_failure_at": None,
        "last_failure_at": None,
        "exception_type": None,
        "exception_message": "rejected without requeue: a failure outside the step runtime "
                             "(see the worker's log), or a dead-letter publish that failed",
        "traceback": None,
    }
    deaths = headers.get(dead_lettering.DEATHS)
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        death = deaths[0]
        reason = str(death.get("reason", REASON_REJECTED))
        details["reason"] = reason
        details["queue"] = death.get("queue")
        details["last_failure_at"] = _death_time(death.get("time"))
        if reason == REASON_DELIVERY_LIMIT:
            details["attempts"] = (dead_lettering.runs_at_delivery_limit(delivery_limit)
                                   if delivery_limit is not None else None)
            details["exception_message"] = (
                "redelivered past the delivery limit: the message kept killing its worker "
                "(crash, OOM or hard time limit)"
            )
    return details


def _retries(headers: Mapping[str, Any]) -> int:
    try:
        return max(int(headers.get("retries") or 0), 0)
    except (TypeError, ValueError):
        return 0


def _death_time(when: Any) -> str | None:
    if isinstance(when, datetime):
        moment = when if when.tzinfo else when.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat()
    return when if isinstance(when, str) else None
