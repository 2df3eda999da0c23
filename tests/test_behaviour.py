"""The behaviour suite: a real worker on a real broker, per broker in the ``broker`` fixture."""

from __future__ import annotations

import pickle
import uuid

import pytest
from kombu import Exchange, Producer

from orchestrator.celery_app import app
from orchestrator.correlation import HEADER
from orchestrator.envelope import EventType
from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.pipeline import PipelineError, run_pipeline
from orchestrator.topology import topology
from tests.conftest import CRASH_QUEUES, dead_letters_for
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.broker
TIMEOUT = 60


def test_envelope_round_trip(worker: WorkerProcess, on_broker: object) -> None:
    handle = run_pipeline("eco", {"canal": "abc", "n": 1})
    [result] = handle.wait(timeout=TIMEOUT)
    assert str(result.correlation_id) == handle.correlation_id
    assert result.tipo_evento is EventType.RESULTADO_COLETA
    assert result.payload["entrada"] == {"canal": "abc", "n": 1}
    assert result.payload["header_correlation_id"] == handle.correlation_id


def test_publishing_subscribes_to_no_result_and_waiting_still_gets_it(
    worker: WorkerProcess, on_broker: object
) -> None:
    """A pipeline's caller waits on its last step: the result backend subscribes when the
    caller waits, not at every publish (``StepResultBackend.on_task_call``), and a result
    stored before that subscription is still read."""
    handle = run_pipeline("eco", {"n": 2}, execute=["eco"])
    published = [handle.result, handle.result.parent]
    keys = {app.backend.get_key_for_task(result.id) for result in published}
    assert len(keys) == 2
    assert not keys & app.backend.result_consumer.subscribed_to
    wait_until(handle.result.ready, timeout=TIMEOUT, message="the pipeline's last step done")
    [result] = handle.wait(timeout=TIMEOUT)
    assert str(result.correlation_id) == handle.correlation_id


def test_the_success_log_line_carries_no_payload(worker: WorkerProcess,
                                                on_broker: object) -> None:
    """Celery logs every task's return value; a step's is an envelope whose payload may hold
    secrets, so its line says who succeeded and how fast, nothing of what it returned."""
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    handle = run_pipeline("eco", {"token": secret})
    handle.wait(timeout=TIMEOUT)
    task_id = handle.result.id
    [line] = wait_until(lambda: [line for line in worker.log().splitlines()
                                 if f"[{task_id}] succeeded in" in line],
                        timeout=TIMEOUT, message="the step's success line in the log")
    assert line.rstrip().endswith("s"), line
    assert secret not in worker.log()


def test_a_caller_given_correlation_id_is_kept(worker: WorkerProcess, on_broker: object) -> None:
    given = str(uuid.uuid4())
    handle = run_pipeline("eco", {}, correlation_id=given)
    [result] = handle.wait(timeout=TIMEOUT)
    assert handle.correlation_id == given
    assert str(result.correlation_id) == given


def test_each_task_is_consumed_from_its_own_queue_only(
    worker: WorkerProcess, on_broker: object
) -> None:
    [result] = run_pipeline("eco", {}).wait(timeout=TIMEOUT)
    assert result.payload["routing_key"] == "escavador_eco"
    for name in list(app.tasks):
        if name.startswith(("escavador_", "executador_")):
            route = app.amqp.router.route({}, name, (), {})
            assert route["queue"].name == name
            assert route["routing_key"] == name
    replies = app.control.inspect(destination=[worker.nodename], timeout=10).active_queues()
    assert replies, "the worker did not answer inspect active_queues"
    consumed = {queue["name"] for queue in replies[worker.nodename]}
    # The shared worker loads fewer step modules than this process: it consumes the queue of
    # every step it registered, and nothing else.
    registered = app.control.inspect(destination=[worker.nodename], timeout=10).registered()
    assert registered, "the worker did not answer inspect registered"
    assert consumed == set(registered[worker.nodename]) & set(topology.names())
    assert not consumed & set(CRASH_QUEUES)
    assert not any(name.endswith(".dlq") for name in consumed)


def test_a_worker_narrowed_with_q_consumes_only_that_queue(
    worker: WorkerProcess, on_broker: object, log_dir: object
) -> None:
    narrow = WorkerProcess(dict(worker.env), worker.log_path.parent, queues=["escavador_rss"],
                           concurrency=1, name="narrow").start()
    try:
        narrow.wait_ready()
        replies = app.control.inspect(destination=[narrow.nodename], timeout=10).active_queues()
        assert replies, "the narrowed worker did not answer"
        assert [q["name"] for q in replies[narrow.nodename]] == ["escavador_rss"]
    finally:
        narrow.stop()


def test_chain_carries_one_correlation_id_through_every_step(
    worker: WorkerProcess, on_broker: object
) -> None:
    handle = run_pipeline("eco", {"x": 1}, execute={"eco": {"modo": "teste"}})
    [final] = handle.wait(timeout=TIMEOUT)
    assert final.tipo_evento is EventType.RESULTADO_EXECUCAO
    assert str(final.correlation_id) == handle.correlation_id
    assert final.payload["header_correlation_id"] == handle.correlation_id
    assert final.payload["options"] == {"modo": "teste"}
    [collected] = final.payload["inputs"]
    assert collected["correlation_id"] == handle.correlation_id
    assert collected["payload"]["header_correlation_id"] == handle.correlation_id
    log = wait_until(lambda: handle.correlation_id in worker.log() and worker.log(),
                     timeout=10, message="the correlation id in the worker log")
    task_lines = [line for line in log.splitlines() if "probe step" in line
                  and handle.correlation_id in line]
    assert len(task_lines) >= 2, "each step's log line carries the correlation id"


def test_chord_body_gets_every_collection_result(worker: WorkerProcess, on_broker: object) -> None:
    handle = run_pipeline(["eco", "falha"], {"y": 2}, execute=["eco"])
    [final] = handle.wait(timeout=TIMEOUT)
    assert final.tipo_evento is EventType.RESULTADO_EXECUCAO
    inputs = final.payload["inputs"]
    assert {i["payload"]["step"] for i in inputs} == {"escavador_eco", "escavador_falha"}
    assert {i["correlation_id"] for i in inputs} == {handle.correlation_id}
    assert {i["payload"]["header_correlation_id"] for i in inputs} == {handle.correlation_id}
    assert final.payload["header_correlation_id"] == handle.correlation_id


def test_several_executadores_run_in_parallel_on_the_collection(
    worker: WorkerProcess, on_broker: object
) -> None:
    handle = run_pipeline("eco", {}, execute={"eco": {}, "arquivo": {}})
    finals = handle.wait(timeout=TIMEOUT)
    assert sorted(f.payload.get("step", "arquivo") for f in finals) == ["arquivo",
                                                                         "executador_eco"]
    assert {str(f.correlation_id) for f in finals} == {handle.correlation_id}


def test_a_task_that_fails_for_good_ends_in_its_dlq(
    worker: WorkerProcess, on_broker: object
) -> None:
    handle = run_pipeline("falha", {"mode": "final"})
    with pytest.raises(Exception, match="final failure"):
        handle.wait(timeout=TIMEOUT)
    [letter] = wait_until(lambda: dead_letters_for(handle.correlation_id, "escavador_falha"),
                          timeout=TIMEOUT, message="the dead letter")
    summary = letter.summary()
    assert summary["reason"] == "failed"
    assert summary["task"] == "escavador_falha"
    assert summary["attempts"] == 1
    assert "FinalError" in summary["last_error"]


def test_an_invalid_envelope_goes_to_the_dlq_and_the_worker_keeps_running(
    worker: WorkerProcess, on_broker: object
) -> None:
    marker = str(uuid.uuid4())
    result = app.send_task("escavador_eco", args=[{"tipo_evento": "nope", "marker": marker}],
                           headers={HEADER: marker})
    [letter] = wait_until(lambda: dead_letters_for(marker, "escavador_eco"), timeout=TIMEOUT,
                          message="the invalid envelope in the DLQ")
    assert letter.summary()["reason"] == "invalid_envelope"
    assert "tipo_evento" in letter.summary()["last_error"]
    assert letter.id == result.id
    assert worker.alive
    [ok] = run_pipeline("eco", {}).wait(timeout=TIMEOUT)
    assert ok.tipo_evento is EventType.RESULTADO_COLETA


def test_a_pickled_message_is_refused_not_executed(
    worker: WorkerProcess, on_broker: object
) -> None:
    marker = str(uuid.uuid4())
    task_id = str(uuid.uuid4())
    with app.connection_for_write() as connection:
        producer = Producer(connection)
        producer.publish(
            pickle.dumps(((), {}, {})),
            exchange=Exchange("orchestrator", type="topic", durable=True),
            routing_key="escavador_eco",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"task": "escavador_eco", "id": task_id, HEADER: marker},
        )
    [letter] = wait_until(lambda: dead_letters_for(marker, "escavador_eco"), timeout=TIMEOUT,
                          message="the pickled message in the DLQ")
    assert letter.summary()["reason"] == "content_type_refused"
    assert app.AsyncResult(task_id).state == "PENDING"
    assert worker.alive


def test_an_unknown_step_or_invalid_payload_fails_in_the_caller(on_broker: object) -> None:
    with pytest.raises(PipelineError, match="unknown step"):
        run_pipeline("nao_existe", {})
    with pytest.raises(PipelineError, match="over the"):
        run_pipeline("eco", {"big": "x" * 2_000_000})


def test_dlq_listing_does_not_consume(worker: WorkerProcess, on_broker: object) -> None:
    handle = run_pipeline("falha", {"mode": "final"})
    with pytest.raises(Exception, match="final failure"):
        handle.wait(timeout=TIMEOUT)
    wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
               message="the dead letter")
    assert len(dead_letters_for(handle.correlation_id)) == 1
    assert len(dead_letters_for(handle.correlation_id)) == 1
    assert dlq.counts("escavador_falha")["escavador_falha.dlq"] >= 1


def test_task_events_reach_a_monitor_several_per_message(
    worker: WorkerProcess, on_broker: object
) -> None:
    """What Flower reads: every task's events arrive, batched into ``task.multi`` messages
    (the worker flushes them on a short timer instead of publishing each one), on every pool:
    Celery itself buffers them only with its event hub, which a gevent worker does not run."""
    import contextlib
    import time

    from celery.events.event import get_exchange
    from kombu import Consumer, Queue

    counts = {"messages": 0, "events": 0}
    succeeded: set[str] = set()

    def on_message(body: object, message: object) -> None:
        counts["messages"] += 1
        for event in body if isinstance(body, list) else [body]:
            counts["events"] += 1
            if isinstance(event, dict) and event.get("type") == "task-succeeded":
                succeeded.add(str(event.get("uuid")))
        message.ack()  # type: ignore[attr-defined]

    with app.connection_for_read() as connection:
        # Celery's event exchange: topic, or fanout on Redis-based transports.
        monitor = Queue(f"test-monitor-{uuid.uuid4().hex[:8]}", get_exchange(connection),
                        routing_key="task.#", auto_delete=True, durable=False)
        consumer = Consumer(connection, [monitor], callbacks=[on_message], accept=["json"])
        consumer.consume()

        def a_burst_was_seen_whole() -> bool:
            handles = [run_pipeline("eco", {"n": n}) for n in range(10)]
            for handle in handles:
                handle.wait(timeout=60)
            ids = {str(handle.result.id) for handle in handles}
            deadline = time.monotonic() + 5  # the worker flushes every 0.1 s
            while not ids <= succeeded and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    connection.drain_events(timeout=0.5)
            return ids <= succeeded

        # A burst published before the worker saw the new binding is missed (telemetry
        # tables are cached 2 s on Streams and NATS): send bursts until one arrives whole.
        try:
            wait_until(a_burst_was_seen_whole, timeout=90, interval=0.1,
                       message="a monitor receiving every task's events")
        finally:
            consumer.cancel()
    # Flushed on every loop tick (Celery's way) 30 events took 26-27 messages here;
    # batched, 2. Twice as many events as messages tells the two apart on a slow machine.
    assert counts["events"] >= 2 * counts["messages"], counts
