"""How old the oldest message of a queue is, and how many consumers it has, per broker.

Read at scrape time, like the depths, one small function per broker. "Oldest message" means
the oldest of the messages ``orchestrator_queue_messages`` counts on that broker, so the two
figures always describe the same messages:

- **Redis Streams** (counted: not yet acknowledged). Entry ids are the server's millisecond
  clock at ``XADD``. The oldest unacknowledged entry is the older of the group's oldest pending
  one (``XPENDING``: delivered, not acked) and the first entry after its ``last-delivered-id``
  (never delivered). A message put back in its stream (a return, a reclaim from a dead
  consumer) is re-added, so it counts from its return. Consumers: the group's consumers
  whose liveness key (the transport's heartbeat) still exists; a worker registers itself in
  each stream it consumes when it starts consuming it.
- **NATS JetStream** (counted: not yet acknowledged). A queue is a work-queue stream, where an
  ack removes the message, so the stream's first message is the oldest one not acked; its
  stored time comes from a get by sequence, which delivers nothing. Consumers: the pull
  requests open on the queue's consumer (``num_waiting``): a worker channel with room for a
  message keeps one open, a worker whose every slot is busy has none.
- **RabbitMQ** (counted: ready). A classic DLQ is read with ``basic_get`` and returned, which
  has no side effect (see :mod:`orchestrator.failures.dead_letter_queues`); a quorum step
  queue must not be read that way (each read counts as a delivery towards its delivery
  limit), and RabbitMQ 3.x without the management plugin says nothing about a queue's head.
  For step queues :class:`ReadyHeadEstimate` gives an upper bound instead. Consumers: the
  passive declare's ``consumer_count``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orchestrator.transports.nats_jetstream import CONSUMER as NATS_CONSUMER
from orchestrator.transports.nats_jetstream import SUBJECT_QUEUE as NATS_SUBJECT_PREFIX
from orchestrator.transports.nats_jetstream import escape as nats_name
from orchestrator.transports.redis_streams import ALIVE_PREFIX as STREAMS_ALIVE_PREFIX
from orchestrator.transports.redis_streams import GROUP as STREAMS_GROUP


@dataclass(frozen=True)
class QueueReading:
    """What one scrape learnt of one queue."""

    oldest_at: float | None
    """Unix seconds of the oldest counted message; None when there is none (or not known)."""
    consumers: int | None
    """Consumers of the queue; None when the broker did not say."""

    def oldest_age(self, now: float) -> float:
        """Seconds since the oldest message arrived; 0 for an empty queue."""
        return 0.0 if self.oldest_at is None else max(now - self.oldest_at, 0.0)


def broker_kind(connection: Any) -> str:
    """``amqp``, ``redis-streams`` or ``nats`` (what each reader below serves)."""
    name = str(getattr(connection.transport, "driver_name", "") or "")
    if name in ("redis-streams", "nats-jetstream"):
        return "nats" if name == "nats-jetstream" else "redis-streams"
    return "amqp"


@contextmanager
def _channel(connection: Any) -> Iterator[Any]:
    channel = connection.channel()
    try:
        yield channel
    finally:
        with contextlib.suppress(Exception):  # a refused passive declare closed it already
            channel.close()


# -- Redis Streams ------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_id_time(entry_id: Any) -> float:
    """The Unix time of a stream entry id (``<milliseconds>-<sequence>``)."""
    return int(_text(entry_id).split("-", 1)[0]) / 1000.0


def read_streams(connection: Any, queue: str) -> QueueReading:
    """Oldest unacknowledged entry and live consumers of one stream."""
    with _channel(connection) as channel, channel.conn_or_acquire() as client:
        try:
            groups = client.xinfo_groups(queue)
        except Exception:  # no such stream yet: nothing waits, nobody consumes
            return QueueReading(None, 0)
        group = next((g for g in groups if _text(g["name"]) == STREAMS_GROUP), None)
        if group is None:
            first = client.xrange(queue, count=1)
            return QueueReading(stream_id_time(first[0][0]) if first else None, 0)
        pending = client.xpending(queue, STREAMS_GROUP)
        after = _text(group.get("last-delivered-id") or "0-0")
        undelivered = client.xrange(queue, min="(" + after, count=1)
        candidates = [stream_id_time(entry_id) for entry_id in
                      (pending.get("min") if pending.get("pending") else None,
                       undelivered[0][0] if undelivered else None) if entry_id is not None]
        consumers = client.xinfo_consumers(queue, STREAMS_GROUP)
        names = [_text(c["name"]) for c in consumers]
        alive = int(client.exists(*[STREAMS_ALIVE_PREFIX + n for n in names])) if names else 0
    return QueueReading(min(candidates) if candidates else None, alive)


# -- NATS JetStream -----------------------------------------------------------------------


def read_nats(connection: Any, queue: str) -> QueueReading:
    """First message of the queue's work-queue stream, and open pull requests."""
    transport = connection.transport
    stream = nats_name(queue)

    async def read() -> QueueReading:
        from nats.js.errors import NotFoundError

        js = transport.js
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            return QueueReading(None, 0)
        oldest: float | None = None
        if info.state.messages:
            try:
                first = await js.get_msg(stream, seq=max(info.state.first_seq, 1), next=True,
                                         subject=NATS_SUBJECT_PREFIX + stream)
                oldest = first.time.timestamp() if first.time is not None else None
            except NotFoundError:  # acked between the two reads
                oldest = None
        try:
            consumer = await js.consumer_info(stream, NATS_CONSUMER)
            waiting = int(consumer.num_waiting or 0)
        except NotFoundError:
            waiting = 0
        return QueueReading(oldest, waiting)

    with _channel(connection):  # makes sure the transport's NATS connection is up
        reading: QueueReading = transport.run(read(), timeout=10)
    return reading


# -- RabbitMQ -----------------------------------------------------------------------------


def read_amqp_consumers(connection: Any, queue: str) -> int | None:
    """``consumer_count`` from a passive declare (no side effect on the queue)."""
    with _channel(connection) as channel:
        try:
            return int(channel.queue_declare(queue=queue, passive=True).consumer_count)
        except Exception:  # no such queue yet
            return None


class ReadyHeadEstimate:
    """An upper bound of the age of a RabbitMQ quorum queue's oldest ready message.

    The queue cannot be read without counting a delivery, so the bound comes from two
    observations, the later one winning, both of which only ever make it *older* than the
    truth (as long as the queue is first in, first out):

    - the last scrape that found the queue with no ready message: whatever is ready now came
      after it;
    - the newest ``ready_at`` (publish time, or ETA when later) of any message a worker started
      from the queue, from the task events: a message still waiting was published after the
      ones already taken.

    With neither (the exporter started with a backlog nobody takes), it is the time since
    this exporter first saw the queue non-empty: then it is a lower bound, still growing for
    as long as nothing is taken. 0 whenever the queue has no ready message.
    """

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._last_empty: dict[str, float] = {}
        self._first_busy: dict[str, float] = {}

    def observe(self, queue: str, ready: int, newest_started: float | None) -> QueueReading:
        now = self._clock()
        if ready <= 0:
            self._last_empty[queue] = now
            self._first_busy.pop(queue, None)
            return QueueReading(None, None)
        references = [t for t in (self._last_empty.get(queue), newest_started) if t is not None]
        if not references:
            references = [self._first_busy.setdefault(queue, now)]
        return QueueReading(min(max(references), now), None)
