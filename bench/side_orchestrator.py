"""The orchestrator side: real envelopes through the real path, to the bench steps.

Importing this module imports the orchestrator, whose app is configured from the
environment at import: :mod:`bench.cli` sets ``ORCHESTRATOR_*`` before it gets here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from celery.canvas import Signature

from bench.config import SCENARIOS, WITHOUT_FAILOVER, base_env, orchestrator_env
from bench.side import FANOUT_WIDTH, CanvasFailed
from bench.workers import WorkerSpec
from orchestrator.app_broker import point_app_at
from orchestrator.celery_app import app
from orchestrator.correlation import HEADER
from orchestrator.envelope import Envelope, EventType
from orchestrator.events import cloudevents
from orchestrator.events.publisher import EventPublisher
from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.pipeline import PipelineHandle, build_pipeline, forget_pending, run_pipeline
from orchestrator.pipeline_batch import PipelineRequest, run_pipelines
from orchestrator.settings import get_settings
from orchestrator.topology import queue_name, topology
from orchestrator.trace import record as trace_record

FONTE = "bench"
PLANNER = "bench_planejar"
EXECUTOR = "bench"
RECORDER = "bench_registrar"


def _wait(handle: PipelineHandle, timeout: float) -> list[Envelope]:
    try:
        return handle.wait(timeout=timeout)
    except Exception:
        forget_pending(handle.result)
        raise


class OrchestratorSide:
    """``run_pipeline`` and hand-built 4-step chains on the orchestrator's app.

    ``events=False`` runs its worker with the plain events off (``--events-cost``): the
    publisher side is the same, so the difference is what publishing them costs a step.
    ``trace=False`` does the same with the request trace record (``--trace-cost``), and
    keeps this process's publications out of it while it publishes.
    """

    def __init__(self, redis_url: str, events: bool = True, trace: bool = True) -> None:
        self.name = ("orchestrator" if events and trace else
                     "orchestrator-no-events" if trace else "orchestrator-no-trace")
        self.scenarios = frozenset(SCENARIOS) if events and trace else WITHOUT_FAILOVER
        self._events = events
        self._trace = trace
        self._redis_url = redis_url
        self._app = app
        self._broker_url = str(app.conf.broker_url)

    def use_broker(self, url: str) -> None:
        point_app_at(self._app, url)
        self._broker_url = url

    def worker_spec(self) -> WorkerSpec:
        env = base_env()
        env.update(orchestrator_env(self._broker_url, self._redis_url))
        env["ORCHESTRATOR_EVENTS"] = "true" if self._events else "false"
        env["ORCHESTRATOR_TRACE_ENABLED"] = "true" if self._trace else "false"
        return WorkerSpec(app="orchestrator", queues=tuple(topology.names()), env=env,
                          label=self.name)

    def reset_queues(self) -> None:
        """Declare the bench steps' topology (work queues, DLX, DLQs), then empty it all."""
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=3)
            topology.declare(connection)
            with connection.channel() as channel:
                for spec in topology:
                    spec.work_queue().bind(channel).purge()
        dlq.purge(app=self._app)

    def publishing(self) -> AbstractContextManager[None]:
        return nullcontext() if self._trace else _untraced()

    def publish(self, payload: dict[str, Any]) -> None:
        run_pipeline(FONTE, payload, app=self._app)

    def _follow_up(self, name: str, headers: dict[str, str]) -> Signature:
        task = self._app.tasks[queue_name("executador", name)]
        signature: Signature = task.signature((), {}, headers=dict(headers))
        return signature

    def run_chain(self, timeout: float) -> None:
        """iniciar_coleta -> resultado_coleta -> iniciar_execucao -> resultado_execucao.

        ``build_pipeline`` makes (and validates) the first two links; the last two are
        appended with the same correlation header, as the pipeline module does.
        """
        envelope, canvas, steps = build_pipeline(self._app, FONTE, {}, execute=[PLANNER])
        headers = {HEADER: str(envelope.correlation_id)}
        tail = [self._follow_up(EXECUTOR, headers), self._follow_up(RECORDER, headers)]
        full = canvas | tail[0] | tail[1]
        handle = PipelineHandle(str(envelope.correlation_id), full.apply_async(),
                                (*steps, *(str(s.task) for s in tail)))
        final = _wait(handle, timeout)
        if len(final) != 1 or final[0].tipo_evento is not EventType.RESULTADO_EXECUCAO:
            raise CanvasFailed(f"orchestrator chain ended with {final!r}")

    def run_fanout(self, timeout: float) -> None:
        handle = run_pipeline([FONTE] * FANOUT_WIDTH, {}, execute=[EXECUTOR], app=self._app)
        final = _wait(handle, timeout)
        if len(final) != 1 or final[0].payload != {"inputs": FANOUT_WIDTH}:
            raise CanvasFailed(f"orchestrator chord ended with {final!r}")

    def event_publish_seconds(self, count: int) -> float:
        """CPU time of one result event's publication, as a worker's step makes it (the real
        publisher, a fresh connection to the current broker), measured here: a few per cent
        of a drain rate is below the drain scenario's noise, this is not. Process time, so
        the threads that send for the caller (the Redis writer, the NATS loop) count too,
        up to the close that flushes them; the broker's own work is not in it."""
        events = EventPublisher(self._app, get_settings())
        reply = Envelope.new(EventType.RESULTADO_COLETA, {"items": [{"id": "bench"}]}).to_dict()
        queue = queue_name("escavador", FONTE)
        try:
            events.publish(cloudevents.result_event(queue, str(uuid.uuid4()), reply))  # connects
            start = time.process_time()
            for number in range(count):
                events.publish(cloudevents.result_event(queue, str(number), reply))
        finally:
            events.close()
        return (time.process_time() - start) / count

    def dead_lettered(self) -> int:
        return sum(dlq.counts(app=self._app).values())

    def close(self) -> None:
        self._app.close()


BULK_SIZE = 250
"""Pipelines per ``run_pipelines`` call on the bulk side: the publish scenario's turn size, so
every batch is sent and confirmed inside a timed turn."""


class BulkOrchestratorSide(OrchestratorSide):
    """The same pipelines started :data:`BULK_SIZE` at a time with ``run_pipelines`` (the
    publish scenario only): validated and confirmed like ``run_pipeline``'s, the confirms
    collected once per batch."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(redis_url)
        self.name = "orchestrator-bulk"
        self.scenarios = frozenset({"publish"})
        self._pending: list[PipelineRequest] = []

    def publish(self, payload: dict[str, Any]) -> None:
        self._pending.append(PipelineRequest(FONTE, payload))
        if len(self._pending) >= BULK_SIZE:
            self._flush()

    def publishing(self) -> AbstractContextManager[None]:
        return _flushing(self)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            outcome = run_pipelines(pending, app=self._app)
            if outcome.failed:
                raise RuntimeError(f"{len(outcome.failed)} of {len(pending)} pipelines were "
                                   f"not confirmed: {outcome.failed[0].error}")


@contextmanager
def _untraced() -> Iterator[None]:
    """This process's publications left out of the trace record meanwhile."""
    recorder = trace_record.recorder()
    before, recorder.enabled = recorder.enabled, False
    try:
        yield
    finally:
        recorder.enabled = before


@contextmanager
def _flushing(side: BulkOrchestratorSide) -> Iterator[None]:
    try:
        yield
    finally:
        side._flush()
