"""The message gate: refuse bad messages before they reach a task, into the DLQ, with a reason.

Celery's default for a message it cannot decode, or whose content type is not accepted (e.g.
pickle when only JSON is allowed), is to log it and ack it: the message is gone. For an unknown
task or an invalid one it rejects, which on a queue without dead-lettering also drops it. The
:class:`GatedConsumer` (part of the worker's consumer, :mod:`orchestrator.worker_consumer`)
checks each delivery first, in the worker's main process, and moves anything it refuses to
``<queue>.dlq`` with the reason, then acks it. The worker never dies of a bad message and the
queue never blocks on one. A plain JSON envelope (no task headers, any content type) on a step
queue is not refused: it becomes that step's task message first (``adopt_plain_envelope``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from kombu.message import Message

from orchestrator.correlation import HEADER
from orchestrator.envelope import Envelope
from orchestrator.failures import dead_letter
from orchestrator.failures.errors import MessageRefused
from orchestrator.plain_envelopes import as_task_message, plain_envelope
from orchestrator.settings import get_settings
from orchestrator.topology import topology
from orchestrator.trace.record import record
from orchestrator.transports.framing import FOREIGN_FRAME_HEADER

logger = logging.getLogger("orchestrator.gate")

JSON_CONTENT_TYPES = frozenset({"application/json"})


def queue_of(message: Message) -> str | None:
    """The step queue a delivery came from (the routing key names it; delayed delivery
    prefixes bits to it, hence the last dotted component)."""
    routing_key = str((message.delivery_info or {}).get("routing_key") or "")
    candidate = routing_key.rsplit(".", 1)[-1] if routing_key else ""
    return candidate if candidate in topology else None


def inspect_message(message: Message, tasks: Any, max_bytes: int) -> None:
    """Raise :class:`MessageRefused` if ``message`` must not reach a task."""
    headers = message.headers if isinstance(message.headers, dict) else None
    refused = judge(message.body, message.content_type, headers, tasks.__contains__, max_bytes)
    if refused is not None:
        raise refused


def judge(body: Any, content_type: str | None, headers: dict[str, Any] | None,
          is_known_task: Callable[[str], bool], max_bytes: int) -> MessageRefused | None:
    """The gate's verdict on one delivery: None to let it reach its task, else why not.

    A pure function of what the delivery carries, so it is tested over every kind of input
    without a broker; it never raises.
    """
    size = len(body) if isinstance(body, bytes | str) else 0
    if size > max_bytes:
        return MessageRefused(dead_letter.REASON_OVERSIZED,
                              f"body is {size} bytes, the limit is {max_bytes}")
    foreign = headers.get(FOREIGN_FRAME_HEADER) if isinstance(headers, dict) else None
    if foreign:
        return MessageRefused(dead_letter.REASON_MALFORMED, f"not a Kombu message: {foreign}")
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in JSON_CONTENT_TYPES:
        return MessageRefused(dead_letter.REASON_CONTENT_TYPE,
                              f"content type {kind or 'none'!r}: only JSON is accepted")
    if not isinstance(headers, dict) or "task" not in headers or "id" not in headers:
        return MessageRefused(dead_letter.REASON_NOT_A_TASK,
                              "no Celery task headers (task, id): not a task message")
    task_name = headers["task"]
    if not isinstance(task_name, str) or not is_known_task(task_name):
        return MessageRefused(dead_letter.REASON_UNKNOWN_TASK,
                              f"no task named {task_name!r} is registered")
    try:
        decoded = json.loads(body)
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        return MessageRefused(dead_letter.REASON_MALFORMED, f"body is not JSON: {exc}")
    if not (isinstance(decoded, list) and len(decoded) == 3
            and isinstance(decoded[0], list) and isinstance(decoded[1], dict)):
        return MessageRefused(dead_letter.REASON_MALFORMED,
                              "body is not a Celery task body [args, kwargs, embed]")
    # The envelope itself is validated by the step runtime, in the pool process, which
    # dead-letters an invalid one with reason invalid_envelope: validating it here too would
    # put pydantic on the main process, the one that moves every message.
    return None


def adopt_plain_envelope(message: Message, max_bytes: int) -> Message:
    """A plain JSON envelope on a step queue, as the task message of that step; any other
    delivery as it came (see :mod:`orchestrator.plain_envelopes`)."""
    headers = message.headers
    if isinstance(headers, dict) and "task" in headers:
        return message  # a task message: the usual case, decided without a look at the body
    queue = queue_of(message)
    envelope = plain_envelope(message.body, headers, max_bytes) if queue else None
    if queue is None or envelope is None:
        return message
    return as_task_message(message, queue, envelope)


def correlation_id_of(message: Message) -> str | None:
    """Best effort: the header, else the envelope in the body."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    if headers.get(HEADER):
        return str(headers[HEADER])
    try:
        args = json.loads(message.body)[0]
        return str(Envelope.parse(args[0]).correlation_id)
    except Exception:
        return None


class GatedConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer with a gate in front of the task strategies."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handler = super().create_task_handler(*args, **kwargs)
        max_bytes = get_settings().max_message_bytes
        tasks = self.app.tasks

        def on_task_received(message: Message) -> Any:
            message = adopt_plain_envelope(message, max_bytes)
            try:
                inspect_message(message, tasks, max_bytes)
            except MessageRefused as refused:
                return self.refuse(message, refused)
            return handler(message)

        return on_task_received

    def connection_for_write(self, url: str | None = None, heartbeat: float | None = None) -> Any:
        """The connection Celery's ``Events`` step publishes task events on.

        Events are telemetry for Flower: waiting for a publisher confirm on each of them (three
        per task) would halve throughput for nothing, so this connection does not ask for
        confirms. Task messages and dead letters keep theirs (``app.producer_pool``).
        """
        options = {**self.app.conf.broker_transport_options, "confirm_publish": False}
        return self.ensure_connected(self.app.connection_for_write(
            url=url, heartbeat=heartbeat, transport_options=options))

    def refuse(self, message: Message, refused: MessageRefused) -> None:
        """Dead-letter ``message`` with the reason, then ack it; reject if we cannot."""
        queue = queue_of(message)
        headers = message.headers if isinstance(message.headers, dict) else {}
        logger.error("refused a message from %s: %s", queue or "?", refused)
        if queue is None:
            # Not one of our step queues: let the broker's dead-lettering (if any) have it.
            message.reject_log_error(logger, self.connection_errors)
            return
        details = dead_letter.failure_details(
            reason=refused.reason,
            queue=queue,
            task_name=headers.get("task"),
            task_id=headers.get("id"),
            correlation_id=correlation_id_of(message),
            attempts=1,
            detail=refused.detail,
        )
        try:
            with self.app.producer_pool.acquire(block=True, timeout=10) as producer:
                dead_letter.publish_raw_dead_letter(
                    producer,
                    body=message.body,
                    headers=headers,
                    properties=message.properties,
                    content_type=message.content_type,
                    content_encoding=message.content_encoding,
                    details=details,
                )
        except Exception as exc:
            logger.error("could not dead-letter the refused message (%s); rejecting it", exc)
            message.reject_log_error(logger, self.connection_errors)
            return
        message.ack_log_error(logger, self.connection_errors)
        # Into this process's batch only: the gate runs in the worker's main process.
        record("dead_lettered", details["correlation_id"], task_id=details["task_id"],
               task=details["task"], queue=queue, attempt=1, worker=self.hostname,
               reason=refused.reason, detail=refused.detail or None,
               dead_letter_id=details["task_id"])

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self.refuse(message, MessageRefused(dead_letter.REASON_MALFORMED, str(exc)))

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self.refuse(message, MessageRefused(dead_letter.REASON_NOT_A_TASK, "unknown format"))

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        self.refuse(message, MessageRefused(dead_letter.REASON_UNKNOWN_TASK, str(exc)))

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self.refuse(message, MessageRefused(dead_letter.REASON_MALFORMED, str(exc)))
