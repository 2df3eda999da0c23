"""Queue names, queue arguments, the dead-letter pair and the step router."""

from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.celery_app import app
from orchestrator.steps import route_step
from orchestrator.topology import (
    WORK_EXCHANGE,
    QueueSpec,
    Topology,
    dlq_name,
    dlx_name,
    is_dead_letter_queue,
    original_queue,
    queue_name,
    routes_through_exchange,
    topology,
)
from tests.support.waiting import wait_until


def test_queue_name() -> None:
    assert queue_name("escavador", "youtube") == "escavador_youtube"
    assert queue_name("executador", "web-hook_2") == "executador_web-hook_2"


@pytest.mark.parametrize(
    "name",
    ["YouTube", "you.tube", "you tube", " youtube", "", "_youtube", "-x", "youtube\n",
     "você", "a/b", "a*", "a#b"],
)
def test_queue_name_refuses_names_a_broker_would_mangle(name: str) -> None:
    with pytest.raises(ValueError, match="lower-case"):
        queue_name("escavador", name)


def test_dead_letter_names() -> None:
    assert dlq_name("escavador_youtube") == "escavador_youtube.dlq"
    assert dlx_name("escavador_youtube") == "escavador_youtube.dlx"
    assert is_dead_letter_queue("escavador_youtube.dlq")
    assert not is_dead_letter_queue("escavador_youtube")
    assert not is_dead_letter_queue("escavador_youtube.dlx")
    assert original_queue("escavador_youtube.dlq") == "escavador_youtube"
    with pytest.raises(ValueError, match="not a dead-letter queue"):
        original_queue("escavador_youtube")


def test_queue_arguments() -> None:
    spec = QueueSpec("escavador_youtube", "escavador", 5)
    assert spec.dlq == "escavador_youtube.dlq"
    assert spec.dlx == "escavador_youtube.dlx"
    assert spec.queue_arguments() == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 5,
        "x-dead-letter-exchange": "escavador_youtube.dlx",
        "x-dead-letter-routing-key": "escavador_youtube.dlq",
    }


def test_work_queue_uses_the_topic_exchange_and_its_own_name() -> None:
    spec = QueueSpec("executador_webhook", "executador", 3)
    queue = spec.work_queue()
    assert queue.name == "executador_webhook"
    assert queue.routing_key == "executador_webhook"
    assert queue.exchange is not None
    assert queue.exchange.name == WORK_EXCHANGE == "orchestrator"
    assert queue.exchange.type == "topic"
    assert queue.durable
    assert getattr(queue, "queue_arguments", None) == spec.queue_arguments()


@pytest.mark.parametrize(("url", "expected"), [
    ("amqp://guest:guest@127.0.0.1:5672//", True),
    ("pyamqp://127.0.0.1", True),
    ("amqps://host;amqp://other", True),
    (["amqp://a", "amqp://b"], True),
    ("redis://127.0.0.1:6379/0", False),
    ("redis-streams://127.0.0.1:6379/0", False),
    ("nats://127.0.0.1:4222", False),
    ("memory://", False),
])
def test_only_rabbitmq_routes_through_the_work_exchange(url: Any, expected: bool) -> None:
    assert routes_through_exchange(url) is expected


@pytest.mark.parametrize(("url", "exchange"), [
    ("amqp://guest:guest@127.0.0.1:5672//", None),
    ("redis-streams://127.0.0.1:6379/0", ""),
    ("nats://127.0.0.1:4222", ""),
])
def test_router_sends_a_step_to_its_own_queue(url: str, exchange: str | None) -> None:
    """Through the topic exchange on RabbitMQ (delayed delivery needs it), through the
    anonymous exchange where the transport would read the binding table per publish."""
    task = SimpleNamespace(app=SimpleNamespace(conf=SimpleNamespace(broker_url=url)))
    route = route_step("executador_webhook", (), {}, {}, task=task)
    assert route is not None
    assert route["queue"] == route["routing_key"] == "executador_webhook"
    assert route.get("exchange") == exchange
    assert route_step("not_a_step", (), {}, {}, task=task) is None


def test_dead_letter_entities() -> None:
    spec = QueueSpec("executador_webhook", "executador", 3)
    exchange = spec.dead_letter_exchange()
    assert (exchange.name, exchange.type) == ("executador_webhook.dlx", "direct")
    dlq = spec.dead_letter_queue()
    assert dlq.name == dlq.routing_key == "executador_webhook.dlq"
    assert dlq.exchange is not None
    assert dlq.exchange.name == "executador_webhook.dlx"
    assert "x-dead-letter-exchange" not in (getattr(dlq, "queue_arguments", None) or {})


def test_topology_add_is_idempotent_but_refuses_conflicts() -> None:
    local = Topology()
    spec = QueueSpec("escavador_x", "escavador", 5)
    assert local.add(spec) is spec
    local.add(QueueSpec("escavador_x", "escavador", 5))
    assert local.names() == ["escavador_x"]
    with pytest.raises(ValueError, match="different settings"):
        local.add(QueueSpec("escavador_x", "escavador", 6))
    assert local.get("escavador_x").delivery_limit == 5
    with pytest.raises(KeyError, match="escavador_x"):
        local.get("escavador_y")


def test_topology_work_queues_never_include_dead_letter_queues() -> None:
    local = Topology()
    local.add(QueueSpec("escavador_a", "escavador", 5))
    local.add(QueueSpec("executador_b", "executador", 5))
    names = [q.name for q in local.work_queues()]
    assert names == ["escavador_a", "executador_b"]
    assert "escavador_a" in local
    assert "escavador_a.dlq" not in local


def test_the_process_topology_has_the_shipped_steps() -> None:
    names = topology.names()
    for name in ("escavador_youtube", "escavador_rss", "executador_arquivo",
                 "executador_webhook"):
        assert name in topology
        assert name in names
    assert not any(is_dead_letter_queue(q.name) for q in topology.work_queues())
    assert {q.name for q in app.conf.task_queues} == set(names)
    for spec in topology:
        assert spec.name.startswith(spec.kind + "_")
        assert spec.name in app.tasks  # each queue has its step task


def test_a_dead_letter_queue_has_no_delivery_counting_to_reach() -> None:
    arguments = QueueSpec("escavador_x", "escavador", 3).dead_letter_queue().queue_arguments
    assert arguments == {"x-queue-type": "classic"}


@pytest.mark.broker
def test_a_quorum_dlq_of_an_earlier_version_is_used_as_it_is(
    on_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Upgrading must not stop a worker: the old DLQ keeps its dead letters and its type."""
    from kombu import Connection, Exchange, Producer, Queue

    spec = QueueSpec(f"escavador_mig{uuid.uuid4().hex[:8]}", "escavador", 3)
    old_dlq = Queue(spec.dlq, Exchange(spec.dlx, type="direct", durable=True),
                    routing_key=spec.dlq, durable=True,
                    queue_arguments={"x-queue-type": "quorum"})
    local = Topology()
    local.add(spec)
    with Connection(on_broker.url) as connection:
        with connection.channel() as channel:
            old_dlq.bind(channel).declare()
        try:
            with caplog.at_level(logging.WARNING, logger="orchestrator.topology"):
                declared = local.declare(connection)
            assert spec.dlq in declared and spec.name in declared
            if on_broker.name == "amqp":
                assert any("exists with other arguments" in r.message for r in caplog.records)
            with connection.channel() as channel:
                Producer(channel).publish(b"x", exchange=spec.dlx, routing_key=spec.dlq)
                queue = Queue(spec.dlq, channel=channel, no_declare=True)
                message = wait_until(lambda: queue.get(no_ack=True), timeout=10,
                                     message="the dead letter in the old DLQ")
                assert message.body == b"x"
        finally:
            with connection.channel() as channel:
                for name in (spec.name, spec.dlq):
                    Queue(name, channel=channel).delete()


@pytest.mark.parametrize(("url", "scheme"), [
    ("amqp://guest:guest@127.0.0.1:5672//", "amqp"),
    ("amqp+ssl://host//", "amqp"),
    ("redis-streams://127.0.0.1:6379/0;redis-streams://other:6379/0", "redis-streams"),
    (["nats://a:4222", "nats://b:4222"], "nats"),
    ("", ""),
    (None, ""),
])
def test_one_reading_of_a_broker_urls_scheme(url: object, scheme: str) -> None:
    from orchestrator.app_broker import broker_scheme

    assert broker_scheme(url) == scheme
