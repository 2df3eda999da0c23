"""Operating dead-letter queues: list, show, replay and purge, from Python or the CLI.

Reading a DLQ (``list``, ``show``, the metrics) changes nothing in it. Redis Streams and NATS
read the messages where they are (``XRANGE``; JetStream's get by sequence), without
delivering them. RabbitMQ has no such read: there the DLQ is a classic queue, read with
``basic_get`` without acking on one channel whose closing returns every message; a classic
queue puts a returned message back where it was and counts no deliveries, so there is no
delivery limit to reach either (a quorum queue would count each listing as a delivery, and
RabbitMQ 4 drops a quorum queue's message after 20 by default). A replay moves a message back to its
original queue as "publish with confirmation, record it in the replay journal, then ack the
dead letter": interrupted after the publish and before the ack, the next replay finds the
journal entry and only acks, so the message is neither lost nor sent twice. (Interrupted in
the microseconds between the publish and the journal write, a second copy can be sent; its task
id and idempotency key are the same, so the step returns its stored result instead of running
twice.)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message

from orchestrator import headers as message_headers
from orchestrator.correlation import HEADER
from orchestrator.failures.dead_letter import describe
from orchestrator.names import resolve_queue
from orchestrator.observability.otel import replay_span
from orchestrator.settings import get_settings
from orchestrator.topology import dlq_name, original_queue, topology, work_exchange
from orchestrator.trace import record as trace_record
from orchestrator.utc import parse_utc

JOURNAL_PREFIX = "orchestrator:dlq:replayed:"
JOURNAL_TTL = 7 * 24 * 3600
_RESET_HEADERS = (message_headers.DEAD_LETTER, "x-death", "x-first-death-exchange",
                  "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange",
                  "x-last-death-queue", "x-last-death-reason", "x-delivery-count",
                  message_headers.FIRST_FAILURE_AT)


class DeadLetterNotFound(LookupError):
    """No dead letter with that id in the DLQs looked at."""


@dataclass
class DeadLetter:
    """One message in a DLQ, decoded for people and tools."""

    id: str
    dlq: str
    queue: str
    details: dict[str, Any]
    headers: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False)
    content_type: str | None = None
    content_encoding: str | None = None

    @property
    def fingerprint(self) -> str:
        """Identifies this *death* (the same task can die, be replayed and die again)."""
        digest = hashlib.sha256()
        digest.update(self.id.encode())
        digest.update(str(self.details.get("last_failure_at")).encode())
        digest.update(self.body)
        return digest.hexdigest()[:32]

    def age_seconds(self, now: datetime | None = None) -> float | None:
        when = self.details.get("last_failure_at")
        moment = parse_utc(str(when)) if when else None
        if moment is None:
            return None
        return ((now or datetime.now(UTC)) - moment).total_seconds()

    @property
    def correlation_id(self) -> str | None:
        """The request's correlation id: the failure details', else the message header's."""
        found = self.details.get("correlation_id") or self.headers.get(HEADER)
        return str(found) if found else None

    def summary(self) -> dict[str, Any]:
        """The fields ``dlq list`` shows."""
        return {
            "id": self.id,
            "queue": self.queue,
            "reason": self.details.get("reason"),
            "task": self.details.get("task") or self.headers.get("task"),
            "correlation_id": self.correlation_id,
            "attempts": self.details.get("attempts"),
            "last_error": _last_error(self.details),
            "age_seconds": self.age_seconds(),
        }

    def full(self) -> dict[str, Any]:
        """Everything ``dlq show`` prints, body included: as JSON when it is JSON, as text
        when it is UTF-8, else as ``{"base64": ...}`` (the original bytes, exactly)."""
        return {**self.summary(), "dlq": self.dlq, "details": self.details,
                "headers": _json_safe(self.headers), "content_type": self.content_type,
                "body": shown_body(self.body)}


def shown_body(body: bytes) -> Any:
    """A dead letter's body for people and JSON tools, without losing a byte."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(body).decode("ascii")}
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _last_error(details: dict[str, Any]) -> str:
    kind = details.get("exception_type")
    message = details.get("exception_message") or ""
    return f"{kind}: {message}" if kind else str(message)


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _message_id(message: Message) -> str:
    headers = message.headers or {}
    task_id = headers.get("id")
    if task_id:
        return str(task_id)
    message_id = (message.properties or {}).get("message_id")
    if message_id:
        return str(message_id)
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    return "sha-" + hashlib.sha256(body).hexdigest()[:16]


def _to_dead_letter(message: Message, dlq: str) -> DeadLetter:
    headers = dict(message.headers or {})
    queue = original_queue(dlq)
    limit = topology.get(queue).delivery_limit if queue in topology else None
    details = describe(headers, delivery_limit=limit)
    details["queue"] = details.get("queue") or queue
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    return DeadLetter(
        id=_message_id(message), dlq=dlq, queue=queue, details=details,
        headers=headers, body=body, content_type=message.content_type,
        content_encoding=message.content_encoding,
    )


def dead_letter_queues(queue: str | None = None) -> list[str]:
    """The DLQs to look at: one step's, or every step's."""
    from orchestrator.steps import load_step_modules  # the runtime's modules, on first use

    load_step_modules(get_settings().step_modules)  # declaring the steps fills the topology

    if queue is None:
        return [spec.dlq for spec in topology]
    return [dlq_name(resolve_queue(queue, topology.names()))]


@contextmanager
def _connection(app: Celery | None) -> Iterator[Connection]:
    if app is None:
        from orchestrator.celery_app import app as default_app

        app = default_app
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=2)
        yield connection


@contextmanager
def _browse(connection: Connection, dlq: str) -> Iterator[Iterator[tuple[Message, DeadLetter]]]:
    """Yield every message of ``dlq`` once, unacked; closing returns the unacked ones."""
    channel = connection.channel()
    queue = Queue(dlq, channel=channel, no_declare=True)

    def messages() -> Iterator[tuple[Message, DeadLetter]]:
        while True:
            message = queue.get(no_ack=False, accept=None)
            if message is None:
                return
            yield message, _to_dead_letter(message, dlq)

    try:
        yield messages()
    finally:
        channel.close()


def _peek(connection: Connection, dlq: str, limit: int) -> list[DeadLetter]:
    """The first ``limit`` dead letters of ``dlq``, oldest first, leaving the DLQ as it was."""
    channel = connection.channel()
    try:
        browse = getattr(channel, "browse", None)
        if browse is not None:  # a transport that reads without delivering
            return [_to_dead_letter(channel.message_to_python(payload), dlq)
                    for payload in browse(dlq, limit)]
    finally:
        channel.close()
    found: list[DeadLetter] = []
    with _browse(connection, dlq) as messages:
        for _, letter in messages:
            found.append(letter)
            if len(found) >= limit:
                break
    return found


peek = _peek
"""The first dead letters of one DLQ on an open connection (for the metrics' reason counts)."""


def counts(queue: str | None = None, *, app: Celery | None = None) -> dict[str, int]:
    """Messages per DLQ (0 for a DLQ that does not exist yet)."""
    with _connection(app) as connection:
        return {dlq: _message_count(connection, dlq) for dlq in dead_letter_queues(queue)}


SCAN_LIMIT = 100_000
"""Dead letters read per DLQ at most when looking for some of them (an id, a request)."""


def list_dead_letters(queue: str | None = None, *, app: Celery | None = None,
                      limit: int = 1000, correlation_id: str | None = None,
                      ) -> list[DeadLetter]:
    """The dead letters of one or every DLQ, oldest first per queue (nothing is consumed);
    with ``correlation_id``, only that request's (up to ``limit`` of them, found among the
    first :data:`SCAN_LIMIT` of each DLQ)."""
    found: list[DeadLetter] = []
    with _connection(app) as connection:
        for dlq in dead_letter_queues(queue):
            if correlation_id is None:
                found.extend(_peek(connection, dlq, limit - len(found)))
            else:
                found.extend(letter for letter in _peek(connection, dlq, SCAN_LIMIT)
                             if letter.correlation_id == correlation_id)
                del found[limit:]
            if len(found) >= limit:
                break
    return found


def show(letter_id: str, *, queue: str | None = None, app: Celery | None = None) -> DeadLetter:
    """One dead letter by id (the task id for task messages)."""
    for letter in list_dead_letters(queue, app=app, limit=SCAN_LIMIT):
        if letter.id == letter_id:
            return letter
    raise DeadLetterNotFound(f"no dead letter with id {letter_id!r}")


def show_by_correlation(correlation_id: str, *, queue: str | None = None,
                        app: Celery | None = None) -> list[DeadLetter]:
    """Every dead letter of one request (oldest first per DLQ); none is an error."""
    found = list_dead_letters(queue, app=app, limit=SCAN_LIMIT, correlation_id=correlation_id)
    if not found:
        raise DeadLetterNotFound(f"no dead letter of correlation id {correlation_id!r}")
    return found


def find(id_or_correlation_id: str, *, queue: str | None = None,
         app: Celery | None = None) -> list[DeadLetter]:
    """The dead letter with this id, or else every dead letter of the request with this
    correlation id. Both are UUIDs for task messages (a letter's id is its task id), but
    never the same one: a task id is not a request's correlation id."""
    letters = list_dead_letters(queue, app=app, limit=SCAN_LIMIT)
    by_id = [letter for letter in letters if letter.id == id_or_correlation_id][:1]
    found = by_id or [letter for letter in letters
                      if letter.correlation_id == id_or_correlation_id]
    if not found:
        raise DeadLetterNotFound(f"no dead letter with id or correlation id "
                                 f"{id_or_correlation_id!r}")
    return found


def _journal() -> redis.Redis:
    settings = get_settings()
    return redis.Redis.from_url(settings.idempotency_url or settings.result_backend)


def _replay_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Retry count reset; a fresh ``x_replay_id`` so a broker's duplicate detection (NATS
    ``Nats-Msg-Id``) does not take the replay for a second copy of the original."""
    cleaned = {k: v for k, v in headers.items() if k not in _RESET_HEADERS}
    cleaned["retries"] = 0
    cleaned[message_headers.REPLAY_ID] = uuid.uuid4().hex[:16]
    cleaned[message_headers.PUBLISHED_AT] = time.time()  # its queue wait starts now
    return cleaned


def _republish(connection: Connection, letter: DeadLetter) -> None:
    spec = topology.get(letter.queue)
    producer = connection.Producer()
    headers = _replay_headers(letter.headers)
    # In the dead letter's trace: the replayed attempt joins the request's trace.
    with replay_span(headers, spec.name, letter.summary()["correlation_id"]):
        producer.publish(
            letter.body,
            exchange=work_exchange,
            routing_key=spec.name,
            headers=headers,
            content_type=letter.content_type or "application/octet-stream",
            content_encoding=letter.content_encoding or "binary",
            delivery_mode=2,
            retry=True,
        )


def _message_count(connection: Connection, dlq: str) -> int:
    channel = connection.channel()
    try:
        _, count, _ = Queue(dlq, channel=channel).queue_declare(passive=True)
        return int(count)
    except Exception:
        return 0
    finally:
        with contextlib.suppress(Exception):  # a failed passive declare closed it already
            channel.close()


def replay(letter_id: str | None = None, *, correlation_id: str | None = None,
           queue: str | None = None, all_: bool = False,
           app: Celery | None = None) -> list[DeadLetter]:
    """Move one dead letter (by id), every dead letter of one request (``correlation_id``),
    or all of them (``all_``), back to their queues.

    The retry count is reset and the correlation id (header and envelope) kept. A replay
    replays what each DLQ held when the call started: a replayed message that fails again
    while the call runs lands behind that snapshot and is left for the next replay.
    """
    if sum((letter_id is not None, correlation_id is not None, all_)) != 1:
        raise ValueError("give a dead-letter id, a correlation id, or all_=True")
    if letter_id is not None:
        moved = _replay(lambda letter: letter.id == letter_id, queue, app, single=True)
        if not moved:
            raise DeadLetterNotFound(f"no dead letter with id {letter_id!r}")
        return moved
    if correlation_id is not None:
        moved = _replay(lambda letter: letter.correlation_id == correlation_id, queue, app)
        if not moved:
            raise DeadLetterNotFound(f"no dead letter of correlation id {correlation_id!r}")
        return moved
    return _replay(lambda letter: True, queue, app)


def replay_any(id_or_correlation_id: str, *, queue: str | None = None,
               app: Celery | None = None) -> list[DeadLetter]:
    """:func:`replay` of the dead letter with this id, or else of every dead letter of the
    request with this correlation id (see :func:`find`)."""
    letters = find(id_or_correlation_id, queue=queue, app=app)
    if letters[0].id == id_or_correlation_id:
        return replay(id_or_correlation_id, queue=queue, app=app)
    return replay(correlation_id=id_or_correlation_id, queue=queue, app=app)


def _replay(matches: Callable[[DeadLetter], bool], queue: str | None, app: Celery | None,
            single: bool = False) -> list[DeadLetter]:
    """Replay the dead letters ``matches`` takes (the first one only if ``single``)."""
    journal = _journal()
    moved: list[DeadLetter] = []
    try:
        with _connection(app) as connection:
            for dlq in dead_letter_queues(queue):
                snapshot = _message_count(connection, dlq)
                seen: set[str] = set()
                with _browse(connection, dlq) as messages:
                    for position, (message, letter) in enumerate(messages):
                        if position >= snapshot:
                            break
                        if letter.id in seen or not matches(letter):
                            continue  # left unacked: back in the DLQ when the channel closes
                        seen.add(letter.id)
                        key = JOURNAL_PREFIX + letter.fingerprint
                        sent_at = time.time()  # before a worker can receive it
                        if not journal.exists(key):
                            _republish(connection, letter)
                            journal.set(key, "1", ex=JOURNAL_TTL)
                        message.ack()
                        moved.append(letter)
                        _trace_replayed(letter, sent_at)
                        if single:
                            return moved
    finally:
        trace_record.flush()  # a replay is rare and its caller may exit at once
    return moved


def _trace_replayed(letter: DeadLetter, sent_at: float) -> None:
    trace_record.record(
        "replayed", letter.correlation_id, at=sent_at,
        task_id=letter.details.get("task_id") or letter.headers.get("id"),
        task=letter.details.get("task") or letter.headers.get("task"), queue=letter.queue,
        reason=letter.details.get("reason"), detail=f"from {letter.dlq}",
        dead_letter_id=letter.id)


def purge(queue: str | None = None, *, app: Celery | None = None) -> dict[str, int]:
    """Delete the dead letters of one or every DLQ; returns how many per DLQ."""
    removed: dict[str, int] = {}
    with _connection(app) as connection:
        for dlq in dead_letter_queues(queue):
            channel = connection.channel()
            try:
                removed[dlq] = int(Queue(dlq, channel=channel, no_declare=True).purge() or 0)
            except Exception:
                removed[dlq] = 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return removed
