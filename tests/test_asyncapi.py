"""The AsyncAPI document is valid AsyncAPI 3.0 and describes every step, DLQ and the envelope.

The schema is the official one (``@asyncapi/specs`` 6.11.1 on npm, ``schemas/3.0.0-without-$id
.json``, Apache-2.0), kept in ``tests/data`` so the test needs no network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from orchestrator.asyncapi import document
from orchestrator.envelope import Envelope, EventType
from orchestrator.topology import topology
from tests.support.workers import REPO

SCHEMA = json.loads((Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json").read_text())
URLS = ["amqp://guest:secret@rabbit:5672/prod", "redis-streams://redis:6379/0",
        "nats://nats:4222"]


@pytest.fixture(scope="module", autouse=True)
def steps_loaded() -> None:
    from orchestrator.celery_app import app  # noqa: F401  (loads the step modules)


@pytest.mark.parametrize("url", URLS)
def test_the_document_is_valid_asyncapi_3(url: str) -> None:
    errors = sorted(Draft7Validator(SCHEMA).iter_errors(document(url)), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def test_the_validator_would_notice_a_broken_document() -> None:
    broken: dict[str, Any] = document(URLS[0])
    broken["channels"]["escavador_youtube"]["address"] = 42
    assert list(Draft7Validator(SCHEMA).iter_errors(broken))


@pytest.mark.parametrize(("url", "address"), [
    (URLS[0], "escavador_youtube"), (URLS[1], "escavador_youtube"),
    (URLS[2], "orq.q.escavador_youtube")])
def test_every_step_queue_and_dlq_is_a_channel(url: str, address: str) -> None:
    described = document(url)
    for spec in topology:
        assert spec.name in described["channels"] and spec.dlq in described["channels"]
        assert f"run_{spec.name}" in described["operations"]
    assert described["channels"]["escavador_youtube"]["address"] == address
    assert "secret" not in json.dumps(described), "credentials never reach the document"


def test_the_envelope_schema_is_the_models() -> None:
    schemas = document(URLS[0])["components"]["schemas"]
    assert set(schemas["Envelope"]["properties"]) == set(Envelope.model_fields)
    assert schemas["EventType"]["enum"] == [event.value for event in EventType]


def test_the_command_prints_the_document() -> None:
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "asyncapi",
               "--broker-url", URLS[2]]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["servers"]["broker"]["protocol"] == "nats"


@pytest.mark.parametrize(("url", "address"), [
    (URLS[0], "resultado_coleta.{queue}"), (URLS[1], "orchestrator.events.resultado_coleta"),
    (URLS[2], "orq.events.resultado_coleta.{queue}")])
def test_the_event_destinations_are_channels(url: str, address: str) -> None:
    described = document(url)
    channels = described["channels"]
    assert channels["events_resultado_coleta"]["address"] == address
    assert {"events_resultado_execucao", "events_dead_letter"} <= set(channels)
    assert "publish_dead_letter_events" in described["operations"]
    if "{queue}" in address:
        queues = channels["events_resultado_coleta"]["parameters"]["queue"]["enum"]
        assert "escavador_youtube" in queues and "executador_arquivo" not in queues
