"""A Kombu transport on Redis Streams: acks, dead-lettering and crash recovery done right.

URL: ``redis-streams://[[user]:password@]host:port/db`` (``rediss-streams://`` for TLS).

Why not Kombu's stock Redis transport: it keeps a message "unacked" in a hash and puts it
back when a *visibility timeout* expires, so a task that runs longer than the timeout (or
waits for its ETA) is delivered twice while it still runs; and ``reject(requeue=False)``
deletes. Here each queue is a stream with one consumer group shared by all workers:

- publish is ``XADD``; consume is ``XREADGROUP`` blocking in the server over every consumed
  stream at once (no polling sleeps); ack is ``XACK`` + ``XDEL``, so a stream only holds what
  is unread or unacknowledged. Acks are not waited for: they ride ahead of the next
  ``XREADGROUP`` in one write, or go through a background writer thread;
- a delivered, unacked message stays in the group's pending list under its consumer. A
  consumer is *alive* while a heartbeat thread refreshes its key (a thread, so a long task or a
  blocked event loop cannot stop it). Only a dead consumer's messages are reclaimed, and
  re-added with their return count + 1: there is no visibility timeout to outlive;
- ``reject(requeue=True)`` re-adds (count + 1); past the queue's ``x-delivery-limit``, or on
  ``reject(requeue=False)``, the message moves to the queue bound to the queue's
  ``x-dead-letter-exchange`` / ``x-dead-letter-routing-key`` (``<queue>.dlq`` in this project)
  with a RabbitMQ-style ``x-death`` header, the same contract as RabbitMQ. Each move is one Lua
  script guarded by ``XACK``'s result, so two reclaimers never move one message twice.

Fanout (Celery events, remote control) and bindings are Kombu's Redis machinery (pub/sub and
binding sets stored in Redis), so Flower and ``celery inspect`` work across processes.
Not supported: priorities (one stream per queue, FIFO), ``global_keyprefix``, Redis Cluster
(the scripts touch a queue and its DLQ in one call). A requeued message goes to the tail.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue as queue_module
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

from orchestrator.transports.bindings import BindingCache, Table, cached_match
from orchestrator.transports.dead_lettering import (
    REASON_DELIVERY_LIMIT,
    REASON_REJECTED,
    DeadLetterRoute,
    death_headers,
)
from orchestrator.transports.framing import decode_frame, foreign_frame, keep_trace_context

GROUP = "orchestrator"
ALIVE_PREFIX = "_orchestrator.streams.alive."

# Shared head of both moves: read the entry, ack it (only the first caller gets 1, so two
# reclaimers never move one message twice), and copy its fields but the return count (and,
# when ARGV[4] is '1', an earlier death's details, which a new dead-lettering replaces).
_MOVE_HEAD = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 or #entry == 0 then
    redis.call('XDEL', KEYS[1], ARGV[2])
    return 0
end
local fields = entry[1][2]
local out = {}
for i = 1, #fields, 2 do
    if fields[i] ~= 'returns' and not (ARGV[4] == '1' and fields[i] == 'dead_letter') then
        out[#out + 1] = fields[i]
        out[#out + 1] = fields[i + 1]
    end
end
"""

# Back to the tail of its own stream with a new return count (ARGV[3]).
_REQUEUE = _MOVE_HEAD + """
out[#out + 1] = 'returns'
out[#out + 1] = ARGV[3]
redis.call('XADD', KEYS[1], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# To every dead-letter stream in KEYS[2..], with the x-death details (ARGV[3]).
_DEAD_LETTER = _MOVE_HEAD + """
out[#out + 1] = 'returns'
out[#out + 1] = '0'
out[#out + 1] = 'dead_letter'
out[#out + 1] = ARGV[3]
for i = 2, #KEYS do
    redis.call('XADD', KEYS[i], '*', unpack(out))
end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return {_text(k): v for k, v in raw.items()}
    return {_text(k): v for k, v in zip(raw[::2], raw[1::2], strict=False)}


def _entries(response: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """Flatten an XREADGROUP reply (RESP2 list or RESP3 dict) to (stream, id, fields)."""
    if not response:
        return []
    streams = response.items() if isinstance(response, dict) else response
    found = []
    for stream, items in streams:
        if items and isinstance(items[0], list):  # RESP3 wraps the entry list once more
            items = items[0]
        for entry_id, raw in items or []:
            if raw is not None:  # None: deleted while pending
                found.append((_text(stream), _text(entry_id), _fields(raw)))
    return found


def _entry_payload(fields: dict[str, Any]) -> dict[str, Any]:
    """Kombu's payload from the entry's ``payload`` field, or a foreign frame."""
    if "payload" in fields:
        raw = fields["payload"]
        return decode_frame(raw if isinstance(raw, bytes | str) else str(raw))
    names = ", ".join(sorted(fields)) or "none"
    original = json.dumps({name: (value.decode("utf-8", errors="backslashreplace")
                                  if isinstance(value, bytes) else str(value))
                           for name, value in fields.items()})
    return foreign_frame(original.encode(), f"a stream entry without the 'payload' field "
                                            f"(fields: {names})")


def _count(value: Any) -> int:
    try:
        return max(int(_text(value if value is not None else 0)), 0)
    except (ValueError, UnicodeDecodeError):
        return 0


def _ack_commands(acks: list[tuple[str, str]]) -> list[tuple[Any, ...]]:
    """``XACK`` + ``XDEL`` per stream for ``(stream, entry id)`` pairs."""
    by_stream: dict[str, list[str]] = {}
    for stream, entry_id in acks:
        by_stream.setdefault(stream, []).append(entry_id)
    commands: list[tuple[Any, ...]] = []
    for stream, ids in by_stream.items():
        commands.append(("XACK", stream, GROUP, *ids))
        commands.append(("XDEL", stream, *ids))
    return commands


class BackgroundWriter:
    """Sends, from one thread, the commands whose reply the event loop need not wait for.

    - Fanout messages (remote-control broadcasts) and messages to transient queues (events
      to a monitor, replies): live-only, so a batch that fails is dropped; a worker's loop
      would otherwise spend a round trip per task event.
    - Acks (``XACK`` + ``XDEL``): like AMQP's ``basic.ack``, nobody waits for them, so the loop
      takes the next message at once. A batch that fails is retried until it lands (both
      commands are idempotent); an ack still queued when the process dies leaves the message
      pending, and it is reclaimed and redelivered like one never acked.

    What accumulated is sent as one pipeline, in order. :meth:`close` sends what is queued.
    """

    _STOP = object()
    BATCH = 200
    RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0)

    def __init__(self, connection_factory: Any) -> None:
        self._connection_factory = connection_factory
        self._queue: queue_module.Queue[Any] = queue_module.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="streams-writer")
        self._thread.start()

    def publish(self, topic: str, payload: str) -> None:
        self._queue.put(("publish", topic, payload))

    def ack(self, stream: str, entry_id: str) -> None:
        self._queue.put(("ack", stream, entry_id))

    def append_transient(self, stream: str, payload: str, maxlen: int,
                         expires_ms: int | None) -> None:
        self._queue.put(("transient", stream, (payload, maxlen, expires_ms)))

    def _next_batch(self, block: bool) -> tuple[list[Any], bool]:
        """Up to :data:`BATCH` queued commands (waiting for one if ``block``); and whether
        :meth:`close` asked to stop after them."""
        batch: list[Any] = [self._queue.get()] if block else []
        while len(batch) < self.BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue_module.Empty:
                break
        stop = any(item is self._STOP for item in batch)
        return [item for item in batch if item is not self._STOP], stop

    @staticmethod
    def _wire_commands(commands: list[Any]) -> list[tuple[Any, ...]]:
        wire: list[tuple[Any, ...]] = []
        for kind, key, value in commands:
            if kind == "publish":
                wire.append(("PUBLISH", key, value))
            elif kind == "transient":
                payload, maxlen, expires_ms = value
                wire.append(("XADD", key, "MAXLEN", "~", maxlen, "*",
                             "payload", payload, "returns", 0))
                if expires_ms:
                    wire.append(("PEXPIRE", key, expires_ms))
            else:
                wire.extend(_ack_commands([(key, value)]))
        return wire

    def _send(self, connection: Any, commands: list[Any]) -> None:
        """One write and one read for the whole batch, on a bare connection: redis-py's
        pipeline (pool checkout, response callbacks) costs more than the commands here."""
        wire = self._wire_commands(commands)
        try:
            connection.send_packed_command(connection.pack_commands(wire))
            for _ in wire:
                # A refused command (XACK after the group was deleted) has nothing to retry.
                with contextlib.suppress(redis.ResponseError):
                    connection.read_response()
        except Exception:
            connection.disconnect()  # replies may be left unread: start clean next time
            raise

    def _run(self) -> None:
        connection = self._connection_factory()
        retry: list[Any] = []
        failures = 0
        stop = False
        while True:
            fresh, stop_seen = self._next_batch(block=not retry and not stop)
            stop = stop or stop_seen
            commands, retry = retry + fresh, []
            if commands:
                try:
                    self._send(connection, commands)
                    failures = 0
                except Exception:
                    failures += 1
                    retry = [command for command in commands if command[0] == "ack"]
                    if retry and not (stop and failures > len(self.RETRY_DELAYS)):
                        delay = self.RETRY_DELAYS[min(failures, len(self.RETRY_DELAYS)) - 1]
                        self._stopping.wait(delay)
                        continue
                    retry = []  # closing and Redis is gone: the reclaim redelivers them
            if stop and not retry:
                return

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (waiting up to ``timeout`` seconds), then stop the thread."""
        self._queue.put(self._STOP)
        self._thread.join(timeout)
        self._stopping.set()


class QoS(virtual.QoS):
    """Acks and rejects go to the stream; nothing is kept on a visibility clock."""

    restore_at_shutdown = True

    def ack(self, delivery_tag: str) -> None:
        message = self._delivered.get(delivery_tag)
        if message is not None and delivery_tag not in self._dirty:
            self.channel.ack_entry(message)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        message = self._delivered.get(delivery_tag)
        if message is not None and delivery_tag not in self._dirty:
            if requeue:
                self.channel.return_entry(message)
            else:
                self.channel.dead_letter_entry(message, REASON_REJECTED)
        super().ack(delivery_tag)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """Called periodically by Kombu's poller: reclaim dead consumers' messages."""
        self.channel.maintain()


class Channel(kombu_redis.Channel):
    """One consumer of the group per channel, with its own heartbeat."""

    QoS = QoS  # type: ignore[assignment]
    consumer_ttl = 4.0
    reclaim_interval = 1.0
    transient_maxlen = 10_000
    priority_steps = [0]  # noqa: RUF012  (Kombu reads it per instance)

    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.Channel.from_transport_options,
        "consumer_ttl",
        "reclaim_interval",
        "transient_maxlen",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.consumer_name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._last_reclaim = 0.0
        self._groups_made: set[str] = set()
        self._acks_for_next_poll: list[tuple[str, str]] = []
        self._acks_in_flight: list[tuple[str, str]] = []
        self._ack_replies_due = 0
        self._reclaimed_on_get: set[str] = set()
        self._capped_pending = 0  # replies of append_capped not read yet
        self._batch: list[tuple[str, str]] | None = None  # see start_batch
        self._tag_prefix = uuid.uuid4().hex[:12] + "."
        self._tag_numbers = itertools.count(1)
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("redis-streams: global_keyprefix is not supported")

    def _next_delivery_tag(self) -> str:
        """Unique within this channel, which is all a tag needs (QoS is per channel); a
        counter, not Kombu's ``uuid4`` (a ``urandom`` call for every message and event)."""
        return f"{self._tag_prefix}{next(self._tag_numbers)}"

    # -- configuration ----------------------------------------------------------------------

    @property
    def queue_configs(self) -> dict[str, DeadLetterRoute]:
        configs: dict[str, DeadLetterRoute] = self.connection.__dict__.setdefault(
            "_stream_queue_configs", {})
        return configs

    @property
    def bindings(self) -> BindingCache:
        """Binding tables of this connection's channels (see :mod:`.bindings`)."""
        cache: BindingCache = self.connection.__dict__.setdefault("_binding_cache",
                                                                  BindingCache())
        return cache

    def get_table(self, exchange: str) -> Table:
        return self.bindings.get(exchange, lambda: super(Channel, self).get_table(exchange))

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> list[str]:
        """Route with the cached table; on a miss read the broker again (a reply queue may
        have been bound a moment ago by another process)."""
        found: list[str] = (cached_match(self, self.bindings, exchange, routing_key)
                            or super()._lookup(exchange, routing_key, default))
        return found

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        super()._queue_bind(exchange, routing_key, pattern, queue)
        self.bindings.forget(exchange)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        super()._delete(queue, *args, **kwargs)
        if args:
            self.bindings.forget(str(args[0]))

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        conninfo = self.connection.client
        if str(conninfo.transport_cls).startswith("rediss") and not conninfo.ssl:
            conninfo.ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        params: dict[str, Any] = super()._connparams(asynchronous)
        return params

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """One pooled client per channel instead of a new client object per command (the
        pool behind it is thread-safe); the stock transport builds one each time."""
        if client is not None:
            yield client
            return
        pooled = self.__dict__.get("_pooled_client")
        if pooled is None or pooled.connection_pool is not self.pool:
            pooled = self.__dict__["_pooled_client"] = self._create_client()
        yield pooled

    @cached_property
    def _scripts(self) -> dict[str, Any]:
        """Lua scripts, registered once; always *called* with a pooled client, because
        ``self.client``'s connection may be blocked in an ``XREADGROUP`` at that moment."""
        registrar = redis.Redis(connection_pool=self.pool)
        return {"requeue": registrar.register_script(_REQUEUE),
                "dead_letter": registrar.register_script(_DEAD_LETTER)}

    def _run_script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        with self.conn_or_acquire() as client:
            return self._scripts[name](keys=keys, args=args, client=client)

    # -- queues -----------------------------------------------------------------------------

    def _ensure_group(self, client: Any, queue: str) -> None:
        try:
            client.xgroup_create(queue, GROUP, id="0", mkstream=True)
        except self.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups_made.add(queue)

    def _new_queue(self, queue: str, auto_delete: bool = False, **kwargs: Any) -> None:
        super()._new_queue(queue, auto_delete=auto_delete, **kwargs)
        self.queue_configs[queue] = DeadLetterRoute.from_arguments(kwargs.get("arguments"))
        with self.conn_or_acquire() as client:
            self._ensure_group(client, queue)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        kwargs.pop("_publish_batch", None)
        if queue in self.auto_delete_queues or queue in self._expires:
            # Live-only (events to a monitor's queue, replies): nobody waits for the reply.
            self._writer.append_transient(queue, dumps(message), self.transient_maxlen,
                                          self._expires.get(queue))
            return
        if self._batch is not None:
            self._batch.append((queue, dumps(message)))
            return
        with self.conn_or_acquire() as client:
            client.xadd(queue, {"payload": dumps(message), "returns": 0})

    def start_batch(self) -> None:
        """Hold the durable messages published from now on until :meth:`finish_batch`
        (:mod:`orchestrator.transports.confirm_batch`)."""
        self._batch = []

    def finish_batch(self, timeout: float) -> list[BaseException | None]:
        """Write the held messages as one pipeline of ``XADD``s; each one's outcome (None:
        Redis added it), in order. A broken connection fails every one not yet answered."""
        batch, self._batch = self._batch or [], None
        if not batch:
            return []
        try:
            with self.conn_or_acquire() as client:
                pipeline = client.pipeline(transaction=False)
                for queue, payload in batch:
                    pipeline.xadd(queue, {"payload": payload, "returns": 0})
                replies = pipeline.execute(raise_on_error=False)
        except Exception as exc:
            return [exc] * len(batch)
        return [reply if isinstance(reply, BaseException) else None for reply in replies]

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str,
                    **kwargs: Any) -> None:
        kwargs.pop("_publish_batch", None)
        payload = dumps(message)
        for topic in self._get_publish_topics(exchange, routing_key):
            self._writer.publish(topic, payload)

    def append_capped(self, stream: str, fields: dict[str, str], maxlen: int,
                      wait: bool) -> None:
        """Add an entry to a capped stream that is not a queue (no group, no acks), e.g. an
        event log other clients ``XREAD``.

        On a connection of its own, from the calling thread: the command is written, and its
        reply read before the next one is written (``wait``: at once). No thread: a writer
        thread woken for every entry made the caller wait for the GIL after each of its own
        socket calls, which cost a task more than the entry itself. An entry whose reply
        says it failed, or that is written when the connection breaks, is lost: the error
        is raised by the next call."""
        connection = self.__dict__.get("_capped_connection")
        if connection is None:
            connection = self.__dict__["_capped_connection"] = self._bare_connection()
        flat = [item for pair in fields.items() for item in pair]
        try:
            self._read_capped_replies(connection)
            connection.send_packed_command(connection.pack_command(
                "XADD", stream, "MAXLEN", "~", maxlen, "*", *flat))
            self._capped_pending = 1
            if wait:
                self._read_capped_replies(connection)
        except Exception:
            self._capped_pending = 0
            connection.disconnect()  # a reply may be left unread: start clean next time
            raise

    def _read_capped_replies(self, connection: Any) -> None:
        while self._capped_pending:
            self._capped_pending -= 1
            connection.read_response()

    def _size(self, queue: str) -> int:
        with self.conn_or_acquire() as client:
            return int(client.xlen(queue))

    def _purge(self, queue: str) -> int:
        with self.conn_or_acquire() as client:
            size = int(client.xlen(queue))
            client.xtrim(queue, maxlen=0, approximate=False)
            return size

    def _get(self, queue: str, timeout: Any = None) -> dict[str, Any]:
        """``basic_get``: one message, without blocking."""
        self._start_heartbeat()
        with self.conn_or_acquire() as client:
            if queue not in self._groups_made:
                self._ensure_group(client, queue)
            if queue not in self._reclaimed_on_get:  # once per channel: browsing a DLQ
                self._reclaimed_on_get.add(queue)    # calls this for every message
                self.reclaim(client, queue)
            response = client.xreadgroup(GROUP, self.consumer_name, {queue: ">"}, count=1)
        entries = _entries(response)
        if not entries:
            raise virtual.Empty()
        stream, entry_id, fields = entries[0]
        return self._to_message(stream, entry_id, fields)

    # -- consuming --------------------------------------------------------------------------

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            self._hand_acks_to_writer()
            return
        self._start_heartbeat()
        if not self.connection.on_event_loop:
            # No hub to call restore_visible on a timer (a gevent worker's drain_events loop,
            # a plain consumer): Kombu's poller calls it only after a poll with no event,
            # which a busy or idle read never has (each BLOCK ends with a reply). Reclaim
            # here instead, at most every reclaim_interval.
            self._reclaim_if_due()
        connection = self.client.connection
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        block_ms = max(int((timeout or 1) * 1000), 1)
        read = ("XREADGROUP", "GROUP", GROUP, self.consumer_name, "COUNT", 1,
                "BLOCK", block_ms, "STREAMS", *queues, *([">"] * len(queues)))
        acks, self._acks_for_next_poll = self._acks_for_next_poll, []
        commands = [*_ack_commands(acks), read]
        try:
            connection.send_packed_command(connection.pack_commands(commands))
        except Exception:
            self._acks_for_next_poll = acks + self._acks_for_next_poll
            self._hand_acks_to_writer()
            raise
        self._acks_in_flight = acks
        self._ack_replies_due = len(commands) - 1

    def _read_ack_replies(self) -> bool:
        """Read the replies of the acks sent ahead of the ``XREADGROUP``; whether its own
        reply is there to read too (else it still blocks in the server: wait for it)."""
        connection = self.client.connection
        try:
            while self._ack_replies_due:
                # A refused ack (the group was deleted) has nothing to retry.
                with contextlib.suppress(self.ResponseError):
                    connection.read_response()
                self._ack_replies_due -= 1
        except self.connection_errors:
            self._resend_unconfirmed_acks()
            connection.disconnect()
            self._in_poll = None  # type: ignore[assignment]
            raise
        self._acks_in_flight = []
        return bool(connection.can_read(timeout=0))

    def _resend_unconfirmed_acks(self) -> None:
        """Acks whose replies were not read (connection lost, channel closing) may not have
        landed: the writer sends them again, with any still waiting for a read (``XACK``
        and ``XDEL`` are idempotent)."""
        self._acks_for_next_poll = self._acks_in_flight + self._acks_for_next_poll
        self._acks_in_flight = []
        self._ack_replies_due = 0
        self._hand_acks_to_writer()

    def _hand_acks_to_writer(self) -> None:
        acks, self._acks_for_next_poll = self._acks_for_next_poll, []
        for stream, entry_id in acks:
            self._writer.ack(stream, entry_id)

    def _on_connection_disconnect(self, connection: Any) -> None:
        if self._in_poll is connection and (self._acks_in_flight or self._ack_replies_due):
            self._resend_unconfirmed_acks()
        super()._on_connection_disconnect(connection)

    def _brpop_read(self, **options: Any) -> bool:
        if self._ack_replies_due and not self._read_ack_replies():
            raise virtual.Empty()  # the hub calls again when the XREADGROUP reply arrives
        try:
            try:
                response = self.client.parse_response(self.client.connection, "XREADGROUP",
                                                      **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except self.ResponseError as exc:
                # NOGROUP: the group is gone; UNBLOCKED: a consumed stream was deleted.
                if "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc):
                    self._groups_made.clear()
                    with self.conn_or_acquire() as client:
                        for queue in self.active_queues:
                            self._ensure_group(client, queue)
                    raise virtual.Empty() from None
                raise
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()
        entries = _entries(response)
        if not entries:
            raise virtual.Empty()
        room = self.qos.can_consume_max_estimate()
        room = len(entries) if room is None else max(room, 1)
        for stream, entry_id, fields in entries[room:]:
            # Several streams had data at once: hand back what exceeds the prefetch window,
            # uncounted, so prefetch is honoured exactly.
            self._run_script("requeue", [stream],
                             [GROUP, entry_id, _text(fields.get("returns", 0)), "0"])
        for stream, entry_id, fields in entries[:room]:
            self._queue_cycle.rotate(stream)
            self.connection._deliver(self._to_message(stream, entry_id, fields), stream)
        return True

    def _to_message(self, stream: str, entry_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The Kombu payload of a stream entry; never raises, whatever the entry holds (a
        foreign one becomes a message the gate refuses, see :mod:`.framing`)."""
        payload = keep_trace_context(_entry_payload(fields), fields)
        returns = _count(fields.get("returns"))
        properties = payload.setdefault("properties", {})
        properties["delivery_tag"] = self._next_delivery_tag()
        info = properties.setdefault("delivery_info", {})
        info.setdefault("routing_key", stream)
        info.update(x_stream=stream, x_stream_id=entry_id, x_returns=returns,
                    redelivered=returns > 0)
        headers = payload["headers"]
        if returns:
            headers["x-delivery-count"] = returns
        if "dead_letter" in fields:
            with contextlib.suppress(ValueError, TypeError, UnicodeDecodeError):
                headers.update(loads(_text(fields["dead_letter"])))
        return payload

    def browse(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of ``queue``, oldest first, without taking them.

        ``XRANGE`` reads the entries where they are: nothing is delivered, held or returned,
        so reading a dead-letter queue changes neither its order nor any count (a ``basic_get``
        and a return would re-add every entry at the stream's end).
        """
        with self.conn_or_acquire() as client:
            raw = client.xrange(queue, count=max(limit, 1))
        return [self._to_message(queue, _text(entry_id), _fields(fields))
                for entry_id, fields in raw if fields is not None]

    # -- acks, returns, dead letters --------------------------------------------------------

    @staticmethod
    def _where(message: Any) -> tuple[str, str, int] | None:
        """Where a delivered message lives; None for fanout (pub/sub) messages, which are
        live-only and have nothing to ack."""
        info = message.delivery_info
        if "x_stream" not in info:
            return None
        return info["x_stream"], info["x_stream_id"], int(info.get("x_returns", 0))

    def ack_entry(self, message: Any) -> None:
        """Ack on the next ``XREADGROUP``'s write, or through the writer thread.

        An ack frees a prefetch slot, so a consuming channel sends its next ``XREADGROUP``
        in the same loop turn: the ``XACK`` + ``XDEL`` ride ahead of it in one write, and
        their replies are read before its own. When that read is already waiting in the
        server, or no read is sure to follow (``basic_get``, no event loop), the writer
        sends them.
        """
        where = self._where(message)
        if where is None:
            return
        stream, entry_id, _ = where
        if self._in_poll or not self.active_queues or not self._next_read_is_due:
            self._writer.ack(stream, entry_id)
        else:
            self._acks_for_next_poll.append((stream, entry_id))

    @property
    def _next_read_is_due(self) -> bool:
        """On an event loop (a Celery worker) the next turn sends the next read; a plain
        ``drain_events`` caller may never call again."""
        return bool(getattr(self.connection, "on_event_loop", False))

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        """Kombu's, plus this channel registered as a consumer of the stream's group at once
        (with its liveness key), so ``orchestrator_queue_consumers`` counts a worker that
        listens to a stream before its first message: ``XREADGROUP`` registers a consumer
        only in a stream it returns an entry from."""
        result = super().basic_consume(queue, *args, **kwargs)
        if queue not in self.active_fanout_queues:
            self._start_heartbeat()
            with contextlib.suppress(self.ResponseError), self.conn_or_acquire() as client:
                client.xgroup_createconsumer(queue, GROUP, self.consumer_name)
                self._groups_made.add(queue)  # the group exists: close() removes us from it
        return result

    def basic_cancel(self, consumer_tag: str) -> Any:
        result = super().basic_cancel(consumer_tag)
        self._hand_acks_to_writer()  # no read may follow for this consumer
        return result

    @property
    def _writer(self) -> BackgroundWriter:
        """Started on first use: a publisher-only channel never starts the thread."""
        writer = self.__dict__.get("_background_writer")
        if writer is None:
            writer = self.__dict__["_background_writer"] = BackgroundWriter(
                self._bare_connection)
        return writer

    def _bare_connection(self) -> Any:
        """A connection of its own, with this channel's settings (TLS, auth, timeouts)."""
        return self.pool.connection_class(**self.pool.connection_kwargs)

    def return_entry(self, message: Any) -> None:
        """A delivery that did not complete: re-add with one more return, or dead-letter."""
        where = self._where(message)
        if where is not None:
            stream, entry_id, returns = where
            self._return(stream, entry_id, returns + 1)

    def _return(self, stream: str, entry_id: str, returns: int) -> None:
        config = self.queue_configs.get(stream)
        if config is not None and config.past_limit(returns):
            self._move_to_dead_letters(stream, entry_id, REASON_DELIVERY_LIMIT, returns)
        else:
            self._run_script("requeue", [stream], [GROUP, entry_id, returns, "0"])

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        """Channel closing with unacked messages: they count as returned, as on RabbitMQ."""
        self.return_entry(message)

    def _restore_at_beginning(self, message: Any) -> None:
        self.return_entry(message)

    def dead_letter_entry(self, message: Any, reason: str) -> None:
        where = self._where(message)
        if where is not None:
            stream, entry_id, returns = where
            self._move_to_dead_letters(stream, entry_id, reason, returns)

    def _move_to_dead_letters(self, stream: str, entry_id: str, reason: str,
                              returns: int) -> None:
        config = self.queue_configs.get(stream)
        targets: list[str] = []
        if config is not None and config.exchange is not None:
            routing_key = config.routing_key or stream
            targets = sorted(set(self._lookup(config.exchange, routing_key)))
        death = death_headers(reason=reason, queue=stream, exchange="", routing_keys=[stream],
                              returns=returns)
        self._run_script("dead_letter", [stream, *targets],
                         [GROUP, entry_id, json.dumps(death), "1"])

    # -- liveness and reclaiming ------------------------------------------------------------

    def _alive_key(self, consumer: str) -> str:
        return ALIVE_PREFIX + consumer

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None:
            return
        client = redis.Redis(connection_pool=self.pool)
        client.set(self._alive_key(self.consumer_name), "1", px=int(self.consumer_ttl * 1000))
        self._heartbeat = threading.Thread(target=self._beat, args=(client,), daemon=True,
                                           name=f"streams-heartbeat-{self.consumer_name}")
        self._heartbeat.start()

    def _beat(self, client: Any) -> None:
        """Refresh this consumer's key until the channel closes (a thread: survives long
        tasks in the main thread, e.g. with ``--pool=solo``)."""
        key = self._alive_key(self.consumer_name)
        while not self._heartbeat_stop.wait(self.consumer_ttl / 3):
            try:
                client.set(key, "1", px=int(self.consumer_ttl * 1000))
            except Exception:  # the next beat retries; reconnects are redis-py's job
                continue

    def maintain(self) -> None:
        """Reclaim the messages of dead consumers of the queues this channel consumes."""
        if self._acks_for_next_poll and not self._in_poll:  # no poll came (consumer paused)
            self._hand_acks_to_writer()
        self._reclaim_if_due()

    def _reclaim_if_due(self) -> None:
        now = monotonic()
        if now - self._last_reclaim < self.reclaim_interval:
            return
        self._last_reclaim = now
        with self.conn_or_acquire() as client:
            for queue in list(self.active_queues):
                self.reclaim(client, queue)

    def reclaim(self, client: Any, queue: str) -> int:
        """Re-add (or dead-letter, past the limit) every message held by a dead consumer."""
        moved = 0
        try:
            consumers = client.xinfo_consumers(queue, GROUP)
        except self.ResponseError:
            return 0
        for consumer in consumers:
            name = _text(consumer["name"])
            if name == self.consumer_name or client.exists(self._alive_key(name)):
                continue
            if not consumer["pending"]:
                client.xgroup_delconsumer(queue, GROUP, name)
                continue
            pending = client.xpending_range(queue, GROUP, min="-", max="+", count=1000,
                                            consumername=name)
            for item in pending:
                entry_id = _text(item["message_id"])
                entry = client.xrange(queue, entry_id, entry_id)
                if not entry:
                    client.xack(queue, GROUP, entry_id)
                    continue
                returns = int(_text(_fields(entry[0][1]).get("returns", 0)))
                self._return(queue, entry_id, returns + 1)
                moved += 1
        return moved

    def close(self) -> None:
        self._heartbeat_stop.set()
        if self._acks_in_flight or self._acks_for_next_poll:
            self._resend_unconfirmed_acks()
        writer = self.__dict__.pop("_background_writer", None)
        if writer is not None:
            writer.close()  # acks first: the consumer is deleted below only without pending
        capped = self.__dict__.pop("_capped_connection", None)
        if capped is not None:
            with contextlib.suppress(Exception):
                self._read_capped_replies(capped)
            capped.disconnect()
        super().close()
        if self._heartbeat is not None:
            try:
                with self.conn_or_acquire() as client:
                    client.delete(self._alive_key(self.consumer_name))
                    for queue in self._groups_made:
                        info = [c for c in client.xinfo_consumers(queue, GROUP)
                                if _text(c["name"]) == self.consumer_name]
                        if info and not info[0]["pending"]:
                            client.xgroup_delconsumer(queue, GROUP, self.consumer_name)
            except Exception:  # closing after a lost connection: reclaim will clean up
                pass


class Transport(kombu_redis.Transport):
    """``redis-streams://`` — see the module docstring."""

    Channel = Channel
    driver_type = "redis"
    driver_name = "redis-streams"
    on_event_loop = False  # set once a hub drives it: acks may then wait for the next read
    implements = kombu_redis.Transport.implements.extend(batch_publish=False)

    def __init__(self, client: Any, *args: Any, **kwargs: Any) -> None:
        # Kombu's poller calls restore_visible (our reclaim) on this interval; the channel
        # throttles the actual scan itself (reclaim_interval).
        client.transport_options.setdefault("unacked_restore_interval", 1)
        super().__init__(client, *args, **kwargs)

    @property
    def supports_batch_publish(self) -> bool:
        return False

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Kombu's, with a cheaper per-turn hook.

        Kombu re-adds every socket to the hub on every loop turn; each re-add is an
        ``epoll_ctl`` that fails with ``EEXIST`` and an exception caught. The poller
        (un)registers its sockets with epoll itself (connect, pause, resume), so only a
        socket whose reader the hub does not hold yet (new, or its fd number reused) needs
        adding. Also marks the transport as driven by a loop: acks may wait for the next read.
        """
        hooks_before = set(loop.on_tick)
        super().register_with_event_loop(connection, loop)
        self.on_event_loop = True
        added = [hook for hook in loop.on_tick if hook not in hooks_before]
        if len(added) != 1:  # not the Kombu this was written against: keep its hook
            return
        cycle, readers, on_readable = self.cycle, loop.readers, self.on_readable

        def on_poll_start() -> None:
            cycle.on_poll_start()
            for fd in cycle.fds:
                if readers.get(fd) != (on_readable, (fd,)):
                    loop.add_reader(fd, on_readable, fd)

        loop.on_tick.discard(added[0])
        loop.on_tick.add(on_poll_start)
