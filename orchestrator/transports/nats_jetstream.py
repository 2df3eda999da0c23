"""A Kombu transport on NATS JetStream (nats-py), with the same contract as the other brokers.

URL: ``nats://[user:password@]host:port`` (``nats://token@host:port`` for a token,
``tls://host:port`` for TLS); several servers of a cluster as Kombu's failover list,
``nats://h1:4222;nats://h2:4222`` — all of them are given to nats-py, which handles the cluster.
Transport options: ``creds_file`` (a ``.creds`` file), ``tls_ca_file``, ``tls_cert_file``,
``tls_key_file``, ``ack_wait`` (4 s), ``fetch_timeout`` (5 s), ``duplicate_window`` (120 s).

Design:

- A *durable* queue (Celery's task queues, the DLQs) is a JetStream stream with file storage
  and work-queue retention, consumed through one durable pull consumer shared by every worker
  (competing consumers), explicit acks. Ack: ``ack``; ``reject(requeue=True)``: ``nak``;
  ``reject(requeue=False)`` and a delivery count (JetStream's ``num_delivered``) past the
  queue's ``x-delivery-limit``: the message moves to the queue bound to the queue's
  ``x-dead-letter-exchange`` with an ``x-death`` header, as on RabbitMQ, then is acked.
- A consumer that holds a message (a long task, an ETA) signals ``in_progress`` every third of
  ``ack_wait``, so JetStream redelivers only the messages of a consumer that died.
- A publication carries ``Nats-Msg-Id = <task id>:<retries>[:<replay id>]``: JetStream drops a
  second publication of the same task attempt inside ``duplicate_window``.
- A *transient* queue (auto-delete: Celery's event, remote-control and reply queues) and fanout
  exchanges are core NATS subjects: live delivery, nothing stored, like Kombu's Redis pub/sub.
- Bindings and which queues are transient live in a JetStream key-value bucket, so routing
  works across processes (``get_table`` reads the broker, cached as in :mod:`.bindings`).
- nats-py is asyncio: each Kombu connection runs one event loop in one thread with one NATS
  connection (under gevent, the process's connections share one loop); the Kombu side submits
  coroutines to it. Messages arrive through one inbox per
  connection that ``drain_events`` blocks on: no polling sleeps.

Not supported: priorities.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue as queue_module
import re
import ssl
import threading
import time
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import nats
from kombu.transport import virtual
from kombu.utils.compat import detect_environment
from kombu.utils.json import dumps
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import (
    BadRequestError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
)

from orchestrator.transports.bindings import BindingCache, Table, cached_match
from orchestrator.transports.dead_lettering import (
    REASON_DELIVERY_LIMIT,
    REASON_REJECTED,
    DeadLetterRoute,
    death_headers,
)
from orchestrator.transports.framing import (
    FOREIGN_FRAME_HEADER,
    decode_frame,
    keep_trace_context,
)

T = TypeVar("T")

NO_ROUTE = DeadLetterRoute()
"""The route of a queue this channel did not declare: no DLQ, no delivery limit."""

logger = logging.getLogger("orchestrator.transports.nats")

CONSUMER = "orchestrator"
KV_BUCKET = "orchestrator_topology"
SUBJECT_QUEUE = "orq.q."
SUBJECT_TRANSIENT = "orq.t."
SUBJECT_FANOUT = "orq.f."
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


class MessageTooLarge(ValueError):
    """The server refuses payloads over its ``max_payload`` (1 MiB by default)."""


LEASE_SECONDS = 60.0
"""Least lifetime of a transient queue's binding without a refresh (NATS has no auto-delete:
a consumer killed without closing its channel must not stay bound forever)."""


def escape(name: str) -> str:
    """A queue or exchange name as one subject token / stream name / KV key part."""
    return _UNSAFE.sub(lambda m: f"-{ord(m.group()):02x}", name) or "-"


def _is_transient(kwargs: dict[str, Any]) -> bool:
    arguments = kwargs.get("arguments") or {}
    return bool(kwargs.get("auto_delete") or kwargs.get("exclusive")
                or "x-expires" in arguments)


class Wakeup:
    """A self-pipe: the NATS thread writes a byte when a message arrives, Celery's event loop
    polls the read end. Both ends are non-blocking; a full pipe already means "wake up"."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def signal(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"x")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._read, 4096):
                pass

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


class EventLoopThread:
    """One asyncio loop in one daemon thread; the sync side submits coroutines to it.

    Each connection has its own loop, except under a green pool (gevent, eventlet): there
    every thread is a greenlet of one OS thread, and asyncio allows one running loop per OS
    thread, so the connections of the process share one loop (:meth:`for_connection`), whose
    greenlet waits in gevent's patched selector like any other."""

    _shared: ClassVar[EventLoopThread | None] = None
    _shared_lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._users = 1
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @classmethod
    def for_connection(cls, name: str) -> EventLoopThread:
        """A loop for one connection: its own, or the process's shared one when green."""
        if detect_environment() == "default":
            return cls(name)
        with cls._shared_lock:
            shared = cls._shared
            if shared is not None and shared.loop.is_running():
                shared._users += 1
                return shared
            cls._shared = cls("nats-green-loop")
            return cls._shared

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def stop(self) -> None:
        """Stop the loop once its last connection let go of it."""
        with self._shared_lock:
            self._users -= 1
            if self._users > 0:
                return
            if EventLoopThread._shared is self:
                EventLoopThread._shared = None
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class QoS(virtual.QoS):
    """Acks and rejects are JetStream operations on the held message."""

    restore_at_shutdown = True

    def ack(self, delivery_tag: str) -> None:
        self.channel.settle(delivery_tag, "ack")
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.channel.settle(delivery_tag, "nak" if requeue else "dead_letter")
        super().ack(delivery_tag)

    def restore_unacked(self) -> list[Any]:
        for tag in list(self._delivered):
            if tag not in self._dirty:
                self.channel.settle(tag, "nak")
        self._delivered.clear()
        self._dirty.clear()
        return []


class NatsChannel(virtual.Channel):
    """Declares streams, consumers and bindings; consumes through the transport's inbox."""

    QoS = QoS
    supports_fanout = True
    ack_wait = 4.0
    fetch_timeout = 5.0
    duplicate_window = 120.0

    from_transport_options = (
        *virtual.Channel.from_transport_options,
        "ack_wait",
        "fetch_timeout",
        "duplicate_window",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transport: Transport = self.connection
        self._held: dict[str, Msg] = {}
        self._held_lock = threading.Lock()
        self._routes: dict[str, DeadLetterRoute] = {}  # queue -> its declared route
        self._fanout_bindings: dict[str, str] = {}  # queue -> fanout exchange
        self._consumer_tasks: dict[str, list[Any]] = {}
        self._outstanding = 0
        self._outstanding_lock = threading.Lock()
        self._batch: list[tuple[str, dict[str, Any]]] | None = None  # see start_batch

    # -- declaration ------------------------------------------------------------------------

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        transient = _is_transient(kwargs)
        self._routes[queue] = DeadLetterRoute.from_arguments(kwargs.get("arguments"))
        self.transport.run(self.transport.declare_queue(queue, transient,
                                                        self.duplicate_window))

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return bool(self.transport.run(self.transport.queue_exists(queue)))

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        if len(args) >= 3:  # called once per binding: (exchange, routing_key, pattern)
            exchange, routing_key, pattern = args[:3]
            self.transport.run(self.transport.unbind(exchange, routing_key, pattern, queue))
        self.transport.run(self.transport.delete_queue(queue))

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> list[str]:
        """Route with the cached binding table; on a miss, read the broker again (a reply
        queue may have been bound a moment ago by another process)."""
        found: list[str] = (cached_match(self, self.transport.bindings, exchange, routing_key)
                            or super()._lookup(exchange, routing_key, default))
        return found

    def _size(self, queue: str) -> int:
        return int(self.transport.run(self.transport.queue_size(queue)))

    def _purge(self, queue: str) -> int:
        return int(self.transport.run(self.transport.purge_queue(queue)))

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        if self.typeof(exchange).type == "fanout":
            self._fanout_bindings[queue] = exchange
        self.transport.run(self.transport.bind(exchange, routing_key, pattern, queue))

    def get_table(self, exchange: str) -> list[tuple[str, str, str]]:
        """From the cache without a hop to the event loop; from the KV bucket when stale."""
        return self.transport.bindings.get(
            exchange, lambda: self.transport.run(self.transport.table(exchange)))

    # -- publishing -------------------------------------------------------------------------

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        if self.transport.known_transient(queue):
            # Live-only (events, replies): nothing to confirm, so do not wait for the loop.
            self.transport.submit(self.transport.put(queue, message))
        elif self._batch is not None:
            self._batch.append((queue, message))
        else:
            self.transport.run(self.transport.put(queue, message))

    def start_batch(self) -> None:
        """Hold the durable messages published from now on until :meth:`finish_batch`
        (:mod:`orchestrator.transports.confirm_batch`)."""
        self._batch = []

    def finish_batch(self, timeout: float) -> list[BaseException | None]:
        """Publish the held messages concurrently, in one trip to the loop, and wait for
        their PubAcks; each one's outcome (None: JetStream stored it), in order."""
        batch, self._batch = self._batch or [], None
        if not batch:
            return []
        try:
            replies = self.transport.run(self.transport.put_many(batch, timeout), timeout + 5)
        except Exception as exc:
            return [exc] * len(batch)
        return [reply if isinstance(reply, BaseException) else None for reply in replies]

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str,
                    **kwargs: Any) -> None:
        self.transport.submit(self.transport.publish_core(SUBJECT_FANOUT + escape(exchange),
                                                          message))

    # -- consuming --------------------------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> str:
        tag: str = super().basic_consume(queue, no_ack, *args, **kwargs)
        self._consumer_tasks[queue] = self.transport.run(
            self.transport.start_consuming(self, queue, self._fanout_bindings.get(queue)))
        return tag

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        if queue is not None:
            for handle in self._consumer_tasks.pop(queue, []):
                self.transport.run(self.transport.stop_consuming(handle))
        return super().basic_cancel(consumer_tag)

    def _get(self, queue: str, timeout: Any = None) -> dict[str, Any]:
        """``basic_get``: one message from a durable queue, if one is there."""
        msg = self.transport.run(self.transport.fetch_one(queue, wait=1.0))
        if msg is None:
            raise virtual.Empty()
        self._adjust_outstanding(+1)
        payload = self.accept_message(queue, msg)
        if payload is None:
            raise virtual.Empty()
        return payload

    def can_fetch(self) -> bool:
        """Prefetch: start another fetch only while fewer messages than the prefetch count
        are held (fetched and not yet acked) by this channel."""
        limit = self.qos.prefetch_count
        return not limit or self._outstanding < limit

    def _adjust_outstanding(self, delta: int) -> None:
        with self._outstanding_lock:
            self._outstanding += delta
        self.transport.notify_credit(self)  # wakes this channel's pull loops

    def basic_qos(self, *args: Any, **kwargs: Any) -> None:
        super().basic_qos(*args, **kwargs)
        self.transport.notify_credit(self)

    def accept_message(self, queue: str, msg: Msg) -> dict[str, Any] | None:
        """Turn a JetStream message into a Kombu payload (a foreign one into a message the
        gate refuses, see :mod:`.framing`), or dead-letter it past the limit. Never raises."""
        payload = keep_trace_context(decode_frame(msg.data), msg.headers)
        returns = max(msg.metadata.num_delivered - 1, 0) if msg.reply else 0
        if self._route(queue).past_limit(returns):
            self.transport.submit(self.transport.dead_letter(
                self.dead_letter_targets(queue), queue, msg, payload, REASON_DELIVERY_LIMIT,
                returns))
            self._adjust_outstanding(-1)
            return None
        properties = payload.setdefault("properties", {})
        tag = properties["delivery_tag"] = f"{queue}:{msg.reply or id(msg)}"
        info = properties.setdefault("delivery_info", {})
        info.setdefault("routing_key", queue)
        info.update(redelivered=returns > 0)
        if returns:
            payload.setdefault("headers", {})["x-delivery-count"] = returns
        with self._held_lock:
            self._held[tag] = msg
        payload["properties"]["delivery_info"]["x_queue"] = queue
        return payload

    def settle(self, delivery_tag: str, how: str) -> None:
        with self._held_lock:
            msg = self._held.pop(delivery_tag, None)
        if msg is None:
            return
        queue = delivery_tag.split(":", 1)[0]
        if how == "ack":
            self.transport.submit(msg.ack())
        else:
            returns = msg.metadata.num_delivered  # counting this return
            if how == "nak" and not self._route(queue).past_limit(returns):
                self.transport.submit(msg.nak())
            else:
                reason = REASON_REJECTED if how == "dead_letter" else REASON_DELIVERY_LIMIT
                self.transport.submit(self.transport.dead_letter(
                    self.dead_letter_targets(queue), queue, msg, decode_frame(msg.data), reason,
                    returns if reason == REASON_DELIVERY_LIMIT else returns - 1))
        self._adjust_outstanding(-1)

    def browse(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of a durable queue, oldest first, without taking them.

        Read from the stream by sequence, not through the queue's consumer: no delivery
        happens, so no ``num_delivered`` moves and no ack deadline starts (a fetch and a
        ``nak`` would count as a delivery each time a dead-letter queue is listed).
        """
        found = self.transport.run(self.transport.browse(queue, limit))
        payloads = []
        for msg in found:
            payload = decode_frame(msg.data)
            properties = payload.setdefault("properties", {})
            properties["delivery_tag"] = f"{queue}:browse:{msg.seq}"
            properties.setdefault("delivery_info", {})["x_queue"] = queue
            payloads.append(payload)
        return payloads

    def held_messages(self) -> list[Msg]:
        with self._held_lock:
            return list(self._held.values())

    def _route(self, queue: str) -> DeadLetterRoute:
        return self._routes.get(queue, NO_ROUTE)

    def dead_letter_targets(self, queue: str) -> list[str]:
        route = self._route(queue)
        if not route.exchange:
            return []
        return sorted(set(self._lookup(route.exchange, route.routing_key or queue)))

    def close(self) -> None:
        for queue in list(self._consumer_tasks):
            for handle in self._consumer_tasks.pop(queue, []):
                with contextlib.suppress(Exception):  # closing anyway
                    self.transport.run(self.transport.stop_consuming(handle), timeout=10)
        with contextlib.suppress(Exception):
            self.qos.restore_unacked_once()
        self.transport.forget_channel(self)
        super().close()


async def _reachable(servers: list[str], timeout: float) -> None:
    """Raise ``ConnectionRefusedError`` unless one of ``servers`` accepts a TCP connection.

    nats-py retries a first connection as often as a reconnection, so with unlimited
    reconnects (what a worker wants when the server restarts) it never gives up on a server
    that is not there; this check lets Kombu's retry policy decide, and name the error."""
    errors = []
    for server in servers:
        parts = urlsplit(server)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(
                parts.hostname or "127.0.0.1", parts.port or Transport.default_port), timeout)
        except (OSError, TimeoutError) as exc:
            errors.append(f"{server}: {exc or type(exc).__name__}")
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return
    raise ConnectionRefusedError(f"no NATS server accepts connections ({'; '.join(errors)})")


async def _log_error(exc: Exception) -> None:
    """nats-py's default logs a traceback per failed attempt; one line is enough."""
    logger.warning("nats: %s: %s", type(exc).__name__, exc)


class Transport(virtual.Transport):
    """``nats://`` — see the module docstring."""

    Channel = NatsChannel
    driver_type = "nats"
    driver_name = "nats-jetstream"
    default_port = 4222
    polling_interval = None
    implements = virtual.Transport.implements.extend(
        asynchronous=True, exchange_type=frozenset(["direct", "topic", "fanout"]))

    # NoRespondersError, NoStreamResponseError: JetStream is not answering yet (a server just
    # restarted); Kombu's publish retry policy then tries again instead of failing the task.
    connection_errors = (*virtual.Transport.connection_errors, ConnectionClosedError,
                         NoServersError, NoRespondersError, NoStreamResponseError, NatsTimeout,
                         OSError)
    channel_errors = (*virtual.Transport.channel_errors, NotFoundError, BadRequestError)

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._thread: EventLoopThread | None = None
        self.nc: NATS | None = None
        self.js: Any = None
        self.kv: Any = None
        self.inbox: queue_module.Queue[tuple[NatsChannel, str, Msg]] = queue_module.Queue()
        self._known: dict[str, bool] = {}  # queue -> transient
        self.bindings = BindingCache()
        self._leases: set[tuple[str, str, str, str]] = set()
        self._credit_events: dict[int, asyncio.Event] = {}
        self._keeper: Any = None
        self._get_subscriptions: dict[str, Any] = {}
        self._wakeup: Wakeup | None = None
        self._hub: Any = None
        self._tasks: set[asyncio.Future[Any]] = set()

    # -- connection -------------------------------------------------------------------------

    def establish_connection(self) -> Any:
        if self._wakeup is None:
            self._wakeup = Wakeup()
        if self._thread is None:
            self._thread = EventLoopThread.for_connection(f"nats-{id(self):x}")
        try:
            self.run(self._connect(), timeout=self.client.connect_timeout or 10)
        except Exception:
            self._shutdown_loop()
            raise
        return super().establish_connection()

    async def _connect(self) -> None:
        options = self.client.transport_options
        servers = self._servers()
        await _reachable(servers, timeout=5)
        kwargs: dict[str, Any] = {"servers": servers, "max_reconnect_attempts": -1,
                                  "reconnect_time_wait": 1, "connect_timeout": 5,
                                  "name": "orchestrator-kombu", "error_cb": _log_error}
        first = self.client
        if first.userid and first.password:
            kwargs.update(user=first.userid, password=first.password)
        elif first.userid:
            kwargs["token"] = first.userid
        if options.get("creds_file"):
            kwargs["user_credentials"] = options["creds_file"]
        if options.get("tls_ca_file") or options.get("tls_cert_file") or \
                any(s.startswith("tls://") for s in servers):
            context = ssl.create_default_context(cafile=options.get("tls_ca_file"))
            if options.get("tls_cert_file"):
                context.load_cert_chain(options["tls_cert_file"], options.get("tls_key_file"))
            kwargs["tls"] = context
        self.nc = await nats.connect(**kwargs)
        self.js = self.nc.jetstream()
        try:
            self.kv = await self.js.key_value(KV_BUCKET)
        except Exception:
            self.kv = await self.js.create_key_value(bucket=KV_BUCKET, history=1,
                                                     storage=api.StorageType.FILE)
        self._keeper = self._own(asyncio.ensure_future(self._keep_in_progress()))

    def _servers(self) -> list[str]:
        urls = [self.client.as_uri(include_password=False)]
        urls += [str(alt) for alt in (self.client.alt or [])]
        servers = []
        for url in urls:
            host_part = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
            scheme = "tls" if url.startswith("tls://") else "nats"
            server = f"{scheme}://{host_part or '127.0.0.1'}"
            if ":" not in host_part:
                server += f":{self.default_port}"
            if server not in servers:
                servers.append(server)
        return servers

    def close_connection(self, connection: Any) -> None:
        super().close_connection(connection)
        if self._thread is not None and self.nc is not None:
            with contextlib.suppress(Exception):
                self.run(self._close(), timeout=15)
        self._shutdown_loop()
        if self._wakeup is not None:
            if self._hub is not None:
                with contextlib.suppress(Exception):
                    self._hub.remove_reader(self._wakeup.fileno())
            self._wakeup.close()
            self._wakeup = None
        self._hub = None

    def _own(self, task: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """Remember a long-running task of this connection, for :meth:`_close`."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _close(self) -> None:
        """Cancel our tasks (pull loops, the in-progress keeper), then close NATS. Only this
        connection's: under a green pool the loop is shared with the process's others."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    def _shutdown_loop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        if self._thread is None:
            coroutine.close()
            raise ConnectionClosedError()
        return self._thread.run(coroutine, timeout)

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        if self._thread is None:
            coroutine.close()
            return
        self._thread.submit(coroutine)

    # -- topology (in the broker) -----------------------------------------------------------

    async def declare_queue(self, queue: str, transient: bool, duplicate_window: float) -> None:
        self._known[queue] = transient
        await self._kv_put(f"queue.{escape(queue)}", {"transient": transient})
        if transient:
            return
        config = api.StreamConfig(
            name=escape(queue), subjects=[SUBJECT_QUEUE + escape(queue)],
            retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE,
            duplicate_window=duplicate_window)
        try:
            await self.js.add_stream(config)
        except BadRequestError as exc:
            if "already in use" not in str(exc):
                raise
        ack_wait = self._channel_option("ack_wait")
        try:
            info = await self.js.consumer_info(escape(queue), CONSUMER)
        except NotFoundError:
            info = None
        if info is None or info.config.ack_wait != ack_wait:
            # Created, or brought to this ack_wait (an editable field): a consumer made by
            # an earlier version with a longer one would keep failover that slow.
            await self.js.add_consumer(escape(queue), api.ConsumerConfig(
                durable_name=CONSUMER, ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ack_wait, max_deliver=-1,
                max_ack_pending=-1, filter_subject=SUBJECT_QUEUE + escape(queue)))

    def _channel_option(self, name: str) -> float:
        return float(self.client.transport_options.get(name, getattr(NatsChannel, name)))

    def known_transient(self, queue: str) -> bool:
        """True only when this process already knows ``queue`` is transient."""
        return self._known.get(queue) is True

    async def is_transient(self, queue: str) -> bool | None:
        if queue in self._known:
            return self._known[queue]
        entry = await self._kv_get(f"queue.{escape(queue)}")
        if entry is None:
            return None
        self._known[queue] = bool(entry["transient"])
        return self._known[queue]

    async def queue_exists(self, queue: str) -> bool:
        return await self.is_transient(queue) is not None

    async def delete_queue(self, queue: str) -> None:
        self._known.pop(queue, None)
        with contextlib.suppress(Exception):
            await self.kv.delete(f"queue.{escape(queue)}")
        with contextlib.suppress(NotFoundError):
            await self.js.delete_stream(escape(queue))

    async def queue_size(self, queue: str) -> int:
        if await self.is_transient(queue):
            return 0
        try:
            info = await self.js.stream_info(escape(queue))
        except NotFoundError:
            raise virtual.base.ChannelError(f"NOT_FOUND - no queue {queue!r}") from None
        return int(info.state.messages)

    async def purge_queue(self, queue: str) -> int:
        size = await self.queue_size(queue)
        if size:
            await self.js.purge_stream(escape(queue))
        return size

    def _lease_seconds(self) -> float:
        """How long a transient queue's binding lives without a refresh from its consumer."""
        renewal_interval = self._channel_option("ack_wait") / 3  # see _keep_in_progress
        return max(LEASE_SECONDS, 3 * renewal_interval)

    async def _alive(self, row: list[Any], now: float) -> bool:
        """A row is dead once its lease ran out; a lease-less row of a transient queue was
        written by an older version of this transport and is dropped too."""
        if len(row) > 3:
            return float(row[3]) >= now
        return not await self.is_transient(str(row[2]))

    async def bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        """Add the binding (a transient queue's with a lease its consumer keeps renewing),
        dropping dead rows on the way, so a killed monitor's bindings do not pile up."""
        transient = bool(await self.is_transient(queue))
        key = f"binding.{escape(exchange)}"
        identity = [routing_key or "", pattern or "", queue]
        for _ in range(20):
            try:
                entry = await self.kv.get(key)
                table = json.loads(entry.value or b"[]")
                revision = entry.revision
            except Exception:
                table, revision = [], None
            now = time.time()
            kept = [row for row in table if row[:3] != identity and await self._alive(row, now)]
            row = identity + ([now + self._lease_seconds()] if transient else [])
            if not transient and identity in table and len(kept) == len(table) - 1:
                break  # already bound, nothing dead to drop
            try:
                if revision is None:
                    await self.kv.create(key, json.dumps([*kept, row]).encode())
                else:
                    await self.kv.update(key, json.dumps([*kept, row]).encode(), last=revision)
                break
            except (KeyWrongLastSequenceError, BadRequestError):
                continue  # somebody else bound meanwhile: read again
        if transient:
            self._leases.add((exchange, routing_key or "", pattern or "", queue))
        self.bindings.forget(exchange)

    async def unbind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        self._leases = {lease for lease in self._leases if lease[3] != queue}
        key = f"binding.{escape(exchange)}"
        for _ in range(20):
            try:
                entry = await self.kv.get(key)
            except Exception:
                return
            table = json.loads(entry.value or b"[]")
            kept = [row for row in table if row[2] != queue]
            if kept == table:
                return
            try:
                await self.kv.update(key, json.dumps(kept).encode(), last=entry.revision)
                break
            except (KeyWrongLastSequenceError, BadRequestError):
                continue
        self.bindings.forget(exchange)

    async def table(self, exchange: str) -> Table:
        """The exchange's binding table as stored in the KV bucket (no cache here).

        Only a missing key means "no bindings". Any other failure (the server restarting)
        is raised: read as an empty table it would route a publish nowhere, and the
        publisher would believe a dropped message was sent.
        """
        try:
            entry = await self.kv.get(f"binding.{escape(exchange)}")
        except (KeyNotFoundError, KeyDeletedError):
            return []
        rows = json.loads(entry.value) if entry.value else []
        now = time.time()
        return [(str(row[0]), str(row[1]), str(row[2])) for row in rows
                if len(row) <= 3 or float(row[3]) >= now]

    async def _kv_get(self, key: str) -> Any:
        try:
            entry = await self.kv.get(key)
        except Exception:
            return None
        return json.loads(entry.value) if entry.value else None

    async def _kv_put(self, key: str, value: Any) -> None:
        await self.kv.put(key, json.dumps(value).encode())

    # -- publishing -------------------------------------------------------------------------

    async def put_many(self, messages: list[tuple[str, dict[str, Any]]],
                       timeout: float) -> list[BaseException | None]:
        """:meth:`put` every message at once (their PubAcks overlap); each one's outcome."""
        async def one(queue: str, message: dict[str, Any]) -> None:
            await asyncio.wait_for(self.put(queue, message), timeout)

        outcomes = await asyncio.gather(*(one(queue, message) for queue, message in messages),
                                        return_exceptions=True)
        return [outcome if isinstance(outcome, BaseException) else None
                for outcome in outcomes]

    async def put(self, queue: str, message: dict[str, Any]) -> None:
        data = dumps(message).encode()
        assert self.nc is not None
        if len(data) > self.nc.max_payload:
            raise MessageTooLarge(
                f"message of {len(data)} bytes for {queue!r} exceeds the NATS server's "
                f"max_payload ({self.nc.max_payload} bytes)")
        transient = await self.is_transient(queue)
        if transient:
            await self.publish_core(SUBJECT_TRANSIENT + escape(queue), message)
            return
        headers = message.get("headers") or {}
        msg_headers = {}
        task_id = headers.get("id")
        if task_id:
            msg_id = f"{task_id}:{headers.get('retries', 0)}"
            if headers.get("x_replay_id"):
                msg_id += f":{headers['x_replay_id']}"
            msg_headers["Nats-Msg-Id"] = msg_id
        await self.js.publish(SUBJECT_QUEUE + escape(queue), data,
                              headers=msg_headers or None, timeout=10)

    async def publish_core(self, subject: str, message: dict[str, Any]) -> None:
        """Live delivery (events, remote control, replies): nats-py's flusher sends it on the
        next loop turn; waiting for a PONG here would cost a round trip per event."""
        assert self.nc is not None
        await self.nc.publish(subject, dumps(message).encode())

    async def publish_retained(self, subject: str, data: bytes, headers: dict[str, str],
                               wait: bool) -> None:
        """A message to a subject a limits-retention stream captures (see
        :meth:`declare_retained_stream`): with ``wait``, JetStream's publish ack; without,
        a core publish the stream stores just the same, sent on the next loop turn."""
        assert self.nc is not None
        if wait:
            await self.js.publish(subject, data, headers=headers, timeout=10)
        else:
            await self.nc.publish(subject, data, headers=headers)

    async def declare_retained_stream(self, name: str, subjects: list[str], *,
                                      max_msgs_per_subject: int, max_age: float) -> None:
        """A stream that keeps the newest messages of each subject (bounded by count and
        age), for readers that are not competing consumers: an event log. Created, or
        brought to this configuration."""
        config = api.StreamConfig(
            name=name, subjects=subjects, retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE, discard=api.DiscardPolicy.OLD,
            max_msgs_per_subject=max_msgs_per_subject, max_age=max_age)
        try:
            await self.js.add_stream(config)
        except BadRequestError as exc:
            if "already in use" not in str(exc):
                raise
            await self.js.update_stream(config)

    async def dead_letter(self, targets: list[str], queue: str, msg: Msg,
                          payload: dict[str, Any], reason: str, returns: int) -> None:
        """Publish to the DLQ(s) with an ``x-death`` header, then ack the original.

        ``targets`` is resolved on the Kombu side (routing reads the broker through this
        same loop, so it must not be looked up from inside it)."""
        headers = payload.setdefault("headers", {})
        headers.update(death_headers(reason=reason, queue=queue, exchange="",
                                     routing_keys=[queue], returns=returns))
        payload.get("properties", {}).pop("delivery_tag", None)
        for target in targets:
            await self.js.publish(SUBJECT_QUEUE + escape(target), dumps(payload).encode(),
                                  timeout=10)
        await msg.ack_sync(timeout=10)

    # -- consuming --------------------------------------------------------------------------

    async def start_consuming(self, channel: NatsChannel, queue: str,
                              fanout_exchange: str | None) -> list[Any]:
        handles: list[Any] = []

        async def on_core(msg: Msg) -> None:
            self._enqueue(channel, queue, msg)

        transient = await self.is_transient(queue)
        if transient or transient is None:
            assert self.nc is not None
            handles.append(await self.nc.subscribe(SUBJECT_TRANSIENT + escape(queue),
                                                   cb=on_core))
        if fanout_exchange:
            assert self.nc is not None
            handles.append(await self.nc.subscribe(SUBJECT_FANOUT + escape(fanout_exchange),
                                                   cb=on_core))
        if transient is False:
            subscription = await self.js.pull_subscribe_bind(CONSUMER, stream=escape(queue))
            handles.append(self._own(asyncio.ensure_future(
                self._pull(channel, queue, subscription))))
        return handles

    async def stop_consuming(self, handle: Any) -> None:
        if isinstance(handle, asyncio.Future):
            handle.cancel()
        else:
            with contextlib.suppress(Exception):
                await handle.unsubscribe()

    def _credit_event(self, channel: NatsChannel) -> asyncio.Event:
        event = self._credit_events.get(id(channel))
        if event is None:
            event = self._credit_events[id(channel)] = asyncio.Event()
        return event

    def forget_channel(self, channel: NatsChannel) -> None:
        """Drop a closed channel's credit event (one per channel, kept by id)."""
        self._credit_events.pop(id(channel), None)

    def notify_credit(self, channel: NatsChannel) -> None:
        if self._thread is not None:
            self._thread.loop.call_soon_threadsafe(lambda: self._credit_event(channel).set())

    async def _pull(self, channel: NatsChannel, queue: str, subscription: Any) -> None:
        """Long-poll one message at a time while the channel's prefetch allows."""
        timeout = self._channel_option("fetch_timeout")
        while True:
            event = self._credit_event(channel)
            while not channel.can_fetch():
                event.clear()
                await event.wait()
            try:
                msgs = await subscription.fetch(1, timeout=timeout)
            except (TimeoutError, NatsTimeout):
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # reconnecting: nats-py retries; try again shortly
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                channel._adjust_outstanding(+1)  # counted from the fetch: prefetch is exact
                self._enqueue(channel, queue, msg)

    async def browse(self, queue: str, limit: int) -> list[api.RawStreamMsg]:
        """The first ``limit`` messages of a durable queue's stream, by sequence."""
        if await self.is_transient(queue):
            return []
        found: list[api.RawStreamMsg] = []
        subject = SUBJECT_QUEUE + escape(queue)
        sequence = 1
        while len(found) < limit:
            try:
                msg = await self.js.get_msg(escape(queue), seq=sequence, subject=subject,
                                            next=True)
            except NotFoundError:
                break
            if msg.seq is None:
                break
            found.append(msg)
            sequence = msg.seq + 1
        return found

    async def fetch_one(self, queue: str, wait: float) -> Msg | None:
        """``basic_get``: answers at once for an empty stream, else fetches one message."""
        if await self.is_transient(queue):
            return None
        try:
            info = await self.js.consumer_info(escape(queue), CONSUMER)
        except NotFoundError:
            return None
        if not info.num_pending:  # nothing left that was never delivered
            if not info.num_ack_pending:
                return None
            wait = min(wait, 0.2)  # only redeliveries could come: do not linger
        subscription = self._get_subscriptions.get(queue)
        if subscription is None:
            subscription = await self.js.pull_subscribe_bind(CONSUMER, stream=escape(queue))
            self._get_subscriptions[queue] = subscription
        try:
            msgs = await subscription.fetch(1, timeout=wait)
        except (TimeoutError, NatsTimeout):
            return None
        return msgs[0] if msgs else None

    async def _keep_in_progress(self) -> None:
        """Tell JetStream every held message is still being worked on, and renew the leases
        of the transient queues' bindings this connection made."""
        interval = self._channel_option("ack_wait") / 3
        while True:
            await asyncio.sleep(interval)
            for channel in list(self.channels):
                for msg in channel.held_messages():
                    with contextlib.suppress(Exception):
                        await msg.in_progress()
            for exchange, routing_key, pattern, queue in list(self._leases):
                with contextlib.suppress(Exception):
                    await self.bind(exchange, routing_key, pattern, queue)

    def _enqueue(self, channel: NatsChannel, queue: str, msg: Msg) -> None:
        """From the NATS thread: hand a message to the Kombu side and wake its event loop."""
        self.inbox.put((channel, queue, msg))
        if self._wakeup is not None:
            self._wakeup.signal()

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Celery's event loop (``asynloop``, the one it runs on RabbitMQ) polls the wakeup
        pipe and delivers from the inbox in its own thread: no blocking ``drain_events``,
        no result-handler threads in the pool."""
        if self._wakeup is None:
            self._wakeup = Wakeup()
        self._hub = loop
        loop.add_reader(self._wakeup.fileno(), self.on_readable, connection)

    def on_readable(self, connection: Any) -> None:
        """Deliver what the inbox holds now, without blocking."""
        if self._wakeup is not None:
            self._wakeup.clear()
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue_module.Empty:
                return
            self._deliver_item(*item)

    def drain_events(self, connection: Any, timeout: Any = None) -> None:
        """Block on the inbox (event-driven), deliver one message."""
        try:
            channel, queue, msg = self.inbox.get(timeout=timeout)
        except queue_module.Empty:
            raise TimeoutError() from None
        self._deliver_item(channel, queue, msg)

    def _deliver_item(self, channel: NatsChannel, queue: str, msg: Msg) -> None:
        is_jetstream = bool(msg.reply and msg.reply.startswith("$JS.ACK"))
        if channel.closed:
            if is_jetstream:
                self.submit(msg.nak())  # back to the stream for another consumer
            return
        if is_jetstream:
            payload = channel.accept_message(queue, msg)
            if payload is None:
                return
        else:
            payload = decode_frame(msg.data)
            if FOREIGN_FRAME_HEADER in payload["headers"]:
                # Live-only (events, remote control, replies): no DLQ to keep it in.
                logger.warning("dropped a foreign message on %s: %s", queue,
                               payload["headers"][FOREIGN_FRAME_HEADER])
                return
            payload.setdefault("properties", {})["delivery_tag"] = f"{queue}:core:{id(msg)}"
        self._deliver(payload, queue)
