"""No bytes can stop a worker: whatever a plain client puts on a step queue ends in its DLQ.

The producers here are the brokers' own clients (pika, redis-py, nats-py) and import nothing
of this project: that is how a stray message arrives in production. Each message must be in
``escavador_eco.dlq`` within one delivery, with a reason and its original bytes, and the
worker must go on serving.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.pipeline import run_pipeline
from tests.support.brokers import BrokerUnderTest
from tests.support.plain_clients import PUBLISHERS, redis_client
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.broker

QUEUE = "escavador_eco"
JUNK = [b"hello, not json", b"[1, 2]", b"42", b"", b"\xff\xfe\x00 binary",
        b'{"correlation_id": "not kombu"}', b'{"body": "abc', b'{"body": "!!", "properties": '
        b'{"body_encoding": "base64"}}', b'{"body": "e30=", "properties": []}']


def test_junk_on_a_step_queue_ends_in_its_dlq_and_the_worker_keeps_serving(
    worker: WorkerProcess, on_broker: BrokerUnderTest
) -> None:
    marker = uuid.uuid4().hex.encode()
    bodies = [body + b" " + marker if body.startswith(b"hello") else body for body in JUNK]
    before = {letter.fingerprint for letter in dlq.list_dead_letters(QUEUE)}
    PUBLISHERS[on_broker.name](on_broker.url, QUEUE, bodies)
    if on_broker.name == "redis-streams":
        redis_client(on_broker.url).xadd(QUEUE, {"data": b"an entry without the payload field"})
    expected = len(bodies) + (1 if on_broker.name == "redis-streams" else 0)

    def new_letters() -> list[dlq.DeadLetter]:
        return [letter for letter in dlq.list_dead_letters(QUEUE)
                if letter.fingerprint not in before]

    letters = wait_until(lambda: (found := new_letters()) and len(found) >= expected and found,
                         timeout=60, message=f"{expected} dead letters")
    assert worker.alive
    assert sorted(letter.body for letter in letters if letter.body in bodies) == sorted(bodies)
    for letter in letters:
        assert letter.details["reason"] in ("malformed_body", "content_type_refused",
                                            "not_a_task"), letter.details
        assert letter.details["exception_message"], "the reason says what was wrong"
        shown = letter.full()  # what `orchestrator dlq show` prints
        json.dumps(shown)
        if isinstance(shown["body"], dict) and set(shown["body"]) == {"base64"}:
            assert base64.b64decode(shown["body"]["base64"]) == letter.body
    binary = next(letter for letter in letters if letter.body.startswith(b"\xff\xfe"))
    assert binary.full()["body"] == {"base64": base64.b64encode(binary.body).decode()}
    handle = run_pipeline("eco", {"after": "junk"}, execute=["eco"])
    [final] = handle.wait(timeout=60)
    assert str(final.correlation_id) == handle.correlation_id
    assert worker.alive


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["body", "properties", "headers",
                                                              "content-type", "x"]),
                                             inner, max_size=3),
                           max_leaves=8)
frames = (st.binary(max_size=48) | st.text(max_size=48).map(str.encode)
          | json_values.map(lambda value: json.dumps(value).encode()))


@settings(max_examples=2, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(frames, min_size=8, max_size=8))
def test_a_generated_batch_all_ends_in_the_dlq(
    worker: WorkerProcess, on_broker: BrokerUnderTest, batch: list[bytes]
) -> None:
    before = {letter.fingerprint for letter in dlq.list_dead_letters(QUEUE)}
    PUBLISHERS[on_broker.name](on_broker.url, QUEUE, batch)

    def new_letters() -> list[dlq.DeadLetter]:
        return [letter for letter in dlq.list_dead_letters(QUEUE)
                if letter.fingerprint not in before]

    letters = wait_until(lambda: len(found := new_letters()) >= len(batch) and found,
                         timeout=60, message=f"{len(batch)} generated messages in the DLQ")
    assert worker.alive
    for letter in letters:
        assert letter.details["reason"], letter.details
        json.dumps(letter.full())
