"""The failure lifecycle on a real worker and broker: retries, dead letters, poison, replay."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Exchange, Producer

from orchestrator.celery_app import app
from orchestrator.correlation import HEADER
from orchestrator.envelope import Envelope, EventType
from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.settings import get_settings
from tests.conftest import CRASH_QUEUES, SHARED_POOL, dead_letters_for
from tests.support.brokers import BrokerUnderTest
from tests.support.crashes import assert_a_killed_step_completes_exactly_once
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, worker_env

pytestmark = pytest.mark.broker
TIMEOUT = 60


def publish_raw(body: bytes, *, routing_key: str = "escavador_eco",
                content_type: str = "application/json", headers: dict | None = None) -> None:
    with app.connection_for_write() as connection:
        Producer(connection).publish(
            body, exchange=Exchange("orchestrator", type="topic", durable=True),
            routing_key=routing_key, content_type=content_type, content_encoding="utf-8",
            headers=headers or {},
        )


def valid_task_headers(marker: str, task: str = "escavador_eco") -> dict[str, str]:
    return {"task": task, "id": str(uuid.uuid4()), HEADER: marker}


def envelope_body(marker: str) -> bytes:
    envelope = Envelope.new(EventType.INICIAR_COLETA, {}, marker)
    return json.dumps([[envelope.to_dict()], {}, {}]).encode()


# -- retries -----------------------------------------------------------------------------------

def test_retry_then_success(worker: WorkerProcess, on_broker: object) -> None:
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline("falha", {"mode": "flaky", "failures": 1})
    [result] = handle.wait(timeout=TIMEOUT)
    assert result.payload["attempt"] == 2
    assert result.payload["header_correlation_id"] == handle.correlation_id
    assert not dead_letters_for(handle.correlation_id)


def test_retries_exhausted_then_dlq_with_full_details(
    worker: WorkerProcess, on_broker: object
) -> None:
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline("falha", {"mode": "always"})
    with pytest.raises(Exception, match="still failing"):
        handle.wait(timeout=TIMEOUT)
    [letter] = wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
                          message="the dead letter")
    details = letter.details
    assert details["reason"] == "retries_exhausted"
    assert details["attempts"] == get_settings().max_retries + 1
    assert details["exception_type"] == "RetryableError"
    assert "attempt 3" in details["exception_message"]
    assert "Traceback" in details["traceback"]
    assert details["queue"] == "escavador_falha"
    assert details["task"] == "escavador_falha"
    assert details["task_id"] == letter.id
    assert details["correlation_id"] == handle.correlation_id
    assert details["first_failure_at"] < details["last_failure_at"]
    # Retried and dead-lettered, the message still shows the correlation id, not the payload.
    assert "correlation_id=" in letter.headers["argsrepr"]
    assert "always" not in letter.headers["argsrepr"]


def test_final_error_goes_straight_to_the_dlq(worker: WorkerProcess, on_broker: object) -> None:
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline("falha", {"mode": "final"})
    with pytest.raises(Exception, match="final failure"):
        handle.wait(timeout=TIMEOUT)
    [letter] = wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
                          message="the dead letter")
    assert letter.details["reason"] == "failed"
    assert letter.details["attempts"] == 1


# -- time limits -------------------------------------------------------------------------------

@pytest.mark.skipif(SHARED_POOL != "prefork", reason="Celery enforces the soft time limit only "
                    "in prefork children (README, 'I/O-bound steps')")
def test_soft_time_limit_takes_the_failure_path(worker: WorkerProcess, on_broker: object) -> None:
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline("demorado", {"seconds": 3})
    with pytest.raises(Exception, match=r"SoftTimeLimitExceeded|soft time limit"):
        handle.wait(timeout=TIMEOUT)
    [letter] = wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
                          message="the dead letter")
    assert letter.details["reason"] == "retries_exhausted"
    assert letter.details["exception_type"] == "SoftTimeLimitExceeded"
    assert letter.details["attempts"] == get_settings().max_retries + 1


# -- malformed input ---------------------------------------------------------------------------

MALFORMED = {
    "garbage_bytes": (b"\x00\xff not json at all", "application/json", "malformed_body"),
    "not_a_task_body": (b'{"hello": "world"}', "application/json", "malformed_body"),
    "yaml": (b"- 1\n- 2\n", "application/x-yaml", "content_type_refused"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_bodies_go_to_the_dlq(worker: WorkerProcess, on_broker: object,
                                        kind: str) -> None:
    body, content_type, reason = MALFORMED[kind]
    marker = str(uuid.uuid4())
    publish_raw(body, content_type=content_type, headers=valid_task_headers(marker))
    [letter] = wait_until(lambda: dead_letters_for(marker), timeout=TIMEOUT,
                          message=f"the {kind} message in the DLQ")
    assert letter.details["reason"] == reason
    assert letter.body == body, "the dead letter keeps the original body as it was"
    assert worker.alive


def test_a_message_without_task_headers_goes_to_the_dlq(
    worker: WorkerProcess, on_broker: object
) -> None:
    marker = str(uuid.uuid4())
    publish_raw(envelope_body(marker), headers={HEADER: marker})
    [letter] = wait_until(lambda: dead_letters_for(marker), timeout=TIMEOUT,
                          message="the headerless message in the DLQ")
    assert letter.details["reason"] == "not_a_task"
    assert worker.alive


def test_an_unknown_task_goes_to_the_dlq(worker: WorkerProcess, on_broker: object) -> None:
    marker = str(uuid.uuid4())
    publish_raw(envelope_body(marker), headers=valid_task_headers(marker, task="no.such.task"))
    [letter] = wait_until(lambda: dead_letters_for(marker), timeout=TIMEOUT,
                          message="the unknown task in the DLQ")
    assert letter.details["reason"] == "unknown_task"
    assert "no.such.task" in letter.details["exception_message"]


def test_an_oversized_message_goes_to_the_dlq(worker: WorkerProcess,
                                              on_broker: BrokerUnderTest) -> None:
    marker = str(uuid.uuid4())
    envelope = Envelope.new(EventType.INICIAR_COLETA, {"big": "x" * 1_100_000}, marker)
    body = json.dumps([[envelope.to_dict()], {}, {}]).encode()
    if on_broker.name == "nats":
        # NATS itself refuses payloads over max_payload (1 MiB): the producer gets the error.
        with pytest.raises(ValueError, match="max_payload"):
            publish_raw(body, headers=valid_task_headers(marker))
        return
    publish_raw(body, headers=valid_task_headers(marker))
    [letter] = wait_until(lambda: dead_letters_for(marker), timeout=TIMEOUT,
                          message="the oversized message in the DLQ")
    assert letter.details["reason"] == "oversized"
    assert worker.alive


# -- replay ------------------------------------------------------------------------------------

def test_replay_after_the_fix_completes_with_the_original_correlation_id(
    worker: WorkerProcess, on_broker: object, tmp_path: Path
) -> None:
    from orchestrator.pipeline import run_pipeline

    marker = tmp_path / "fixed"
    handle = run_pipeline("falha", {"fixed_marker": str(marker)}, execute=["eco"])
    with pytest.raises(Exception, match="not fixed yet"):
        handle.wait(timeout=TIMEOUT)
    [letter] = wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
                          message="the dead letter")
    marker.write_text("fixed")
    [moved] = dlq.replay(letter.id)
    assert moved.id == letter.id
    [final] = handle.wait_replayed(timeout=TIMEOUT)
    assert final.tipo_evento is EventType.RESULTADO_EXECUCAO
    assert str(final.correlation_id) == handle.correlation_id
    assert final.payload["header_correlation_id"] == handle.correlation_id
    [collected] = final.payload["inputs"]
    assert collected["payload"]["attempt"] == 1, "the retry count was reset"
    assert not dead_letters_for(handle.correlation_id)


def test_replay_all_moves_every_message_once(
    worker: WorkerProcess, on_broker: object, tmp_path: Path
) -> None:
    from orchestrator.pipeline import run_pipeline

    marker = tmp_path / "fixed"
    handles = [run_pipeline("falha", {"fixed_marker": str(marker)}) for _ in range(12)]
    for handle in handles:
        with pytest.raises(Exception, match="not fixed yet"):
            handle.wait(timeout=TIMEOUT)
    ids = {h.correlation_id for h in handles}
    wait_until(lambda: ids <= {letter.summary()["correlation_id"]
                               for letter in dlq.list_dead_letters("escavador_falha")},
               timeout=TIMEOUT, message="all twelve dead letters")
    marker.write_text("fixed")
    moved = dlq.replay(all_=True, queue="escavador_falha")
    assert ids <= {letter.summary()["correlation_id"] for letter in moved}
    # Letters, not requests: a DLQ shared with other tests may hold two of one request.
    letter_ids = [letter.id for letter in moved]
    assert len(letter_ids) == len(set(letter_ids)), "no dead letter replayed twice"
    results = [handle.wait_replayed(timeout=TIMEOUT)[0] for handle in handles]
    assert {str(r.correlation_id) for r in results} == ids
    remaining = {letter.summary()["correlation_id"]
                 for letter in dlq.list_dead_letters("escavador_falha")}
    assert not ids & remaining, "every replayed message left the DLQ"


def test_purge_empties_a_dlq(worker: WorkerProcess, on_broker: object) -> None:
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline("falha", {"mode": "final"})
    with pytest.raises(Exception, match="final failure"):
        handle.wait(timeout=TIMEOUT)
    wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
               message="the dead letter")
    removed = dlq.purge("escavador_falha")
    assert removed["escavador_falha.dlq"] >= 1
    assert dlq.counts("escavador_falha")["escavador_falha.dlq"] == 0


# -- crashes (own workers: they get killed) -----------------------------------------------------

@pytest.fixture()
def crash_env(broker: BrokerUnderTest, worker: WorkerProcess) -> dict[str, str]:
    """The crash workers' environment; the shared worker runs the rest of the pipelines."""
    return worker_env(broker.url)


@pytest.fixture()
def crash_workers(crash_env: dict[str, str], log_dir: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.stop()


def start_crash_worker(env: dict[str, str], log_dir: Path, started: list[WorkerProcess],
                       concurrency: int = 1) -> WorkerProcess:
    process = WorkerProcess(env, log_dir, queues=CRASH_QUEUES, concurrency=concurrency,
                            name="crash").start()
    started.append(process)
    process.wait_ready()
    return process


@pytest.mark.crash
def test_sigkill_mid_task_completes_exactly_once_after_restart(
    on_broker: object, crash_env: dict[str, str], crash_workers: list[WorkerProcess],
    log_dir: Path, tmp_path: Path,
) -> None:
    first = start_crash_worker(crash_env, log_dir, crash_workers)
    assert_a_killed_step_completes_exactly_once(
        first.kill, lambda: start_crash_worker(crash_env, log_dir, crash_workers), tmp_path,
        TIMEOUT)


@pytest.mark.crash
def test_two_publications_of_one_step_run_it_once(
    on_broker: object, crash_env: dict[str, str], crash_workers: list[WorkerProcess],
    log_dir: Path, tmp_path: Path,
) -> None:
    """The same step of the same request published twice, delivered concurrently to two
    pool processes: one runs, the other waits for the claim and returns the stored result."""
    from orchestrator.pipeline import run_pipeline

    start_crash_worker(crash_env, log_dir, crash_workers, concurrency=2)
    effects = tmp_path / "effects"
    correlation_id = str(uuid.uuid4())
    payload = {"seconds": 1.5, "effects_file": str(effects)}
    first = run_pipeline("lento", payload, correlation_id=correlation_id)
    second = run_pipeline("lento", payload, correlation_id=correlation_id)
    [one] = first.wait(timeout=TIMEOUT)
    [two] = second.wait(timeout=TIMEOUT)
    assert one.payload == two.payload, "the second delivery returned the stored result"
    assert effects.read_text().splitlines() == [f"{correlation_id}:escavador_lento"]


@pytest.mark.crash
def test_poison_message_is_dead_lettered_after_the_delivery_limit(
    on_broker: object, crash_env: dict[str, str], crash_workers: list[WorkerProcess],
    log_dir: Path,
) -> None:
    from orchestrator.pipeline import run_pipeline

    worker = start_crash_worker(crash_env, log_dir, crash_workers, concurrency=2)
    poison = run_pipeline("crash", {"crash": True})
    healthy = [run_pipeline("crash", {"crash": False}) for _ in range(4)]
    for handle in healthy:
        [result] = handle.wait(timeout=TIMEOUT)
        assert str(result.correlation_id) == handle.correlation_id
    [letter] = wait_until(lambda: dead_letters_for(poison.correlation_id), timeout=120,
                          message="the poison message in the DLQ")
    assert letter.details["reason"] == "delivery_limit"
    assert letter.details["attempts"] == get_settings().delivery_limit + 1, "runs, on any broker"
    assert worker.alive


@pytest.mark.crash
def test_hard_time_limit_kills_the_task_and_loses_no_message(
    on_broker: object, crash_env: dict[str, str], crash_workers: list[WorkerProcess],
    log_dir: Path,
) -> None:
    from orchestrator.pipeline import run_pipeline

    worker = start_crash_worker(crash_env, log_dir, crash_workers)
    handle = run_pipeline("teimoso", {"seconds": 30})
    [letter] = wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=120,
                          message="the hard-killed message in the DLQ")
    assert letter.details["reason"] == "delivery_limit"
    assert "TimeLimitExceeded" in worker.log() or "Hard time limit" in worker.log()
    assert worker.alive
