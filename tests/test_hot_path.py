"""The hot path's shortcuts keep the contracts they replace.

- :class:`~orchestrator.result_backend.StepResultBackend` stores a result and a step's
  idempotency record in one round trip, with Celery's semantics (meta document, ``PUBLISH``,
  expiry, no overwrite of a ``SUCCESS``) — checked against a real Redis;
- :class:`~orchestrator.transports.bindings.BindingCache` re-reads the broker on a miss, so a
  queue bound a moment ago by another process is found;
- the Streams transport's :class:`~orchestrator.transports.redis_streams.BackgroundWriter`
  retries an ack batch that failed until it lands, and sends everything queued on close.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import states
from kombu import Connection, Consumer, Producer, Queue
from kombu.asynchronous import Hub

from orchestrator.celery_app import app
from orchestrator.idempotency import IdempotencyWrite, RedisIdempotencyStore, pending_records
from orchestrator.result_backend import BACKEND_CLASS, StepResultBackend, backend_url
from orchestrator.transports.bindings import BindingCache, cached_match
from orchestrator.transports.redis_streams import GROUP, BackgroundWriter
from tests.support.waiting import wait_until

# --- result backend -------------------------------------------------------------------------


def test_backend_url_selects_the_step_backend_for_redis_only() -> None:
    assert backend_url("redis://h:6379/1") == f"{BACKEND_CLASS}+redis://h:6379/1"
    assert backend_url("rediss://:pw@h:6380/0") == f"{BACKEND_CLASS}+rediss://:pw@h:6380/0"
    assert backend_url("db+postgresql://h/db") == "db+postgresql://h/db"


def test_the_app_uses_the_step_backend(result_backend: str) -> None:
    assert isinstance(app.backend, StepResultBackend)


@pytest.fixture()
def backend(result_backend: str) -> Iterator[StepResultBackend]:
    yield StepResultBackend(app=app, url=result_backend)


@pytest.fixture()
def client(result_backend: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(result_backend)
    yield connection
    connection.close()


def _idem_keys(key: str) -> tuple[str, str]:
    result_key, claim_key = RedisIdempotencyStore.keys_for(key)
    return result_key, claim_key


def test_one_store_writes_the_result_the_record_and_drops_our_claim(
    backend: StepResultBackend, client: redis.Redis
) -> None:
    task_id, key = str(uuid.uuid4()), f"test-{uuid.uuid4()}"
    result_key, claim_key = _idem_keys(key)
    client.set(claim_key, task_id, ex=60)
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(backend.get_key_for_task(task_id))
    wait_until(lambda: pubsub.get_message(timeout=0.1) is not None, timeout=5,
               message="subscription confirmed")
    pending_records.put_back(task_id, IdempotencyWrite(key, task_id, {"ok": 1}, 30))

    backend.store_result(task_id, {"ok": 1}, states.SUCCESS)

    meta = backend.get_task_meta(task_id)
    assert meta["status"] == states.SUCCESS and meta["result"] == {"ok": 1}
    assert client.get(result_key) == b'{"ok": 1}'
    assert 0 < client.ttl(result_key) <= 30
    assert client.get(claim_key) is None
    assert 0 < client.ttl(backend.get_key_for_task(task_id)) <= backend.expires
    published = pubsub.get_message(timeout=5)
    assert published is not None and b'"SUCCESS"' in published["data"]
    assert pending_records.take(task_id) is None
    pubsub.close()


def test_a_stored_success_is_never_overwritten_but_the_record_is_kept(
    backend: StepResultBackend, client: redis.Redis
) -> None:
    task_id, key = str(uuid.uuid4()), f"test-{uuid.uuid4()}"
    backend.store_result(task_id, {"first": True}, states.SUCCESS)
    pending_records.put_back(task_id, IdempotencyWrite(key, task_id, {"x": 2}, 30))

    backend.store_result(task_id, "late failure", states.FAILURE)

    assert backend.get_task_meta(task_id)["result"] == {"first": True}
    assert client.get(_idem_keys(key)[0]) == b'{"x": 2}'


def test_another_owners_claim_is_left_alone(
    backend: StepResultBackend, client: redis.Redis
) -> None:
    task_id, key = str(uuid.uuid4()), f"test-{uuid.uuid4()}"
    _, claim_key = _idem_keys(key)
    client.set(claim_key, "someone-else", ex=60)
    pending_records.put_back(task_id, IdempotencyWrite(key, task_id, {}, 30))
    backend.store_result(task_id, {}, states.SUCCESS)
    assert client.get(claim_key) == b"someone-else"


def test_a_result_without_a_record_is_stored_like_celery_does(
    backend: StepResultBackend,
) -> None:
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, None, states.FAILURE, traceback="tb")
    meta = backend.get_task_meta(task_id)
    assert meta["status"] == states.FAILURE and meta["traceback"] == "tb"


# --- binding cache --------------------------------------------------------------------------


class _TableChannel:
    """Just enough of a virtual channel for :func:`cached_match`: a direct exchange whose
    broker-side table the test changes, read through the cache like the transports do."""

    def __init__(self, cache: BindingCache) -> None:
        self.cache = cache
        self.broker_table: list[tuple[str, str, str]] = []
        self.reads = 0

    def get_table(self, exchange: str) -> list[tuple[str, str, str]]:
        def read() -> list[tuple[str, str, str]]:
            self.reads += 1
            return list(self.broker_table)
        return self.cache.get(exchange, read)

    def typeof(self, exchange: str) -> Any:
        from kombu.transport.virtual.exchange import DirectExchange

        return DirectExchange(self)


def test_a_cached_table_is_read_once_per_ttl() -> None:
    channel = _TableChannel(BindingCache(ttl=60))
    channel.broker_table = [("rk", "", "q1")]
    for _ in range(5):
        assert cached_match(channel, channel.cache, "ex", "rk") == ["q1"]
    assert channel.reads == 1


def test_a_miss_reads_the_broker_again_and_finds_a_new_binding() -> None:
    channel = _TableChannel(BindingCache(ttl=60))
    channel.broker_table = [("rk", "", "q1")]
    assert cached_match(channel, channel.cache, "ex", "rk") == ["q1"]
    channel.broker_table.append(("reply", "", "q2"))  # bound meanwhile by another process
    assert cached_match(channel, channel.cache, "ex", "reply") == []  # forgets the table
    assert cached_match(channel, channel.cache, "ex", "reply") == ["q2"]


def test_an_empty_table_is_cached_only_for_telemetry_exchanges() -> None:
    channel = _TableChannel(BindingCache(ttl=60, telemetry=frozenset({"celeryev"})))
    for _ in range(3):
        cached_match(channel, channel.cache, "celeryev", "task.multi")
    assert channel.reads == 1
    for _ in range(3):
        cached_match(channel, channel.cache, "reply.celery.pidbox", "x")
    assert channel.reads == 1 + 3


def test_a_table_expires_after_its_ttl() -> None:
    channel = _TableChannel(BindingCache(ttl=0.05))
    channel.broker_table = [("rk", "", "q1")]
    cached_match(channel, channel.cache, "ex", "rk")
    time.sleep(0.06)  # past the TTL on purpose: the cache must read again
    cached_match(channel, channel.cache, "ex", "rk")
    assert channel.reads == 2


# --- the Streams transport's background writer ------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _FlakyConnection(redis.Connection):
    """A real Redis connection whose first ``fail`` writes raise a connection error."""

    fail = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if _FlakyConnection.fail > 0:
            _FlakyConnection.fail -= 1
            raise redis.ConnectionError("injected")
        super().send_packed_command(command, check_health)


def _connection_factory(url: str, kind: type[redis.Connection] = redis.Connection) -> Any:
    pool = redis.ConnectionPool.from_url(url)
    return lambda: kind(**pool.connection_kwargs)


def test_acks_that_fail_are_retried_until_they_land(client: redis.Redis,
                                                     result_backend: str) -> None:
    stream = f"test-writer-{uuid.uuid4().hex}"
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    entry_id = _text(client.xadd(stream, {"payload": "{}"}))
    client.xreadgroup(GROUP, "c1", {stream: ">"}, count=1)
    _FlakyConnection.fail = 2
    writer = BackgroundWriter(_connection_factory(result_backend, _FlakyConnection))
    try:
        writer.ack(stream, entry_id)
        wait_until(lambda: client.xlen(stream) == 0, timeout=10, message="the ack landed")
        assert client.xpending(stream, GROUP)["pending"] == 0
        assert _FlakyConnection.fail == 0
    finally:
        writer.close()
        client.delete(stream)


def test_close_sends_what_is_queued(client: redis.Redis, result_backend: str) -> None:
    stream = f"test-writer-{uuid.uuid4().hex}"
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ids = [_text(client.xadd(stream, {"payload": str(n)})) for n in range(50)]
    client.xreadgroup(GROUP, "c1", {stream: ">"}, count=50)
    writer = BackgroundWriter(_connection_factory(result_backend))
    for entry_id in ids:
        writer.ack(stream, entry_id)
    writer.close()
    try:
        assert client.xlen(stream) == 0
    finally:
        client.delete(stream)


# --- the Streams transport: acks ride ahead of the next read ---------------------------------


def _streams_url(result_backend: str) -> str:
    return "redis-streams://" + result_backend.split("://", 1)[1]


class _Worker:
    """A Kombu consumer on an event loop (Kombu's hub), the way a Celery worker consumes."""

    def __init__(self, connection: Connection, name: str) -> None:
        queue = Queue(name, routing_key=name)
        with connection.channel() as channel:
            queue.bind(channel).declare()
        Producer(connection.channel()).publish({"n": 1}, routing_key=name, serializer="json")
        self.hub = Hub()
        connection.transport.register_with_event_loop(connection.connection, self.hub)
        self.turns = self.hub.create_loop()
        self.channel = connection.channel()
        self.received: list[Any] = []
        self.consumer = Consumer(self.channel, [queue], callbacks=[self._on_message],
                                 accept=["json"])
        self.consumer.consume()

    def _on_message(self, body: Any, message: Any) -> None:
        self.received.append(body)
        message.ack()

    def turn_until(self, condition: Any, message: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {message}"
            next(self.turns)

    def close(self) -> None:
        self.hub.close()


def test_an_ack_rides_ahead_of_the_next_read(client: redis.Redis, result_backend: str) -> None:
    name = f"test_ack_ride_{uuid.uuid4().hex[:8]}"
    try:
        with Connection(_streams_url(result_backend)) as connection:
            worker = _Worker(connection, name)
            worker.turn_until(lambda: worker.received == [{"n": 1}], "the message")
            assert worker.channel._acks_for_next_poll, "the ack waits for the next read"
            # The next turn sends the next XREADGROUP with the ack ahead of it; the queue
            # being empty, the read blocks in the server and the ack's replies come alone.
            worker.turn_until(lambda: not worker.channel._acks_for_next_poll, "the read")
            worker.turn_until(lambda: client.xpending(name, GROUP)["pending"] == 0, "the ack")
            assert client.xlen(name) == 0
            assert worker.channel._in_poll, "the read is still waiting in the server"
            assert "_background_writer" not in worker.channel.__dict__, "no thread needed"
            worker.close()
    finally:
        client.delete(name)


def test_an_ack_waiting_for_a_read_lands_when_the_consumer_is_cancelled(
        client: redis.Redis, result_backend: str) -> None:
    name = f"test_ack_cancel_{uuid.uuid4().hex[:8]}"
    try:
        with Connection(_streams_url(result_backend)) as connection:
            worker = _Worker(connection, name)
            worker.turn_until(lambda: worker.received == [{"n": 1}], "the message")
            assert worker.channel._acks_for_next_poll
            worker.consumer.cancel()
            assert wait_until(lambda: client.xpending(name, GROUP)["pending"] == 0,
                              timeout=10, message="the ack")
            assert client.xlen(name) == 0
            worker.close()
    finally:
        client.delete(name)


def test_without_an_event_loop_an_ack_is_sent_at_once(client: redis.Redis,
                                                       result_backend: str) -> None:
    """A plain ``drain_events`` caller may never call again: no ack waits for it."""
    name = f"test_ack_sync_{uuid.uuid4().hex[:8]}"
    queue = Queue(name, routing_key=name)
    try:
        with Connection(_streams_url(result_backend)) as connection:
            with connection.channel() as channel:
                queue.bind(channel).declare()
            Producer(connection.channel()).publish({"n": 1}, routing_key=name,
                                                   serializer="json")
            channel = connection.channel()
            consumer = Consumer(channel, [queue], accept=["json"],
                                callbacks=[lambda body, message: message.ack()])
            consumer.consume()
            connection.drain_events(timeout=5)
            assert not channel._acks_for_next_poll
            assert wait_until(lambda: client.xpending(name, GROUP)["pending"] == 0,
                              timeout=10, message="the ack")
    finally:
        client.delete(name)
