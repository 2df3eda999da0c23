"""What only the NATS transport promises: duplicate detection and a clean shutdown."""

from __future__ import annotations

import threading
import uuid

import pytest
from kombu import Connection, Exchange, Producer, Queue

from tests.conftest import broker_url
from tests.support.brokers import ALL_BROKERS, reachable
from tests.support.waiting import wait_until

pytestmark = pytest.mark.broker


@pytest.fixture()
def nats_url(request: pytest.FixtureRequest) -> str:
    url = broker_url(request, ALL_BROKERS["nats"])
    error = reachable(url)
    if error:
        from tests.conftest import _unreachable

        _unreachable("NATS", error)
    return url


def _size(connection: Connection, queue: Queue) -> int:
    with connection.channel() as channel:
        return int(queue.bind(channel).queue_declare(passive=True).message_count)


def test_a_second_publication_of_the_same_task_attempt_is_dropped(nats_url: str) -> None:
    exchange = Exchange(f"dup_{uuid.uuid4().hex[:6]}", type="direct", durable=True)
    queue = Queue(exchange.name, exchange, routing_key=exchange.name, durable=True)
    task_id = str(uuid.uuid4())
    with Connection(nats_url) as connection:
        with connection.channel() as channel:
            queue.bind(channel).declare()
            producer = Producer(channel)
            for retries in (0, 0, 1):  # the same attempt twice, then a retry
                producer.publish({"n": 1}, exchange=exchange, routing_key=exchange.name,
                                 headers={"id": task_id, "retries": retries})
        try:
            assert wait_until(lambda: _size(connection, queue) == 2, timeout=10,
                              message="two messages: the duplicate dropped, the retry kept")
        finally:
            with connection.channel() as channel:
                queue.bind(channel).delete()


def test_closing_the_connection_stops_its_event_loop_thread(nats_url: str) -> None:
    before = {t.name for t in threading.enumerate() if t.name.startswith("nats-")}
    connection = Connection(nats_url)
    connection.ensure_connection(max_retries=2)
    connection.channel().close()
    during = {t.name for t in threading.enumerate() if t.name.startswith("nats-")}
    assert during - before, "one event-loop thread per connection"
    connection.release()
    wait_until(lambda: not ({t.name for t in threading.enumerate()
                             if t.name.startswith("nats-")} - before),
               timeout=10, message="the connection's thread gone")


def test_a_dead_consumers_transient_binding_is_dropped(nats_url: str) -> None:
    """NATS has no auto-delete: a transient queue's binding carries a lease its consumer
    renews, so the binding of a monitor killed without closing its channel stops routing
    (an expired lease is ignored at once, and pruned from the bucket at the next bind)."""
    import json
    import time

    from orchestrator.transports.nats_jetstream import escape

    exchange = Exchange(f"test-lease-{uuid.uuid4().hex[:8]}", type="topic")
    alive = Queue(f"alive-{uuid.uuid4().hex[:8]}", exchange, routing_key="#", auto_delete=True)
    dead = Queue(f"dead-{uuid.uuid4().hex[:8]}", exchange, routing_key="#", auto_delete=True)
    legacy = Queue(f"legacy-{uuid.uuid4().hex[:8]}", exchange, routing_key="#",
                   auto_delete=True)
    with Connection(nats_url) as connection:
        channel = connection.default_channel
        transport = connection.transport
        for queue in (dead, legacy):
            queue(channel).queue_declare()  # declared, bound below by hand
        key = f"binding.{escape(exchange.name)}"

        async def write_dead_rows() -> None:  # what a killed monitor (and older code) left
            rows = [["#", "", dead.name, time.time() - 1], ["#", "", legacy.name]]
            await transport.kv.put(key, json.dumps(rows).encode())

        transport.run(write_dead_rows())
        def routed_to() -> list[str]:
            return [row[2] for row in transport.run(transport.table(exchange.name))]

        assert routed_to() == [legacy.name]  # the lease ran out: no longer routed

        alive(channel).declare()  # binding anything prunes the dead rows
        stored = transport.run(transport._kv_get(key))
        assert [row[2] for row in stored] == [alive.name]
        assert stored[0][3] > time.time() + 30  # leased, renewed by this connection
        assert routed_to() == [alive.name]


def test_an_unreadable_binding_table_fails_the_publish_instead_of_dropping_it(
    nats_url: str,
) -> None:
    """Only a missing key means "no bindings": a KV read that fails (a server restarting)
    raises, so the publisher sees an error and retries instead of believing a message that
    was routed nowhere was sent."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import KeyNotFoundError

    class FailingBucket:
        def __init__(self, error: Exception) -> None:
            self.error = error

        async def get(self, key: str) -> None:
            raise self.error

    with Connection(nats_url) as connection:
        connection.default_channel  # noqa: B018  (connects)
        transport = connection.transport
        real = transport.kv
        try:
            transport.kv = FailingBucket(KeyNotFoundError())
            assert transport.run(transport.table("nobody-bound-here")) == []
            transport.kv = FailingBucket(NatsTimeout())
            with pytest.raises(NatsTimeout):
                transport.run(transport.table("orchestrator"))
            assert NatsTimeout in transport.connection_errors  # Kombu retries the publish
        finally:
            transport.kv = real
