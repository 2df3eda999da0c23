"""OpenTelemetry tracing: one trace per request, a span per step attempt, W3C context in messages.

Off unless the standard ``OTEL_*`` variables ask for traces (:func:`tracing_requested`):
then nothing of OpenTelemetry is imported, no provider, processor or thread exists, and the
hooks the project calls on its paths (:func:`active`, :func:`pipeline_span`,
:func:`trace_context`) are one check of a module flag.

On, :func:`configure_tracing` builds the SDK's ``TracerProvider`` from the environment
(``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_*`` are read by the SDK and the exporter themselves; only the choice of
exporter, ``OTEL_TRACES_EXPORTER``, is made here, through the exporters' own entry points, as
the SDK's auto-configuration does) and turns on:

- ``opentelemetry-instrumentation-celery``: a PRODUCER span around every task publish (it
  injects ``traceparent`` into the message headers in ``before_task_publish``) and a CONSUMER
  span around every task run, parented by the message's ``traceparent``. A chain link, a chord
  body (published by the result backend's counter inside the last header task's run), a retry
  (``self.retry`` publishes from inside the running attempt) and a dead letter are all
  published inside the running step's span, so they are its children in the same trace;
- ``opentelemetry-instrumentation-httpx``: a CLIENT span and ``traceparent`` on every HTTP
  request a step makes (the webhook executador's POST among them).

What this module adds where the instrumentation stops: the request's correlation id as the
``orchestrator.correlation_id`` attribute of every span (and ``messaging.system`` /
``messaging.destination.name`` on publish and run spans), a root span per pipeline
(:func:`pipeline_span`), the step's context captured into its plain events
(:func:`trace_context`) and a replay span (:func:`replay_span`) that re-joins the dead
letter's trace.

Per process: a prefork pool child configures itself in ``worker_process_init`` (the
``BatchSpanProcessor``'s thread must be born in the process that uses it, as the
instrumentation's documentation says); a worker on another pool (threads, solo) configures in
``celeryd_after_setup``; a process that starts pipelines or replays dead letters configures on
its first call. A pool process flushes its spans in ``worker_process_shutdown``: billiard's
children leave with ``os._exit``, so the SDK's ``atexit`` hook never runs there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from celery import signals

from orchestrator.correlation import HEADER, correlation_id_from_request, current_correlation_id
from orchestrator.headers import TRACE_CONTEXT, carried_trace_context

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger("orchestrator.otel")

TRACER_NAME = "orchestrator"
DEFAULT_SERVICE_NAME = "orchestrator"
"""``service.name`` when neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` says."""

CORRELATION_ATTRIBUTE = "orchestrator.correlation_id"
"""The request's correlation id on every span (``messaging.conversation_id`` is taken: the
celery instrumentation puts Celery's own ``correlation_id``, the task id, there)."""
STEPS_ATTRIBUTE = "orchestrator.steps"
ATTEMPT_ATTRIBUTE = "orchestrator.attempt"

MESSAGING_SYSTEMS = {"amqp": "rabbitmq", "amqps": "rabbitmq", "pyamqp": "rabbitmq",
                     "redis-streams": "redis", "rediss-streams": "redis", "redis": "redis",
                     "rediss": "redis", "nats": "nats", "tls": "nats", "memory": "memory"}
"""``messaging.system`` by broker URL scheme (RabbitMQ's is the semantic conventions' value)."""

OTLP_ENTRY_POINTS = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http",
                     "http/json": "otlp_proto_http"}
"""``OTEL_TRACES_EXPORTER=otlp`` as the exporter package's entry point, by
``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` (the specification's default: http/protobuf)."""

_active = False
_decided = False
_provider: Any = None


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces.

    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` says no; any other
    ``OTEL_TRACES_EXPORTER`` says yes; without it, an OTLP endpoint
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) says yes, to OTLP.
    Nothing set: no.
    """
    return bool(exporter_names(environ))


def exporter_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The trace exporters the environment asks for (``[]``: tracing off)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    chosen = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if chosen:
        names = [name.strip().lower() for name in chosen.split(",") if name.strip()]
        return [] if "none" in names else names
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return ["otlp"]
    return []


def active() -> bool:
    """Whether this process traces (set up by :func:`configure_tracing`)."""
    return _active


def configure_tracing(provider: TracerProvider | None = None) -> bool:
    """Turn tracing on in this process, once; True when it is on.

    Without ``provider``, only when :func:`tracing_requested`, with a provider built from the
    environment. With one (an application that owns its SDK set-up, the tests' in-memory
    exporter), that one, whatever the environment says. The decision "off" is taken once per
    process and costs nothing afterwards.
    """
    global _active, _decided, _provider
    if _active:
        return True
    if provider is None:
        if _decided:
            return False
        _decided = True
        if not tracing_requested():
            return False
        try:
            provider = provider_from_environment()
        except Exception as exc:  # a missing exporter package, a bad setting: say it, run on
            logger.error("OpenTelemetry tracing is not set up: %s: %s", type(exc).__name__, exc)
            return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    provider.add_span_processor(_correlation_processor())
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    # After the instrumentation's own handlers: its span is the current one when these run.
    signals.before_task_publish.connect(_annotate_publish, weak=False)
    signals.task_prerun.connect(_annotate_run, weak=False)
    _provider = provider
    _active = _decided = True
    return True


def disable_tracing() -> None:
    """Undo :func:`configure_tracing` in this process (its spans flushed first): the
    instrumentations removed, this module's hooks back to no-ops. The global provider stays
    (the API sets it once per process) but nothing of this project uses it any more."""
    global _active, _provider
    if not _active:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    flush()
    signals.before_task_publish.disconnect(_annotate_publish)
    signals.task_prerun.disconnect(_annotate_run)
    CeleryInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().uninstrument()
    _active, _provider = False, None


def provider_from_environment() -> TracerProvider:
    """The SDK provider the ``OTEL_*`` variables describe, with a batch processor per exporter."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    for name in exporter_names():
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return provider


def _exporter(name: str) -> SpanExporter:
    """The exporter an ``OTEL_TRACES_EXPORTER`` name stands for, from the
    ``opentelemetry_traces_exporter`` entry points its package declares."""
    from importlib.metadata import entry_points

    if name == "otlp":
        protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        name = OTLP_ENTRY_POINTS.get(protocol.strip().lower(), "otlp_proto_http")
    found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
    if not found:
        raise LookupError(f"no trace exporter {name!r} is installed (OTEL_TRACES_EXPORTER)")
    exporter: SpanExporter = found[0].load()()
    return exporter


def flush(**_: Any) -> None:
    """Export what this process's provider still holds (pool-process and worker shutdown)."""
    if _active and hasattr(_provider, "force_flush"):
        _provider.force_flush(5000)


def _correlation_processor() -> Any:
    """A span processor stamping the correlation id bound in this context on each new span
    (the httpx client span, this project's own spans, anything a step opens)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class CorrelationIdProcessor(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            correlation_id = current_correlation_id()
            if correlation_id:
                span.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)

    return CorrelationIdProcessor()


def _messaging_system(app: Any) -> str:
    from orchestrator.app_broker import broker_scheme

    scheme = broker_scheme(getattr(getattr(app, "conf", None), "broker_url", None))
    return MESSAGING_SYSTEMS.get(scheme, scheme or "unknown")


def _annotate_publish(sender: Any = None, headers: dict[str, Any] | None = None,
                      routing_key: str | None = None, **_: Any) -> None:
    """The instrumentation's publish span gets the message's correlation id and destination
    (on the caller's side no correlation id is bound: the header is the one source)."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording() or not str(getattr(span, "name", "")).startswith("apply_async/"):
        return
    correlation_id = (headers or {}).get(HEADER)
    if correlation_id:
        span.set_attribute(CORRELATION_ATTRIBUTE, str(correlation_id))
    from celery import current_app

    span.set_attribute("messaging.system", _messaging_system(current_app))
    span.set_attribute("messaging.operation.type", "send")
    if routing_key:
        span.set_attribute("messaging.destination.name", str(routing_key))


def _annotate_run(task: Any = None, **_: Any) -> None:
    """The instrumentation's run span (one per attempt) gets the correlation id, the attempt
    number and the queue it came from."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if task is None or not span.is_recording():
        return
    request = task.request
    correlation_id = correlation_id_from_request(request)
    if correlation_id:
        span.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
    span.set_attribute(ATTEMPT_ATTRIBUTE, int(request.retries or 0) + 1)
    span.set_attribute("messaging.system", _messaging_system(task.app))
    span.set_attribute("messaging.operation.type", "process")
    queue = (request.delivery_info or {}).get("routing_key")
    if queue:
        span.set_attribute("messaging.destination.name", str(queue))


def pipeline_span(correlation_id: str, steps: tuple[str, ...]) -> Any:
    """The root span of one request, current while its first messages are published: every
    step of it, retries and replays included, is in this span's trace. A child of the
    caller's current span when there is one. A no-op context when tracing is off."""
    if not configure_tracing():
        return nullcontext()
    from opentelemetry import trace

    return _tracer().start_as_current_span(
        f"pipeline {steps[0] if steps else ''}".strip(), kind=trace.SpanKind.PRODUCER,
        attributes={CORRELATION_ATTRIBUTE: correlation_id, STEPS_ATTRIBUTE: list(steps)})


def _tracer() -> Any:
    """This project's tracer, from the provider :func:`configure_tracing` installed (the
    global one may be another's, set first: the API lets it be set once)."""
    return _provider.get_tracer(TRACER_NAME)


def trace_context() -> dict[str, str]:
    """The current span's W3C ``traceparent`` (and ``tracestate``), or ``{}``: what an event
    carries, taken when the event is made (it leaves later, from another thread)."""
    if not _active:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


@contextmanager
def replay_span(headers: dict[str, Any], queue: str, correlation_id: str | None,
                ) -> Iterator[None]:
    """Around a dead letter's republication: a span in the dead letter's own trace (its
    ``traceparent`` header, the failed attempt's), whose context replaces that header, so the
    replayed attempt runs as its child. Headers are left as they are when tracing is off (the
    replay then still carries the original ``traceparent``)."""
    if not configure_tracing():
        yield
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    carried = carried_trace_context(headers)
    parent = propagator.extract(carried) if carried else None
    attributes = {"messaging.destination.name": queue, "messaging.operation.type": "send"}
    if correlation_id:
        attributes[CORRELATION_ATTRIBUTE] = correlation_id
    with _tracer().start_as_current_span(
            f"replay {queue}", context=parent, kind=trace.SpanKind.PRODUCER,
            attributes=attributes):
        for name in TRACE_CONTEXT:
            headers.pop(name, None)
        propagator.inject(headers)
        yield


def _configure_pool_process(**_: Any) -> None:
    configure_tracing()


def _configure_worker(instance: Any = None, **_: Any) -> None:
    """A worker whose pool runs tasks in its own process (threads, solo, gevent) configures
    now; a prefork worker leaves it to each child (``worker_process_init``)."""
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool as PreforkPool

    pool = get_implementation(getattr(instance, "pool_cls", None) or "prefork")
    if not (isinstance(pool, type) and issubclass(pool, PreforkPool)):
        configure_tracing()


signals.worker_process_init.connect(_configure_pool_process, weak=False)
signals.celeryd_after_setup.connect(_configure_worker, weak=False)
signals.worker_process_shutdown.connect(flush, weak=False)
signals.worker_shutdown.connect(flush, weak=False)
