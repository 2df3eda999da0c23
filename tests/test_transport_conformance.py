"""Transport conformance: the same Kombu-level contract on every broker.

Run per broker by the ``broker`` fixture (RabbitMQ is the reference). What a Celery worker
relies on: publish/consume/ack, requeue, dead-lettering on reject and past the delivery limit,
purge/size/delete, fanout and topic routing, competing consumers, prefetch, a killed consumer's
messages coming back, and a slow consumer's messages *not* being taken from it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message

from orchestrator.transports.dead_lettering import DEATH_FIELDS
from tests.support.brokers import BrokerUnderTest
from tests.support.waiting import wait_until
from tests.support.workers import REPO

pytestmark = pytest.mark.broker

# Short liveness for the Streams transport so a killed consumer is noticed within seconds.
TRANSPORT_OPTIONS = {"consumer_ttl": 3, "reclaim_interval": 0.5, "unacked_restore_interval": 0.5,
                     "confirm_publish": True, "ack_wait": 3, "fetch_timeout": 1}


def connect(broker: BrokerUnderTest) -> Connection:
    return Connection(broker.url, transport_options=dict(TRANSPORT_OPTIONS))


class Topology:
    """A throwaway work queue with its DLX/DLQ, named per test."""

    def __init__(self, limit: int = 2) -> None:
        self.name = f"conf_{uuid.uuid4().hex[:10]}"
        self.exchange = Exchange(f"{self.name}.x", type="topic", durable=True)
        self.dlx = Exchange(f"{self.name}.dlx", type="direct", durable=True)
        self.dlq = Queue(f"{self.name}.dlq", self.dlx, routing_key=f"{self.name}.dlq",
                         durable=True, queue_arguments={"x-queue-type": "quorum"})
        self.queue = Queue(self.name, self.exchange, routing_key=self.name, durable=True,
                           queue_arguments={"x-queue-type": "quorum", "x-delivery-limit": limit,
                                            "x-dead-letter-exchange": self.dlx.name,
                                            "x-dead-letter-routing-key": self.dlq.name})

    def declare(self, connection: Connection) -> None:
        with connection.channel() as channel:
            self.dlq.bind(channel).declare()
            self.queue.bind(channel).declare()

    def delete(self, connection: Connection) -> None:
        with connection.channel() as channel:
            for queue in (self.queue, self.dlq):
                with contextlib.suppress(Exception):
                    queue.bind(channel).delete()

    def publish(self, connection: Connection, *bodies: Any) -> None:
        producer = Producer(connection.channel())
        for body in bodies:
            producer.publish(body, exchange=self.exchange, routing_key=self.name,
                             serializer="json", delivery_mode=2)
        producer.channel.close()


@pytest.fixture()
def conn(broker: BrokerUnderTest) -> Iterator[Connection]:
    with connect(broker) as connection:
        connection.ensure_connection(max_retries=3)
        yield connection


@pytest.fixture()
def topo(conn: Connection) -> Iterator[Topology]:
    topology = Topology()
    topology.declare(conn)
    yield topology
    topology.delete(conn)


def size(conn: Connection, queue: Queue) -> int:
    with conn.channel() as channel:
        return int(queue.bind(channel).queue_declare(passive=True).message_count)


def drain(conn: Connection, queue: Queue, count: int, *, ack: bool = True,
          timeout: float = 10, prefetch: int | None = None,
          on_message: Any = None) -> list[Message]:
    """Consume until ``count`` messages arrived (or time out); ack them unless told not to."""
    received: list[Message] = []

    def callback(body: Any, message: Message) -> None:
        received.append(message)
        if on_message is not None:
            on_message(body, message)
        elif ack:
            message.ack()

    channel = conn.channel()
    consumer = Consumer(channel, [queue], callbacks=[callback], accept=["json"])
    if prefetch is not None:
        consumer.qos(prefetch_count=prefetch)
    with consumer:
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                continue
    return received


def test_publish_consume_ack(conn: Connection, topo: Topology) -> None:
    topo.publish(conn, {"n": 1}, {"n": 2}, {"n": 3})
    assert wait_until(lambda: size(conn, topo.queue) == 3, timeout=10, message="3 queued")
    got = drain(conn, topo.queue, 3)
    assert [m.payload["n"] for m in got] == [1, 2, 3]
    assert wait_until(lambda: size(conn, topo.queue) == 0, timeout=10, message="queue empty")


def test_reject_with_requeue_redelivers(conn: Connection, topo: Topology) -> None:
    topo.publish(conn, {"n": 1})
    seen: list[bool] = []

    def first_requeue(body: Any, message: Message) -> None:
        seen.append(bool(message.delivery_info.get("redelivered")))
        if len(seen) == 1:
            message.requeue()
        else:
            message.ack()

    drain(conn, topo.queue, 2, on_message=first_requeue)
    assert seen == [False, True]
    assert size(conn, topo.dlq) == 0


def test_reject_without_requeue_dead_letters(conn: Connection, topo: Topology) -> None:
    topo.publish(conn, {"n": 7})
    drain(conn, topo.queue, 1, on_message=lambda body, message: message.reject(requeue=False))
    wait_until(lambda: size(conn, topo.dlq) == 1, timeout=10, message="the dead letter")
    [dead] = drain(conn, topo.dlq, 1)
    assert dead.payload == {"n": 7}
    assert_one_death(dead, topo, "rejected")


def assert_one_death(dead: Message, topo: Topology, reason: str) -> None:
    """The ``x-death`` entry RabbitMQ writes, field for field, on every broker."""
    [death] = dead.headers["x-death"]
    assert set(death) == DEATH_FIELDS, f"x-death fields: {sorted(death)}"
    assert (death["reason"], death["queue"], death["count"]) == (reason, topo.name, 1)
    assert death["routing-keys"] == [topo.name]
    assert death["time"], "when it died"


def test_delivery_limit_dead_letters(conn: Connection, topo: Topology) -> None:
    topo.publish(conn, {"n": 9})
    drain(conn, topo.queue, 3, on_message=lambda body, message: message.requeue())
    wait_until(lambda: size(conn, topo.dlq) == 1, timeout=20, message="delivery_limit DL")
    [dead] = drain(conn, topo.dlq, 1)
    assert_one_death(dead, topo, "delivery_limit")
    assert size(conn, topo.queue) == 0


def test_purge_size_and_delete(conn: Connection, topo: Topology) -> None:
    topo.publish(conn, *({"n": i} for i in range(5)))
    wait_until(lambda: size(conn, topo.queue) == 5, timeout=10, message="5 queued")
    with conn.channel() as channel:
        assert topo.queue.bind(channel).purge() == 5
    assert size(conn, topo.queue) == 0
    with conn.channel() as channel:
        topo.queue.bind(channel).delete()
    with pytest.raises(conn.channel_errors + conn.connection_errors + (KeyError,)), \
            conn.channel() as channel:
        topo.queue.bind(channel).queue_declare(passive=True)


def test_topic_routing(conn: Connection) -> None:
    exchange = Exchange(f"conf_topic_{uuid.uuid4().hex[:6]}", type="topic", durable=False)
    wanted = Queue(f"{exchange.name}.a", exchange, routing_key="coleta.*", durable=True)
    other = Queue(f"{exchange.name}.b", exchange, routing_key="execucao.#", durable=True)
    with conn.channel() as channel:
        wanted.bind(channel).declare()
        other.bind(channel).declare()
        producer = Producer(channel)
        producer.publish({"k": "coleta.youtube"}, exchange=exchange, routing_key="coleta.youtube")
        producer.publish({"k": "execucao.a.b"}, exchange=exchange, routing_key="execucao.a.b")
        producer.publish({"k": "nada"}, exchange=exchange, routing_key="nada")
    assert [m.payload["k"] for m in drain(conn, wanted, 1)] == ["coleta.youtube"]
    assert [m.payload["k"] for m in drain(conn, other, 1)] == ["execucao.a.b"]
    assert drain(conn, wanted, 1, timeout=1) == []
    with conn.channel() as channel:
        wanted.bind(channel).delete()
        other.bind(channel).delete()


def test_fanout_reaches_every_bound_queue(broker: BrokerUnderTest) -> None:
    exchange = Exchange(f"conf_fanout_{uuid.uuid4().hex[:6]}", type="fanout", durable=False)
    queues = [Queue(f"{exchange.name}.{i}", exchange, auto_delete=True) for i in range(2)]
    received: dict[str, list[Any]] = {q.name: [] for q in queues}
    connections = [connect(broker) for _ in queues]
    consumers = []
    try:
        for connection, queue in zip(connections, queues, strict=True):
            def on_message(body: Any, message: Message, name: str = queue.name) -> None:
                received[name].append(body)
                message.ack()
            consumer = Consumer(connection.channel(), [queue], callbacks=[on_message])
            consumer.consume()
            consumers.append(consumer)
        for connection in connections:  # fanout is live delivery: subscribe first
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.3)
        with connect(broker) as publisher:
            producer = Producer(publisher.channel(), exchange=exchange)  # declares it
            producer.publish({"evento": 1}, routing_key="")

        def everyone_got_it() -> bool:
            for connection in connections:
                with contextlib.suppress(TimeoutError):
                    connection.drain_events(timeout=0.2)
            return all(received.values())

        wait_until(everyone_got_it, timeout=10, message="the fanout message in both queues")
        assert all(v == [{"evento": 1}] for v in received.values())
    finally:
        for consumer in consumers:
            consumer.cancel()
        for connection in connections:
            connection.release()


def test_competing_consumers_share_without_duplicates(broker: BrokerUnderTest, conn: Connection,
                                                      topo: Topology) -> None:
    topo.publish(conn, *({"n": i} for i in range(20)))
    got: dict[int, list[int]] = {0: [], 1: []}
    connections = [connect(broker) for _ in got]
    consumers = []
    try:
        for index, connection in enumerate(connections):
            def on_message(body: Any, message: Message, index: int = index) -> None:
                got[index].append(body["n"])
                message.ack()
            consumer = Consumer(connection.channel(), [topo.queue], callbacks=[on_message])
            consumer.qos(prefetch_count=1)
            consumer.consume()
            consumers.append(consumer)

        def all_consumed() -> bool:
            for connection in connections:
                with contextlib.suppress(TimeoutError):
                    connection.drain_events(timeout=0.05)
            return len(got[0]) + len(got[1]) >= 20

        wait_until(all_consumed, timeout=20, message="20 messages over two consumers")
        assert sorted(got[0] + got[1]) == list(range(20))
        assert got[0] and got[1], "both consumers took part"
    finally:
        for consumer in consumers:
            consumer.cancel()
        for connection in connections:
            connection.release()


def test_prefetch_is_honoured(broker: BrokerUnderTest, conn: Connection, topo: Topology) -> None:
    topo.publish(conn, *({"n": i} for i in range(5)))
    held = drain(conn, topo.queue, 5, ack=False, timeout=2, prefetch=2,
                 on_message=lambda body, message: None)
    assert len(held) == 2


CONSUME_AND_DIE = textwrap.dedent("""
    import os, sys
    import orchestrator.transports  # registers redis-streams://
    from kombu import Connection, Consumer, Queue
    url, name, options = sys.argv[1], sys.argv[2], eval(sys.argv[3])
    with Connection(url, transport_options=options) as conn:
        def got(body, message):
            print("received", flush=True)
            os._exit(9)
        with Consumer(conn.channel(), [Queue(name, no_declare=True)], callbacks=[got]):
            while True:
                conn.drain_events(timeout=30)
""")


def test_a_killed_consumers_message_comes_back(broker: BrokerUnderTest, conn: Connection,
                                               topo: Topology) -> None:
    topo.publish(conn, {"n": 42})
    result = subprocess.run(
        [sys.executable, "-c", CONSUME_AND_DIE, broker.url, topo.name, repr(TRANSPORT_OPTIONS)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert "received" in result.stdout, result.stderr
    [again] = drain(conn, topo.queue, 1, timeout=30)
    assert again.payload == {"n": 42}
    assert again.delivery_info.get("redelivered") or again.headers.get("x-delivery-count")


def test_a_slow_consumer_keeps_its_message(broker: BrokerUnderTest, conn: Connection,
                                           topo: Topology) -> None:
    """No visibility timeout: a live consumer holding a message past every liveness interval
    keeps it; a second consumer never sees it."""
    topo.publish(conn, {"n": 1})
    [held] = drain(conn, topo.queue, 1, ack=False, on_message=lambda body, message: None)
    with connect(broker) as other:
        stolen = drain(other, topo.queue, 1, timeout=TRANSPORT_OPTIONS["consumer_ttl"] * 3)
    assert stolen == []
    held.ack()
