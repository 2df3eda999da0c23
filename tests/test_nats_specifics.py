"""What only the NATS transport promises: duplicate detection and a clean shutdown."""

from __future__ import annotations

import threading
import uuid

import pytest
from kombu import Connection, Exchange, Producer, Queue

from tests.support.brokers import ALL_BROKERS, reachable
from tests.support.waiting import wait_until

pytestmark = pytest.mark.broker
NATS = ALL_BROKERS["nats"]


@pytest.fixture()
def nats_url() -> str:
    error = reachable(NATS.url)
    if error:
        from tests.conftest import _unreachable

        _unreachable("NATS", error)
    return NATS.url


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
