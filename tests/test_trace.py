"""The request timeline (``orchestrator trace``): the record, its outcome, on every broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from orchestrator.batching import Batcher
from orchestrator.cli import cli
from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.settings import get_settings
from orchestrator.trace import Timeline, TraceEvent, timeline
from orchestrator.trace import record as trace_record
from orchestrator.trace.model import build
from orchestrator.trace.record import TraceRecorder, trace_key
from orchestrator.trace.timeline import dead_letter_events
from tests.conftest import dead_letters_for
from tests.support.brokers import BrokerUnderTest
from tests.support.waiting import wait_until
from tests.support.workers import REPO, WorkerProcess, worker_env

TIMEOUT = 60
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def event(kind: str, task_id: str | None, seconds: float, **fields: Any) -> TraceEvent:
    return TraceEvent(kind=kind, at=NOW + timedelta(seconds=seconds), correlation_id="c",
                      task_id=task_id, **fields)  # type: ignore[arg-type]


# -- the outcome, from the events alone ---------------------------------------------------------

def test_an_unknown_request_has_an_empty_timeline() -> None:
    found = build("c", [])
    assert found == Timeline(correlation_id="c", events=[], outcome="unknown", finished=False)


def test_a_chain_finishes_when_its_last_step_succeeded() -> None:
    first = [event("published", "a", 0, last_step=False), event("started", "a", 1)]
    running = build("c", first)
    assert (running.outcome, running.finished) == ("running", False)
    done_a = [*first, event("published", "b", 2, last_step=True), event("succeeded", "a", 3)]
    assert build("c", done_a).outcome == "running"  # b is published, not run
    done = build("c", [*done_a, event("started", "b", 4), event("succeeded", "b", 5)])
    assert (done.outcome, done.finished) == ("succeeded", True)


def test_done_so_far_is_not_finished_before_a_last_step_is_seen() -> None:
    found = build("c", [event("published", "a", 0, last_step=False),
                        event("succeeded", "a", 1)])
    assert (found.outcome, found.finished) == ("running", False)


def test_events_are_sorted_whatever_order_they_were_written_in() -> None:
    found = build("c", [event("succeeded", "a", 3), event("published", "a", 0, last_step=True),
                        event("started", "a", 2), event("received", "a", 1)])
    assert [e.kind for e in found.events] == ["published", "received", "started", "succeeded"]
    assert found.outcome == "succeeded"


def test_a_retry_is_pending_and_a_dead_letter_ends_it() -> None:
    retrying = [event("published", "a", 0, last_step=True), event("started", "a", 1),
                event("retried", "a", 2, reason="boom", delay_seconds=1.0),
                event("published", "a", 2.1, attempt=2)]
    assert build("c", retrying).outcome == "running"
    dead = build("c", [*retrying, event("failed", "a", 4), event("dead_lettered", "a", 4.1)])
    assert (dead.outcome, dead.finished) == ("dead_lettered", True)


def test_a_dead_header_of_a_chord_ends_it_only_when_nothing_else_runs() -> None:
    events = [event("published", "a", 0, last_step=False),
              event("published", "b", 0, last_step=False),
              event("dead_lettered", "a", 1), event("started", "b", 1)]
    assert build("c", events).outcome == "running"
    assert build("c", [*events, event("succeeded", "b", 2)]).outcome == "dead_lettered"


def test_a_replay_reopens_a_dead_request() -> None:
    events = [event("published", "a", 0, last_step=True), event("dead_lettered", "a", 1),
              event("replayed", "a", 2)]
    assert build("c", events).outcome == "running"
    assert build("c", [*events, event("succeeded", "a", 3)]).outcome == "succeeded"


def test_a_failure_outside_the_runtime_is_failed() -> None:
    found = build("c", [event("published", "a", 0, last_step=True), event("failed", "a", 1)])
    assert (found.outcome, found.finished) == ("failed", True)


class Letter:
    """What :func:`dead_letter_events` reads of a dead letter."""

    def __init__(self, task_id: str, own: bool, reason: str) -> None:
        self.id = task_id
        self.queue = "escavador_eco"
        self.dlq = "escavador_eco.dlq"
        self.headers = {"id": task_id, **({"x_dead_letter": {}} if own else {})}
        self.details = {"task_id": task_id, "reason": reason, "attempts": 4,
                        "last_failure_at": "2026-12-01T12:00:05Z", "task": "escavador_eco"}

    def summary(self) -> dict[str, Any]:
        return {"task": "escavador_eco", "reason": self.details["reason"],
                "last_error": "redelivered past the delivery limit"}


def test_broker_dead_letters_are_merged_and_own_ones_not_twice() -> None:
    recorded = [event("published", "a", 0, last_step=True), event("received", "a", 1),
                event("dead_lettered", "b", 2)]
    letters: Any = [Letter("a", False, "delivery_limit"), Letter("b", True, "failed"),
                    Letter("d", True, "failed")]
    merged = dead_letter_events("c", recorded, letters, now=NOW + timedelta(seconds=6))
    [broker] = merged  # d: an own dead letter whose event may not be flushed yet
    assert broker.by_broker and broker.reason == "delivery_limit"
    assert broker.task_id == broker.dead_letter_id == "a"
    assert broker.at == NOW + timedelta(seconds=5)
    assert build("c", [*recorded, broker]).outcome == "dead_lettered"
    lost = dead_letter_events("c", recorded, letters, now=NOW + timedelta(seconds=60))
    assert [e.task_id for e in lost] == ["a", "d"], "d's event was lost: from the DLQ"


# -- batching and the record in Redis -----------------------------------------------------------

def test_a_batch_leaves_after_the_interval_and_close_sends_the_rest() -> None:
    sent: list[list[int]] = []
    batch: Batcher[int] = Batcher(sent.append, 0.05, max_held=3, name="test")
    assert batch.add(1) and batch.add(2)
    wait_until(lambda: sent == [[1, 2]], timeout=5, message="the first batch")
    assert batch.add(3) and batch.add(4) and batch.add(5) and not batch.add(6)
    batch.close()
    assert sent[-1] == [3, 4, 5] and batch.closed


@pytest.fixture()
def trace_redis(result_backend: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(result_backend)
    yield client
    client.close()


def test_the_record_is_bounded_and_expires(trace_redis: redis.Redis) -> None:
    settings = get_settings().model_copy(update={"trace_max_events": 5,
                                                 "trace_retention": 120})
    recorder = TraceRecorder(settings)
    correlation_id = str(uuid.uuid4())
    for number in range(12):
        recorder.add({"kind": "started", "at": time.time(), "correlation_id": correlation_id,
                      "attempt": number + 1})
    recorder.close()
    stored = [json.loads(item) for item in trace_redis.lrange(trace_key(correlation_id), 0, -1)]
    assert [item["attempt"] for item in stored] == [8, 9, 10, 11, 12], "the newest kept"
    assert 0 < trace_redis.ttl(trace_key(correlation_id)) <= 120


def test_a_disabled_record_writes_nothing(trace_redis: redis.Redis) -> None:
    recorder = TraceRecorder(get_settings().model_copy(update={"trace_enabled": False}))
    correlation_id = str(uuid.uuid4())
    recorder.add({"kind": "started", "at": time.time(), "correlation_id": correlation_id})
    recorder.close()
    assert not trace_redis.exists(trace_key(correlation_id))


def test_an_unreachable_redis_loses_the_batch_not_the_caller() -> None:
    settings = get_settings().model_copy(update={"result_backend": "redis://127.0.0.1:1/0",
                                                 "idempotency_url": None})
    recorder = TraceRecorder(settings)
    recorder.add({"kind": "started", "at": time.time(), "correlation_id": "c"})
    recorder.close()  # logs a warning, raises nothing


# -- on every broker, against a real worker -----------------------------------------------------

def finished_timeline(correlation_id: str, timeout: float = TIMEOUT) -> Timeline:
    def done() -> Timeline | None:
        found = timeline(correlation_id)
        return found if found.finished else None

    return wait_until(done, timeout=timeout, interval=0.2,
                      message=f"the timeline of {correlation_id} to finish")


def kinds_of(found: Timeline, task: str) -> list[str]:
    return [e.kind for e in found.events if e.task == task]


def timeline_with(correlation_id: str, task: str, kind: str) -> Timeline:
    """The timeline once it has an event ``kind`` of ``task``."""
    def has() -> Timeline | None:
        found = timeline(correlation_id)
        return found if kind in kinds_of(found, task) else None

    return wait_until(has, timeout=10, message=f"a {kind} event of {task}")


@pytest.mark.broker
def test_a_chains_timeline_has_every_step_in_order(worker: WorkerProcess,
                                                   on_broker: BrokerUnderTest) -> None:
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline("eco", {"n": 1}, execute=["eco"])
    handle.wait(timeout=TIMEOUT)
    found = finished_timeline(handle.correlation_id)
    assert found.outcome == "succeeded"
    for step in ("escavador_eco", "executador_eco"):
        assert kinds_of(found, step) == ["published", "received", "started", "succeeded"], step
        events = [e for e in found.events if e.task == step]
        assert {e.queue for e in events} == {step}
        assert {e.attempt for e in events} == {1}
        assert len({e.task_id for e in events}) == 1
        assert [e.worker for e in events[1:]] == [worker.nodename] * 3
        [succeeded] = [e for e in events if e.kind == "succeeded"]
        assert succeeded.runtime_seconds is not None and 0 < succeeded.runtime_seconds < 10
    published = {e.task: e for e in found.events if e.kind == "published"}
    assert published["escavador_eco"].worker is None, "published by this process"
    assert published["executador_eco"].worker == worker.nodename, "the chain link"
    assert published["executador_eco"].last_step and not published["escavador_eco"].last_step
    assert all(e.at.tzinfo is not None for e in found.events)
    assert found.events == sorted(found.events, key=lambda e: e.at)


@pytest.mark.broker
def test_a_retried_then_dead_lettered_step(worker: WorkerProcess,
                                           on_broker: BrokerUnderTest) -> None:
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline("falha", {"mode": "always"})
    with pytest.raises(Exception, match="still failing"):
        handle.wait(timeout=TIMEOUT)
    found = finished_timeline(handle.correlation_id)
    assert found.outcome == "dead_lettered"
    retries = [e for e in found.events if e.kind == "retried"]
    max_retries = get_settings().max_retries
    assert [e.attempt for e in retries] == list(range(1, max_retries + 1))
    assert [e.delay_seconds for e in retries] == [1.0, 2.0]  # backoff 1 s, doubling, no jitter
    assert all("RetryableError: still failing" in str(e.reason) for e in retries)
    assert all(e.worker == worker.nodename for e in retries)
    assert [e.attempt for e in found.events if e.kind == "started"] == [1, 2, 3]
    assert [e.attempt for e in found.events if e.kind == "published"] == [1, 2, 3]
    [failed] = [e for e in found.events if e.kind == "failed"]
    [dead] = [e for e in found.events if e.kind == "dead_lettered"]
    assert dead.reason == failed.reason == "retries_exhausted"
    assert dead.attempt == max_retries + 1 and not dead.by_broker
    assert dead.dead_letter_id == dead.task_id and dead.queue == "escavador_falha"
    assert "RetryableError" in str(failed.detail)
    assert found.events[-1].kind == "dead_lettered"


@pytest.mark.broker
def test_a_replay_appears_and_the_request_finishes(worker: WorkerProcess,
                                                   on_broker: BrokerUnderTest,
                                                   tmp_path: Path) -> None:
    from orchestrator.pipeline import run_pipeline

    marker = tmp_path / "fixed"
    handle = run_pipeline("falha", {"fixed_marker": str(marker)}, execute=["eco"])
    with pytest.raises(Exception, match="not fixed yet"):
        handle.wait(timeout=TIMEOUT)
    assert finished_timeline(handle.correlation_id).outcome == "dead_lettered"
    marker.write_text("fixed")
    [moved] = dlq.replay(correlation_id=handle.correlation_id)
    found = finished_timeline(handle.correlation_id)
    assert found.outcome == "succeeded"
    kinds = kinds_of(found, "escavador_falha")
    assert kinds[kinds.index("dead_lettered"):] == ["dead_lettered", "replayed", "received",
                                                    "started", "succeeded"]
    [replayed] = [e for e in found.events if e.kind == "replayed"]
    assert replayed.dead_letter_id == moved.id == replayed.task_id
    assert replayed.reason == "failed" and replayed.detail == "from escavador_falha.dlq"
    assert kinds_of(found, "executador_eco")[-1] == "succeeded"


@pytest.mark.broker
def test_a_failure_outside_the_runtime_shows_the_brokers_dead_letter(
    worker: WorkerProcess, on_broker: BrokerUnderTest
) -> None:
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline("resultado_perdido", {})
    wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
               message="the rejected message in the DLQ")
    assert finished_timeline(handle.correlation_id).outcome == "dead_lettered"
    # The broker's dead letter may be read before the worker's batch is in: it comes later.
    found = timeline_with(handle.correlation_id, "escavador_resultado_perdido", "failed")
    assert found.outcome == "dead_lettered" and found.finished
    assert kinds_of(found, "escavador_resultado_perdido") == [
        "published", "received", "started", "failed", "dead_lettered"]
    [failed] = [e for e in found.events if e.kind == "failed"]
    assert "rejected" in str(failed.reason) and "ConnectionError" in str(failed.detail)
    assert failed.worker == worker.nodename
    dead = found.events[-1]
    assert dead.by_broker and dead.reason == "rejected" and dead.dead_letter_id


@pytest.mark.broker
def test_the_gates_refusal_is_in_the_timeline(worker: WorkerProcess,
                                              on_broker: BrokerUnderTest) -> None:
    from tests.test_failures import publish_raw, valid_task_headers

    correlation_id = str(uuid.uuid4())
    headers = valid_task_headers(correlation_id)
    publish_raw(b"\x00 not json", headers=headers)
    found = finished_timeline(correlation_id)
    [dead] = found.events
    assert (dead.kind, dead.reason, dead.task_id) == ("dead_lettered", "malformed_body",
                                                      headers["id"])
    assert dead.worker == worker.nodename and not dead.by_broker


def cli_env(broker_url: str) -> dict[str, str]:
    return worker_env(broker_url)


@pytest.mark.broker
def test_follow_prints_events_until_the_pipeline_ends(worker: WorkerProcess,
                                                      on_broker: BrokerUnderTest) -> None:
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline("falha", {"mode": "flaky", "failures": 1}, execute=["eco"])
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "from orchestrator.cli import main; main()", "trace",
         handle.correlation_id, "--follow", "--json", "--timeout", "60", "--interval", "0.2"],
        cwd=REPO, env=cli_env(on_broker.url), capture_output=True, text=True, timeout=90,
        check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[-1] == {"correlation_id": handle.correlation_id, "outcome": "succeeded",
                         "finished": True}
    kinds = [line["kind"] for line in lines[:-1]]
    assert "retried" in kinds and kinds.count("succeeded") == 2
    assert time.monotonic() - started < 60


@pytest.mark.broker
def test_follow_gives_up_after_its_timeout(on_broker: BrokerUnderTest) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from orchestrator.cli import main; main()", "trace",
         str(uuid.uuid4()), "--follow", "--timeout", "0.5", "--interval", "0.1"],
        cwd=REPO, env=cli_env(on_broker.url), capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 4, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "did not finish within 0.5 s" in line and "no trace of request" in line


@pytest.mark.broker
def test_the_cli_prints_the_timeline(worker: WorkerProcess, on_broker: BrokerUnderTest) -> None:
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline("eco", {}, execute=["eco"])
    handle.wait(timeout=TIMEOUT)
    finished_timeline(handle.correlation_id)
    runner = CliRunner()
    result = runner.invoke(cli, ["trace", handle.correlation_id, "--json"])
    assert result.exit_code == 0, result.output
    printed = Timeline.model_validate(json.loads(result.output))
    assert printed.outcome == "succeeded" and printed.finished
    assert [e.kind for e in printed.events].count("succeeded") == 2
    table = runner.invoke(cli, ["trace", handle.correlation_id])
    assert table.exit_code == 0, table.output
    assert "succeeded (finished)" in table.output and worker.nodename in table.output


def test_an_unknown_or_invalid_correlation_id_is_one_line_and_its_exit_code() -> None:
    unknown = str(uuid.uuid4())
    done = subprocess.run(
        [sys.executable, "-c", "from orchestrator.cli import main; main()", "trace", unknown],
        cwd=REPO, env=worker_env("memory://"), capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"no trace of request {unknown}" in line and done.stdout == ""
    invalid = subprocess.run(
        [sys.executable, "-c", "from orchestrator.cli import main; main()", "trace", "nope"],
        cwd=REPO, env=worker_env("memory://"), capture_output=True, text=True, timeout=60,
        check=False)
    assert invalid.returncode == 2
    assert "is not a correlation id" in invalid.stderr


@pytest.mark.broker
def test_the_record_outlives_the_worker_that_wrote_it(on_broker: BrokerUnderTest,
                                                     worker: WorkerProcess,
                                                     log_dir: Path) -> None:
    """The record is in Redis, not in the worker: read back whole after the worker that
    ran the step stopped."""
    from orchestrator.pipeline import run_pipeline

    own = WorkerProcess(worker_env(on_broker.url), log_dir, queues=["escavador_lento"],
                        concurrency=1, name="trace").start()
    try:
        own.wait_ready()
        handle = run_pipeline("lento", {"seconds": 0.1})
        handle.wait(timeout=TIMEOUT)
        before = finished_timeline(handle.correlation_id)
    finally:
        own.stop()
    assert not own.alive
    trace_record.flush()
    after = timeline(handle.correlation_id)
    assert after == before
    assert after.outcome == "succeeded"
    assert kinds_of(after, "escavador_lento") == ["published", "received", "started",
                                                  "succeeded"]
    assert {e.worker for e in after.events if e.kind != "published"} == {own.nodename}
