"""Starting many pipelines in one call, with every message confirmed and the confirms overlapped.

:func:`run_pipelines` keeps each pipeline's guarantees (``run_pipeline``'s validation, size
check and correlation id) and the broker's publisher confirms, but does not
wait for each confirm before the next publish: every request is validated first (one bad
request sends nothing), every message is published on one channel, and then the confirms are
collected (:mod:`orchestrator.transports.confirm_batch`). The call returns when every message
is settled, and says exactly which pipelines were not confirmed and why.

Celery publishes a canvas through the app's producer pool, and a chain does not pass a given
producer on to its first task; so the thread running a batch is handed the batch's producer
by the pool itself (:class:`_BatchAwarePool`), while other threads keep the usual one.

Not Kombu's own ``Producer.batch()`` (5.7): it buffers on stock Redis only, publishes at
once elsewhere (RabbitMQ included), and its flush succeeds or raises as a whole, where a
caller here must learn which pipelines the broker did not take.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.messaging import Producer

from orchestrator.observability.otel import pipeline_span
from orchestrator.pipeline import (
    ExecuteSpec,
    PipelineError,
    PipelineHandle,
    build_pipeline,
)
from orchestrator.transports.confirm_batch import ConfirmBatch, NotConfirmed, confirm_batch

DEFAULT_CONFIRM_TIMEOUT = 30.0


@dataclass(frozen=True)
class PipelineRequest:
    """One pipeline to start: what :func:`~orchestrator.pipeline.run_pipeline` takes."""

    collect: str | list[str]
    payload: Mapping[str, Any]
    execute: ExecuteSpec = None
    correlation_id: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> PipelineRequest:
        """From ``{"collect": ..., "payload": {...}, "execute": ..., "correlation_id": ...}``
        (a line of ``orchestrator run --from``)."""
        if not isinstance(data, dict):
            raise PipelineError("expected a JSON object with collect and payload")
        unknown = set(data) - {"collect", "payload", "execute", "correlation_id"}
        if unknown:
            raise PipelineError(f"unknown field(s) {', '.join(sorted(unknown))}")
        collect = data.get("collect")
        if isinstance(collect, str):
            collect = [part.strip() for part in collect.split(",") if part.strip()]
        if not isinstance(collect, list) or not collect or \
                not all(isinstance(name, str) for name in collect):
            raise PipelineError("collect: an escavador name or a list of them")
        payload = data.get("payload", {})
        if not isinstance(payload, dict):
            raise PipelineError("payload: must be a JSON object")
        execute = data.get("execute")
        if isinstance(execute, str):
            execute = [part.strip() for part in execute.split(",") if part.strip()]
        if execute is not None and not isinstance(execute, list | dict):
            raise PipelineError("execute: a list of executador names, or name -> options")
        correlation_id = data.get("correlation_id")
        if correlation_id is not None and not isinstance(correlation_id, str):
            raise PipelineError("correlation_id: must be a string (a UUID)")
        return cls(collect, payload, execute, correlation_id)


@dataclass(frozen=True)
class BatchItem:
    """One request's outcome: its handle when every message of it was confirmed."""

    index: int
    correlation_id: str
    steps: tuple[str, ...]
    handle: PipelineHandle | None
    error: str | None

    @property
    def confirmed(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class BatchOutcome:
    """Every request's outcome, in the order given, and how many messages were published."""

    items: tuple[BatchItem, ...]
    messages: int

    @property
    def handles(self) -> list[PipelineHandle]:
        return [item.handle for item in self.items if item.handle is not None]

    @property
    def failed(self) -> list[BatchItem]:
        return [item for item in self.items if not item.confirmed]


class BatchProducer(Producer):
    """Publishes without waiting, and remembers which request each message belongs to.

    Declares each queue once per batch: Celery asks for its queue to be declared with every
    message, and Kombu, although it declares an entity once per connection, binds a copy of
    it to the channel on every publish to find that out."""

    def __init__(self, channel: Any, confirms: ConfirmBatch) -> None:
        super().__init__(channel)  # type: ignore[no-untyped-call]
        self.confirms = confirms
        self.owner = -1
        self.owners: list[int] = []
        self._declared: set[str] = set()

    def publish(self, body: Any, routing_key: Any = None,  # type: ignore[override]
                **kwargs: Any) -> Any:
        kwargs["retry"] = False  # a failed publish is reported, not retried on a new channel
        declare = kwargs.get("declare") or ()
        kwargs["declare"] = [entity for entity in declare
                             if getattr(entity, "name", None) not in self._declared]
        result = super().publish(body, routing_key, **kwargs)  # type: ignore[no-untyped-call]
        self._declared.update(name for entity in declare
                              if isinstance(name := getattr(entity, "name", None), str))
        self.confirms.published()
        self.owners.append(self.owner)
        return result

    def release(self) -> None:
        """Celery releases a pooled producer after each publish: this one stays."""


_batch_producers = threading.local()


class _BatchAwarePool:
    """The app's producer pool; the thread running a batch gets the batch's producer."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def acquire(self, *args: Any, **kwargs: Any) -> Any:
        producer = getattr(_batch_producers, "current", None)
        if producer is not None:
            return producer
        return self._pool.acquire(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def _install_pool(app: Celery) -> None:
    pool = app.amqp.producer_pool
    if not isinstance(pool, _BatchAwarePool):
        app.amqp._producer_pool = _BatchAwarePool(pool)


def run_pipelines(requests: Iterable[PipelineRequest], *, app: Celery | None = None,
                  timeout: float = DEFAULT_CONFIRM_TIMEOUT) -> BatchOutcome:
    """Start every pipeline of ``requests``; return when each message is confirmed or
    ``timeout`` seconds passed waiting for the confirms.

    Raises :class:`~orchestrator.pipeline.PipelineError` (naming the request, counted from 1)
    before anything is sent when any request is invalid.
    """
    if app is None:
        from orchestrator.celery_app import app as default_app

        app = default_app
    built = []
    for number, request in enumerate(requests, start=1):
        try:
            built.append(build_pipeline(app, request.collect, request.payload,
                                        request.execute, request.correlation_id))
        except PipelineError as exc:
            raise PipelineError(f"pipeline {number}: {exc}") from None
    _install_pool(app)
    options = {**app.conf.broker_transport_options, "confirm_publish": False}
    results: dict[int, Any] = {}
    errors: dict[int, str] = {}
    with app.connection_for_write(transport_options=options) as connection:
        connection.ensure_connection(max_retries=3)
        channel = connection.channel()
        producer = BatchProducer(channel, confirm_batch(connection, channel))
        _batch_producers.current = producer
        try:
            for index, (envelope, canvas, steps) in enumerate(built):
                producer.owner = index
                try:
                    with pipeline_span(str(envelope.correlation_id), steps):
                        results[index] = canvas.apply_async()
                except Exception as exc:  # e.g. the connection broke: this one was not sent
                    errors[index] = f"not sent: {type(exc).__name__}: {exc}"
        finally:
            _batch_producers.current = None
        outcomes = producer.confirms.settle(timeout)
        for number, owner in enumerate(producer.owners):
            outcome = outcomes[number] if number < len(outcomes) else NotConfirmed(
                "the broker's answer for it is missing")
            if outcome is not None and owner not in errors:
                errors[owner] = f"not confirmed: {outcome}"
    items = []
    for index, (envelope, _, steps) in enumerate(built):
        correlation_id = str(envelope.correlation_id)
        error = errors.get(index)
        handle = None if error else PipelineHandle(correlation_id, results[index], steps)
        items.append(BatchItem(index, correlation_id, steps, handle, error))
    return BatchOutcome(tuple(items), len(producer.owners))
