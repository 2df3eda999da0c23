"""Plain envelopes out: step results and dead letters as events any client subscribes to.

The subscribers are ``examples/foreign_core.py``'s plain clients (pika, redis-py, nats-py),
which import nothing of this project; the end-to-end test runs that example as a program.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestrator.events import cloudevents, destinations
from orchestrator.events.publisher import SINKS, EventPublisher, declare_destinations
from orchestrator.settings import Settings, get_settings
from tests.conftest import configured_app
from tests.support.brokers import BrokerUnderTest
from tests.support.plain_clients import redis_client
from tests.support.workers import REPO, WorkerProcess

EXAMPLE = REPO / "examples" / "foreign_core.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("foreign_core", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


foreign_core = load_example()


def envelope(tipo_evento: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return foreign_core.envelope(tipo_evento, payload or {}, str(uuid.uuid4()))


@pytest.fixture()
def wire(on_broker: BrokerUnderTest) -> Iterator[Any]:
    """The example's subscriber, on destinations declared first (NATS: a consumer needs the
    stream; a worker or ``topology --declare`` makes it in a deployment)."""
    with configured_app().connection_for_write() as connection:
        declare_destinations(connection)
    opened = foreign_core.open_wire(on_broker.url)
    yield opened
    opened.close()


def test_the_example_imports_no_part_of_this_project() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {str(node.module).split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not imported & {"orchestrator", "tasks", "celery", "kombu", "tests"}


def executador_lines(correlation_id: str) -> list[dict[str, Any]]:
    path = Path(get_settings().data_dir) / "arquivo" / "resultados.jsonl"
    if not path.exists():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [record for record in records if record.get("correlation_id") == correlation_id]


@pytest.mark.broker
def test_a_foreign_orchestrator_core_runs_the_designs_conversation(
    worker: WorkerProcess, on_broker: BrokerUnderTest
) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--broker-url", on_broker.url,
                           "--timeout", "60"], capture_output=True, text=True, timeout=150,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line.get("sent") or line.get("received") for line in lines] == [
        "escavador_youtube", "resultado_coleta", "executador_arquivo", "resultado_execucao"]
    correlation_id = lines[0]["envelope"]["correlation_id"]
    received = [line for line in lines if "received" in line]
    for line in received:
        assert line["event"]["correlation_id"] == correlation_id
        assert set(line["event"]) == {"correlation_id", "tipo_evento", "payload", "timestamp"}
        attributes = cloudevent_attributes(on_broker.name, line["headers"])
        assert attributes["specversion"] == "1.0"
        assert attributes["type"] == line["event"]["tipo_evento"]
        assert attributes["correlationid"] == correlation_id
        assert attributes["source"].startswith("/orchestrator/")
        assert attributes["id"]
    assert received[0]["event"]["payload"]["items"], "the escavador did real work"
    [line] = executador_lines(correlation_id)
    assert line["step"] == "executador_arquivo"


def cloudevent_attributes(broker: str, headers: dict[str, str]) -> dict[str, str]:
    prefix = "cloudEvents_" if broker == "amqp" else "ce-"
    return {name[len(prefix):]: value for name, value in headers.items()
            if name.startswith(prefix)}


@pytest.mark.broker
def test_a_result_returned_again_is_the_same_event(
    worker: WorkerProcess, on_broker: BrokerUnderTest, wire: Any
) -> None:
    sent = envelope("iniciar_coleta", {"n": 1})
    seen = []
    for _ in range(2):  # the second delivery returns the stored result
        wire.publish("escavador_eco", sent)
        _, event, headers = wire.next_event(("resultado_coleta",), sent["correlation_id"], 60)
        seen.append((cloudevent_attributes(on_broker.name, headers)["id"], event))
    assert seen[0] == seen[1]


@pytest.mark.broker
def test_a_dead_letter_is_announced_with_step_correlation_id_and_reason(
    worker: WorkerProcess, wire: Any
) -> None:
    sent = envelope("resultado_execucao")  # escavadores accept iniciar_coleta only
    wire.publish("escavador_eco", sent)
    _, event, headers = wire.next_event(("dead_letter",), sent["correlation_id"], 60)
    assert event["queue"] == "escavador_eco"
    assert event["dead_letter_queue"] == "escavador_eco.dlq"
    assert event["reason"] == "invalid_envelope"
    assert "tipo_evento" in event["exception_message"]
    assert event["attempts"] == 1
    assert cloudevents.DEAD_LETTER_TYPE in headers.values()


@pytest.mark.broker
@pytest.mark.parametrize("confirm", [False, True], ids=["unconfirmed", "confirmed"])
def test_each_broker_sink_delivers_an_event_to_a_plain_subscriber(
    on_broker: BrokerUnderTest, wire: Any, confirm: bool
) -> None:
    settings = Settings(events_confirm=confirm)
    reply = envelope("resultado_coleta", {"n": 1})
    event = cloudevents.result_event("escavador_eco", str(uuid.uuid4()), reply)
    options = {**configured_app().conf.broker_transport_options, "confirm_publish": confirm}
    with configured_app().connection_for_write(transport_options=options) as connection:
        declare_destinations(connection, settings)
        sink = SINKS[on_broker.url.split("://")[0]](connection, settings)
        sink.send(event)
        _, received, headers = wire.next_event(("resultado_coleta",),
                                               reply["correlation_id"], 30)
        sink.close()
    assert received == reply
    assert cloudevent_attributes(on_broker.name, headers)["id"] == event.id


@pytest.mark.broker
def test_events_held_for_a_batch_are_sent_when_the_publisher_closes(
    on_broker: BrokerUnderTest, wire: Any
) -> None:
    """Unconfirmed events wait up to ``ORCHESTRATOR_EVENTS_FLUSH_INTERVAL`` for a batch; a
    worker that shuts down closes its publisher, which must send them rather than drop them."""
    settings = get_settings().model_copy(update={"events_flush_interval": 600.0})
    replies = [envelope("resultado_coleta", {"n": n}) for n in range(3)]
    events = EventPublisher(configured_app(), settings)
    for reply in replies:
        assert events.publish(cloudevents.result_event("escavador_eco", str(uuid.uuid4()),
                                                       reply))
    events.close()
    for reply in replies:
        _, received, _ = wire.next_event(("resultado_coleta",), reply["correlation_id"], 30)
        assert received == reply


@pytest.mark.broker
def test_a_batch_goes_out_by_itself_after_the_interval(
    on_broker: BrokerUnderTest, wire: Any
) -> None:
    settings = get_settings().model_copy(update={"events_flush_interval": 0.2})
    reply = envelope("resultado_coleta", {"n": 1})
    events = EventPublisher(configured_app(), settings)
    try:
        events.publish(cloudevents.result_event("escavador_eco", str(uuid.uuid4()), reply))
        _, received, _ = wire.next_event(("resultado_coleta",), reply["correlation_id"], 30)
        assert received == reply
    finally:
        events.close()


@pytest.mark.broker
def test_the_event_destinations_are_bounded(on_broker: BrokerUnderTest) -> None:
    settings = get_settings().model_copy(update={"events_confirm": True})
    bound = settings.events_max_len
    assert bound < 300
    with configured_app().connection_for_write() as connection:
        declare_destinations(connection, settings)
        sink = SINKS[on_broker.url.split("://")[0]](connection, settings)
        for _ in range(300):
            sink.send(cloudevents.result_event("escavador_cap", str(uuid.uuid4()),
                                               envelope("resultado_coleta")))
        sink.close()
        if on_broker.name == "redis-streams":
            client = redis_client(on_broker.url)
            length = client.xlen(destinations.stream_key("resultado_coleta"))
            client.close()
            # MAXLEN ~ trims whole stream nodes (100 entries each by default).
            assert length <= bound + 100
        elif on_broker.name == "nats":
            info = connection.transport.run(
                connection.transport.js.stream_info(destinations.NATS_STREAM))
            assert info.config.max_msgs_per_subject == bound
            assert info.config.max_age == settings.events_max_age
            subjects = connection.transport.run(connection.transport.js.stream_info(
                destinations.NATS_STREAM, subjects_filter=destinations.subject(
                    "resultado_coleta", "escavador_cap"))).state.subjects
            assert subjects == {"orq.events.resultado_coleta.escavador_cap": bound}
        else:
            # RabbitMQ: a topic exchange keeps nothing; with no queue bound the events go.
            channel = connection.channel()
            channel.exchange_declare(destinations.EXCHANGE, "topic", durable=True,
                                     passive=True)
            channel.close()


def test_a_result_event_keeps_its_id_when_the_step_publishes_it_again() -> None:
    reply = envelope("resultado_coleta", {"items": []})
    first = cloudevents.result_event("escavador_youtube", "task-1", reply)
    again = cloudevents.result_event("escavador_youtube", "task-1", reply)
    other = cloudevents.result_event("escavador_youtube", "task-2", reply)
    assert first.id == again.id != other.id
    assert json.loads(first.body) == reply
    assert first.headers("ce-") == {
        "ce-specversion": "1.0", "ce-id": first.id, "ce-source": "/orchestrator/escavador_youtube",
        "ce-type": "resultado_coleta", "ce-time": reply["timestamp"],
        "ce-subject": reply["correlation_id"], "ce-correlationid": reply["correlation_id"]}
    assert destinations.routing_key(first.topic, first.queue) == \
        "resultado_coleta.escavador_youtube"
    assert destinations.subject(first.topic, first.queue) == \
        "orq.events.resultado_coleta.escavador_youtube"


def test_a_dead_letter_announcement_says_which_step_request_and_reason() -> None:
    details = {"reason": "retries_exhausted", "queue": "executador_webhook",
               "task": "executador_webhook", "task_id": "t", "correlation_id": "c",
               "attempts": 4, "exception_type": "HTTPError", "exception_message": "503",
               "traceback": "long", "last_failure_at": "2026-12-01T10:00:00.000Z"}
    event = cloudevents.dead_letter_event(details)
    body = json.loads(event.body)
    assert body == {"correlation_id": "c", "queue": "executador_webhook",
                    "task": "executador_webhook", "task_id": "t", "reason": "retries_exhausted",
                    "attempts": 4, "exception_type": "HTTPError", "exception_message": "503",
                    "dead_letter_queue": "executador_webhook.dlq",
                    "timestamp": "2026-12-01T10:00:00.000Z"}
    assert event.topic == "dead_letter" and event.attributes["correlationid"] == "c"
    anonymous = cloudevents.dead_letter_event({**details, "correlation_id": None})
    assert "correlationid" not in anonymous.attributes


@pytest.mark.broker
def test_held_events_are_bounded(on_broker: BrokerUnderTest,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With the broker away the batch cannot leave; events must not pile up in memory."""
    from orchestrator.events import publisher as publisher_module

    monkeypatch.setattr(publisher_module, "MAX_HELD_EVENTS", 3)
    settings = get_settings().model_copy(update={"events_flush_interval": 600.0})
    events = EventPublisher(configured_app(), settings)
    sent = [events.publish(cloudevents.result_event(
        "escavador_eco", str(uuid.uuid4()), envelope("resultado_coleta"))) for _ in range(4)]
    events.close()
    assert sent == [True, True, True, False]
