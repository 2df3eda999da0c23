"""The wire is the contract: a plain JSON envelope from the broker's own client runs the step.

The producers are plain clients that import nothing of this project: pika exactly as in the
design document (default exchange, no properties), redis-py ``XADD``, nats-py JetStream.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from kombu.message import Message

from orchestrator.idempotency import RedisIdempotencyStore, default_idempotency_key
from orchestrator.plain_envelopes import as_task_message, plain_envelope
from orchestrator.settings import get_settings
from tests.conftest import dead_letters_for
from tests.support.brokers import BrokerUnderTest
from tests.support.plain_clients import PUBLISHERS
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.broker


def envelope(tipo_evento: str, payload: dict[str, object]) -> dict[str, object]:
    return {"correlation_id": str(uuid.uuid4()), "tipo_evento": tipo_evento,
            "payload": payload, "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def stored_result(correlation_id: str, step: str) -> dict[str, object] | None:
    """The step's result as its idempotency record holds it (read only: no claim)."""
    settings = get_settings()
    client = redis.Redis.from_url(settings.idempotency_url or settings.result_backend)
    result_key, _ = RedisIdempotencyStore.keys_for(default_idempotency_key(correlation_id, step))
    raw = client.get(result_key)
    client.close()
    return json.loads(raw) if raw else None


def test_the_design_documents_producer_runs_the_escavador(
    worker: WorkerProcess, on_broker: BrokerUnderTest
) -> None:
    sent = envelope("iniciar_coleta", {"channel_id": "UCabcdefghijklmnopqrstuv"})  # bundled feed
    PUBLISHERS[on_broker.name](on_broker.url, "escavador_youtube", [json.dumps(sent).encode()])
    result = wait_until(lambda: stored_result(str(sent["correlation_id"]), "escavador_youtube"),
                        timeout=60, message="the escavador's result")
    assert result["correlation_id"] == sent["correlation_id"]
    assert result["tipo_evento"] == "resultado_coleta"
    assert result["payload"]["items"], "the collector did real work on the feed"  # type: ignore[index]


def test_a_plain_iniciar_execucao_runs_the_executador_once(
    worker: WorkerProcess, on_broker: BrokerUnderTest
) -> None:
    sent = envelope("iniciar_execucao", {"pedido": "plain"})
    body = json.dumps(sent).encode()
    PUBLISHERS[on_broker.name](on_broker.url, "executador_arquivo", [body])
    lines = Path(get_settings().data_dir) / "arquivo" / "resultados.jsonl"

    def mine() -> list[str]:
        if not lines.exists():
            return []
        return [line for line in lines.read_text().splitlines()
                if json.loads(line)["correlation_id"] == sent["correlation_id"]]

    assert len(wait_until(mine, timeout=60, message="the executador's line")) == 1
    PUBLISHERS[on_broker.name](on_broker.url, "executador_arquivo", [body])  # sent twice
    wait_until(lambda: stored_result(str(sent["correlation_id"]), "executador_arquivo"),
               timeout=60, message="the stored result")
    assert len(mine()) == 1, "the same envelope twice still runs the executador once"


def test_a_plain_envelope_of_the_wrong_type_is_dead_lettered(
    worker: WorkerProcess, on_broker: BrokerUnderTest
) -> None:
    sent = envelope("resultado_execucao", {})
    PUBLISHERS[on_broker.name](on_broker.url, "escavador_eco", [json.dumps(sent).encode()])
    [letter] = wait_until(lambda: dead_letters_for(str(sent["correlation_id"])), timeout=60,
                          message="the dead letter")
    assert letter.details["reason"] == "invalid_envelope"
    assert "tipo_evento" in letter.details["exception_message"]


@pytest.mark.parametrize("body, headers, is_envelope", [
    (b'{"correlation_id": "c", "tipo_evento": "iniciar_coleta", "payload": {}}', None, True),
    (b'{"correlation_id": "c", "tipo_evento": "iniciar_coleta", "payload": {}}', {}, True),
    (b'{"correlation_id": "c", "tipo_evento": "iniciar_coleta", "payload": {}}',
     {"task": "escavador_eco", "id": "1"}, False),  # a Celery message, decided by Celery
    (b'{"correlation_id": "c"}', None, False),
    (b'[[{}], {}, {}]', None, False),
    (b"not json", None, False),
    (None, None, False),
])
def test_what_counts_as_a_plain_envelope(body: bytes | None, headers: dict[str, str] | None,
                                         is_envelope: bool) -> None:
    assert (plain_envelope(body, headers, 1000) is not None) == is_envelope


def test_an_oversized_plain_envelope_is_left_to_the_gate() -> None:
    body = json.dumps({"correlation_id": "c", "tipo_evento": "x", "payload": {"a": "x" * 50}})
    assert plain_envelope(body.encode(), None, 20) is None


def test_a_plain_envelope_becomes_the_steps_task_message_on_the_same_delivery() -> None:
    sent = envelope("iniciar_coleta", {})
    original = Message(body=json.dumps(sent).encode(), delivery_tag="tag-7",
                       delivery_info={"routing_key": "escavador_eco", "exchange": ""})
    task = as_task_message(original, "escavador_eco", sent)
    assert task.delivery_tag == "tag-7" and task.delivery_info == original.delivery_info
    assert task.headers["task"] == "escavador_eco"
    assert task.headers["x_correlation_id"] == sent["correlation_id"]
    assert "payload" not in task.headers["argsrepr"]
    assert json.loads(task.body) == [[sent], {}, {"callbacks": None, "errbacks": None,
                                                  "chain": None, "chord": None}]

