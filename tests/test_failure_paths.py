"""Every way a delivery can fail ends in the DLQ with a reason, and reading a DLQ changes nothing.

On a real worker and broker: retries whose delays reuse RabbitMQ's delay levels reach their
end; a step message with the wrong arguments, a result that cannot be stored and a dead-letter
publish that fails are dead-lettered, not acked away; listing a DLQ ten times leaves every dead
letter, its order and its attempt count as they were.
"""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Exchange, Producer

from orchestrator.celery_app import app
from orchestrator.correlation import HEADER
from orchestrator.envelope import Envelope, EventType
from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.pipeline import run_pipeline
from tests.conftest import dead_letters_for
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.broker
TIMEOUT = 60


def attempts_in(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- retries reach their end --------------------------------------------------------------------

def test_retries_that_reuse_delay_levels_all_happen_then_dead_letter(
    worker: WorkerProcess, on_broker: object, tmp_path: Path
) -> None:
    """3 s then 6 s (both pass RabbitMQ's 2 s delay queue), and a jittered 2/4/8 s run."""
    fixed_file, jitter_file = tmp_path / "fixed", tmp_path / "jitter"
    fixed = run_pipeline("atrasos", {"attempts_file": str(fixed_file)})
    jittered = run_pipeline("atrasos_jitter", {"attempts_file": str(jitter_file)})
    for handle, expected in ((fixed, 3), (jittered, 4)):
        [letter] = wait_until(lambda h=handle: dead_letters_for(h.correlation_id),
                              timeout=TIMEOUT, message=f"the dead letter of {handle}")
        assert letter.details["reason"] == "retries_exhausted"
        assert letter.details["attempts"] == expected
    fixed_attempts = attempts_in(fixed_file)
    assert [a["attempt"] for a in fixed_attempts] == [1, 2, 3]
    gaps = [later["at"] - earlier["at"]
            for earlier, later in itertools.pairwise(fixed_attempts)]
    assert gaps[0] >= 2.5 and gaps[1] >= 5.5, f"the retries kept their delays: {gaps}"
    assert [a["attempt"] for a in attempts_in(jitter_file)] == [1, 2, 3, 4]


# -- failures around the step ---------------------------------------------------------------------

def publish_task(task: str, args: list[Any], kwargs: dict[str, Any], marker: str) -> None:
    """A Celery protocol-2 task message, as another Celery client would send it."""
    with app.connection_for_write() as connection:
        Producer(connection).publish(
            json.dumps([args, kwargs, {"callbacks": None, "errbacks": None, "chain": None,
                                       "chord": None}]).encode(),
            exchange=Exchange("orchestrator", type="topic", durable=True), routing_key=task,
            content_type="application/json", content_encoding="utf-8",
            headers={"task": task, "id": str(uuid.uuid4()), HEADER: marker, "retries": 0},
        )


@pytest.mark.parametrize("args, kwargs", [
    pytest.param("envelope", {"unexpected": 1}, id="unexpected-keyword"),
    pytest.param("envelope,envelope,envelope", {}, id="too-many-arguments"),
    pytest.param("", {}, id="no-argument"),
    pytest.param("envelope", {"options": "not an object"}, id="options-not-an-object"),
])
def test_a_step_message_with_the_wrong_arguments_is_dead_lettered(
    worker: WorkerProcess, on_broker: object, args: str, kwargs: dict[str, Any]
) -> None:
    marker = str(uuid.uuid4())
    envelope = Envelope.new(EventType.INICIAR_COLETA, {}, marker).to_dict()
    publish_task("escavador_eco", [envelope for item in args.split(",") if item], kwargs,
                 marker)
    [letter] = wait_until(lambda: dead_letters_for(marker), timeout=TIMEOUT,
                          message="the message with the wrong arguments in the DLQ")
    assert letter.details["reason"] == "invalid_arguments"
    assert letter.details["exception_type"] == "InvalidArguments"
    assert worker.alive


def test_a_result_that_cannot_be_stored_is_dead_lettered_not_acked(
    worker: WorkerProcess, on_broker: object
) -> None:
    handle = run_pipeline("resultado_perdido", {})
    [letter] = wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
                          message="the message whose result could not be stored")
    assert letter.details["reason"] == "rejected"
    assert letter.details["attempts"] == 1
    assert json.loads(letter.body)[0][0]["correlation_id"] == handle.correlation_id
    assert worker.alive


def test_a_failed_dead_letter_publish_leaves_it_to_the_broker(
    worker: WorkerProcess, on_broker: object
) -> None:
    handle = run_pipeline("dlq_indisponivel", {})
    with pytest.raises(Exception, match="the dead-letter publish failed"):
        handle.wait(timeout=TIMEOUT)
    [letter] = wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
                          message="the broker's dead letter")
    assert letter.details["reason"] == "rejected"
    assert letter.details["attempts"] == 1
    assert json.loads(letter.body)[0][0]["correlation_id"] == handle.correlation_id


# -- reading a DLQ changes nothing ----------------------------------------------------------------

def test_listing_a_dlq_ten_times_changes_nothing(
    worker: WorkerProcess, on_broker: object
) -> None:
    handles = [run_pipeline("falha", {"mode": "final"}) for _ in range(3)]
    handles.append(run_pipeline("dlq_indisponivel", {}))
    ids = {handle.correlation_id for handle in handles}

    def ours() -> list[tuple[Any, ...]]:
        return [(letter.id, letter.dlq, letter.details["reason"], letter.details["attempts"],
                 letter.body)
                for letter in dlq.list_dead_letters()
                if letter.summary()["correlation_id"] in ids]

    wait_until(lambda: len(ours()) == 4, timeout=TIMEOUT, message="four dead letters")
    first = ours()
    for _ in range(9):
        assert ours() == first
    shown = dlq.show(first[0][0])
    assert shown.details["attempts"] == first[0][3]
    assert dlq.counts("escavador_falha")["escavador_falha.dlq"] >= 3
    assert ours() == first
    assert [attempts for *_, attempts, _ in first] == [1, 1, 1, 1]
