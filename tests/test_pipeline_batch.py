"""Bulk triggering: many pipelines in one call, every message confirmed, exactly which were not."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from orchestrator.celery_app import app
from orchestrator.pipeline import PipelineError
from orchestrator.pipeline_batch import PipelineRequest, run_pipelines
from orchestrator.transports.confirm_batch import NotConfirmed, confirm_batch
from tests.support.brokers import BrokerUnderTest
from tests.support.plain_clients import redis_client
from tests.support.workers import REPO, WorkerProcess, worker_env
from tests.test_devmode import ORCHESTRATOR_CLI

TIMEOUT = 60


@pytest.mark.broker
def test_a_batch_of_chains_groups_and_chords_is_confirmed_and_runs(
    worker: WorkerProcess, on_broker: BrokerUnderTest
) -> None:
    given = str(uuid.uuid4())
    requests = [PipelineRequest("eco", {"n": n}) for n in range(20)]
    requests += [PipelineRequest("eco", {"n": 20}, execute=["eco"], correlation_id=given),
                 PipelineRequest(["eco", "eco"], {"n": 21}),
                 PipelineRequest(["eco", "eco"], {"n": 22}, execute=["eco"])]
    outcome = run_pipelines(requests)
    assert outcome.failed == []
    # All went through the batch's producer: 21 chains (one message each), a group and a
    # chord header of two.
    assert outcome.messages == 25
    assert [item.index for item in outcome.items] == list(range(len(requests)))
    assert outcome.items[20].correlation_id == given
    for item, request in zip(outcome.items, requests, strict=True):
        assert item.handle is not None
        finals = item.handle.wait(timeout=TIMEOUT)
        assert {str(final.correlation_id) for final in finals} == {item.correlation_id}
        entrada = finals[0].payload.get("entrada") or finals[0].payload
        assert json.dumps(request.payload)[1:-1] in json.dumps(entrada), (request, entrada)


@pytest.mark.broker
def test_a_batch_declares_each_queue_once_and_every_pipeline_runs(
    worker: WorkerProcess, on_broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery asks for a message's queue to be declared with every publish; inside a batch
    only the first message to a queue does (Kombu's check for "already declared" binds a copy
    of the queue each time), and every pipeline still arrives."""
    import kombu.messaging

    real_maybe_declare = kombu.messaging.maybe_declare
    declared: list[str] = []

    def counting(entity: Any, *args: Any, **kwargs: Any) -> Any:
        declared.append(entity.name)
        return real_maybe_declare(entity, *args, **kwargs)

    monkeypatch.setattr(kombu.messaging, "maybe_declare", counting)
    outcome = run_pipelines([PipelineRequest("eco", {"n": n}) for n in range(10)])
    assert outcome.failed == [] and outcome.messages == 10
    assert declared == ["escavador_eco"]
    for item in outcome.items:
        assert item.handle is not None
        [final] = item.handle.wait(timeout=TIMEOUT)
        assert str(final.correlation_id) == item.correlation_id


def test_one_invalid_request_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request is validated before the broker is even reached."""
    def no_connection(*args: object, **kwargs: object) -> None:
        raise AssertionError("a batch with an invalid request must not connect")

    monkeypatch.setattr(app, "connection_for_write", no_connection)
    requests = [PipelineRequest("eco", {}), PipelineRequest("nope", {}),
                PipelineRequest("eco", {})]
    with pytest.raises(PipelineError, match=r"^pipeline 2: .*nope"):
        run_pipelines(requests)


@pytest.mark.parametrize("line", [
    "[1, 2]", '{"payload": {}}', '{"collect": "eco", "payload": [1]}',
    '{"collect": "eco", "extra": 1}', '{"collect": 3}',
])
def test_a_request_line_says_what_is_wrong(line: str) -> None:
    with pytest.raises(PipelineError):
        PipelineRequest.from_json(json.loads(line))


@pytest.mark.broker
def test_the_broker_refusing_a_message_is_reported_for_that_message(
    on_broker: BrokerUnderTest
) -> None:
    """A real refusal per broker: RabbitMQ nacks past a reject-publish queue's length, Redis
    answers WRONGTYPE for a key that is not a stream, JetStream has no stream for a subject."""
    name = f"batch-refusal-{uuid.uuid4().hex[:8]}"
    options = {**app.conf.broker_transport_options, "confirm_publish": False}
    with Connection(on_broker.url, transport_options=options) as connection:
        channel = connection.channel()
        if on_broker.name == "amqp":
            channel.queue_declare(name, auto_delete=True, arguments={
                "x-max-length": 1, "x-overflow": "reject-publish"})
            targets = [name, name, name]
        elif on_broker.name == "redis-streams":
            client = redis_client(on_broker.url)
            client.set(name, "not a stream")
            targets = [f"{name}-ok", name, f"{name}-ok"]
        else:
            channel.queue_declare(f"{name}-ok")
            targets = [f"{name}-ok", name, f"{name}-ok"]  # `name` was never declared
        confirms = confirm_batch(connection, channel)
        for target in targets:
            message = channel.prepare_message(b"{}", content_type="application/json")
            channel.basic_publish(message, exchange="", routing_key=target)
            confirms.published()
        outcomes = confirms.settle(timeout=15)
        if on_broker.name == "redis-streams":
            client.delete(name, f"{name}-ok")
            client.close()
        else:
            channel.queue_delete(f"{name}-ok" if on_broker.name == "nats" else name)
    if on_broker.name == "amqp":
        assert outcomes[0] is None
        assert all(isinstance(outcome, NotConfirmed) for outcome in outcomes[1:]), outcomes
    else:
        assert outcomes[0] is None and outcomes[2] is None, outcomes
        assert outcomes[1] is not None, outcomes


@pytest.mark.broker
def test_run_from_a_file_of_json_lines(worker: WorkerProcess, on_broker: BrokerUnderTest,
                                       tmp_path: Path) -> None:
    given = str(uuid.uuid4())
    lines = [json.dumps({"collect": "eco", "payload": {"n": n}}) for n in range(5)]
    lines.append(json.dumps({"collect": "eco", "payload": {}, "execute": ["eco"],
                             "correlation_id": given}))
    source = tmp_path / "pipelines.jsonl"
    source.write_text("\n".join(lines) + "\n\n")  # a blank line is skipped
    env = worker_env(on_broker.url)
    done = subprocess.run([ORCHESTRATOR_CLI, "run", "--from", str(source), "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [item["line"] for item in report] == [1, 2, 3, 4, 5, 6]
    assert all(item["confirmed"] for item in report)
    assert report[5]["correlation_id"] == given
    for item in report:
        app.AsyncResult(item["result_id"]).get(timeout=TIMEOUT, disable_sync_subtasks=False)

    piped = subprocess.run([ORCHESTRATOR_CLI, "run", "--from", "-"], cwd=REPO, env=env,
                           input=lines[0] + "\n", capture_output=True, text=True, timeout=60,
                           check=False)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("line 1: ") and piped.stdout.count("\n") == 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + '{"collect": "nope"}\n')
    refused = subprocess.run([ORCHESTRATOR_CLI, "run", "--from", str(bad)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "line 2" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
