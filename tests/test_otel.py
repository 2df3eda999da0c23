"""OpenTelemetry tracing on every broker: one trace per request, through chains, chords,
retries, replays, the plain events and the webhook's HTTP call.

The spans are those of the SDK's in-memory exporter. Both sides run in this process: the
caller (``run_pipeline``, ``dlq.replay``) and a Celery worker (threads pool, started with
``celery.contrib.testing.worker.start_worker``) on the real broker under test, consuming only
the queues of ``tests/traced_steps.py`` (the shared worker never loads them). One more test
runs a real prefork worker configured by ``OTEL_*`` variables alone, exporting over OTLP/HTTP
to a receiver of this test; another checks that without them nothing is set up.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.events.publisher import close_publisher, declare_destinations
from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.observability import otel
from orchestrator.pipeline import PipelineHandle, run_pipeline
from orchestrator.topology import topology
from tests.conftest import configured_app
from tests.support.brokers import BrokerUnderTest
from tests.support.plain_clients import redis_client
from tests.support.waiting import wait_until
from tests.support.workers import REPO, WorkerProcess, worker_env

TRACED_QUEUES = ["escavador_rastro", "escavador_rastro_b", "executador_rastro",
                 "escavador_rastro_falha", "executador_rastro_webhook"]
TIMEOUT = 60
CID = otel.CORRELATION_ATTRIBUTE


# --- the in-process side ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into memory, for this module only (other modules' tests
    run untraced, as without ``OTEL_*``)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    assert otel.configure_tracing(provider)
    yield memory
    otel.disable_tracing()


def purge(queues: list[str]) -> None:
    with configured_app().connection_for_write() as connection:
        topology.declare(connection)
        for name in queues:
            for queue in (name, topology.get(name).dlq):
                channel = connection.channel()
                try:
                    channel.queue_purge(queue)
                finally:
                    channel.close()


@pytest.fixture()
def traced_worker(on_broker: BrokerUnderTest, exporter: InMemorySpanExporter) -> Iterator[Any]:
    """A worker in this process on the traced steps' queues, on the broker under test."""
    from celery.contrib.testing.worker import start_worker

    app = configured_app()
    close_publisher()  # this process's events go to the broker under test, not the last one
    purge(TRACED_QUEUES)
    with app.connection_for_write() as connection:
        declare_destinations(connection)
    queues = app.amqp.queues
    consume_from = queues._consume_from
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                          queues=TRACED_QUEUES, shutdown_timeout=30,
                          loglevel="WARNING") as worker:
            exporter.clear()
            yield worker
    finally:
        queues._consume_from = consume_from
        close_publisher()


def spans_of(exporter: InMemorySpanExporter, correlation_id: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans()
            if (span.attributes or {}).get(CID) == correlation_id]


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return sorted((span for span in spans if span.name == name),
                  key=lambda span: span.start_time or 0)


def wait_for_spans(exporter: InMemorySpanExporter, correlation_id: str,
                   expected: dict[str, int]) -> list[ReadableSpan]:
    """The request's spans once ``expected`` (span name -> how many) have all ended."""
    def complete() -> list[ReadableSpan]:
        spans = spans_of(exporter, correlation_id)
        counts = {name: len(named(spans, name)) for name in expected}
        return spans if all(counts[name] >= n for name, n in expected.items()) else []

    return wait_until(complete, timeout=TIMEOUT, message=f"spans {expected}")


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def one_trace(spans: list[ReadableSpan]) -> int:
    ids = {trace_id(span) for span in spans}
    assert len(ids) == 1, f"{len(ids)} traces: {[span.name for span in spans]}"
    return ids.pop()


def assert_parented(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert parent_id(child) == span_id(parent), f"{child.name} is not a child of {parent.name}"


def root_of(spans: list[ReadableSpan], first_step: str) -> ReadableSpan:
    [root] = named(spans, f"pipeline {first_step}")
    assert root.parent is None
    return root


def traceparent_ids(value: str) -> tuple[int, int]:
    """(trace id, parent span id) of a W3C ``traceparent``."""
    version, trace, parent, _flags = value.split("-")
    assert version == "00"
    return int(trace, 16), int(parent, 16)


# --- chains, chords, retries, replays ----------------------------------------------------------

@pytest.mark.broker
def test_a_chain_is_one_trace_with_a_span_per_step(traced_worker: Any,
                                                  exporter: InMemorySpanExporter) -> None:
    handle = run_pipeline("rastro", {"n": 1}, execute=["rastro"])
    handle.wait(timeout=TIMEOUT)
    spans = wait_for_spans(exporter, handle.correlation_id, {
        "pipeline escavador_rastro": 1, "run/escavador_rastro": 1,
        "run/executador_rastro": 1, "apply_async/executador_rastro": 1})
    one_trace(spans)
    root = root_of(spans, "escavador_rastro")
    [publish_first] = named(spans, "apply_async/escavador_rastro")
    [run_first] = named(spans, "run/escavador_rastro")
    [publish_link] = named(spans, "apply_async/executador_rastro")
    [run_link] = named(spans, "run/executador_rastro")
    assert_parented(publish_first, root)
    assert_parented(run_first, publish_first)
    assert_parented(publish_link, run_first)  # the link is sent inside the first step's run
    assert_parented(run_link, publish_link)
    assert run_first.attributes is not None and run_link.attributes is not None
    assert run_first.attributes["messaging.destination.name"] == "escavador_rastro"
    assert run_first.attributes[otel.ATTEMPT_ATTRIBUTE] == 1
    assert run_link.attributes["messaging.system"] in ("rabbitmq", "redis", "nats")


@pytest.mark.broker
def test_a_chord_is_one_trace(traced_worker: Any, exporter: InMemorySpanExporter) -> None:
    handle = run_pipeline(["rastro", "rastro_b"], {"n": 2}, execute=["rastro"])
    [result] = handle.wait(timeout=TIMEOUT)
    assert result.payload["inputs"] == 2
    spans = wait_for_spans(exporter, handle.correlation_id, {
        "run/escavador_rastro": 1, "run/escavador_rastro_b": 1, "run/executador_rastro": 1})
    one_trace(spans)
    root = root_of(spans, "escavador_rastro")
    [body_run] = named(spans, "run/executador_rastro")
    [body_publish] = named(spans, "apply_async/executador_rastro")
    assert_parented(body_run, body_publish)
    headers = named(spans, "run/escavador_rastro") + named(spans, "run/escavador_rastro_b")
    assert parent_id(body_publish) in {span_id(span) for span in headers}, \
        "the chord body is published inside the last header step's run"
    assert all(span_id(root) != span_id(span) for span in headers)


@pytest.mark.broker
def test_each_attempt_of_a_retried_step_is_a_span_of_the_same_trace(
        traced_worker: Any, exporter: InMemorySpanExporter) -> None:
    handle = run_pipeline("rastro_falha", {"mode": "flaky", "failures": 1})
    handle.wait(timeout=TIMEOUT)
    spans = wait_for_spans(exporter, handle.correlation_id, {"run/escavador_rastro_falha": 2})
    one_trace(spans)
    first, second = named(spans, "run/escavador_rastro_falha")
    assert first.attributes is not None and second.attributes is not None
    assert (first.attributes[otel.ATTEMPT_ATTRIBUTE], second.attributes[otel.ATTEMPT_ATTRIBUTE]) \
        == (1, 2)
    retry_publish = next(span for span in named(spans, "apply_async/escavador_rastro_falha")
                         if parent_id(span) == span_id(first))
    assert_parented(second, retry_publish)


@pytest.mark.broker
def test_a_replayed_dead_letter_rejoins_its_trace(traced_worker: Any, tmp_path: Path,
                                                  exporter: InMemorySpanExporter) -> None:
    marker = tmp_path / "fixed"
    handle = run_pipeline("rastro_falha", {"marker": str(marker)})
    with pytest.raises(Exception, match="not fixed yet"):
        handle.wait(timeout=TIMEOUT)
    task_id = str(handle.result.id)
    wait_until(lambda: any(letter.id == task_id
                           for letter in dlq.list_dead_letters("escavador_rastro_falha")),
               timeout=TIMEOUT, message="the dead letter")
    marker.write_text("ok")
    [moved] = dlq.replay(task_id, queue="escavador_rastro_falha")
    assert moved.headers.get("traceparent"), "the dead letter kept its trace context"
    handle.wait_replayed(timeout=TIMEOUT)
    spans = wait_for_spans(exporter, handle.correlation_id, {
        "run/escavador_rastro_falha": 2, "replay escavador_rastro_falha": 1})
    one_trace(spans)
    failed, replayed = named(spans, "run/escavador_rastro_falha")
    [replay] = named(spans, "replay escavador_rastro_falha")
    assert_parented(replay, next(span for span in named(spans, "apply_async/escavador_rastro_falha")
                                 if parent_id(span) == span_id(failed)))  # the DLQ publish
    assert_parented(replayed, replay)


# --- what leaves the steps: events and HTTP ---------------------------------------------------

@pytest.mark.broker
def test_a_steps_event_carries_its_traceparent(traced_worker: Any, on_broker: BrokerUnderTest,
                                              exporter: InMemorySpanExporter) -> None:
    from tests.test_events import cloudevent_attributes, foreign_core

    wire = foreign_core.open_wire(on_broker.url)
    try:
        handle = run_pipeline("rastro", {"n": 3})
        _, event, headers = wire.next_event(("resultado_coleta",), handle.correlation_id,
                                            TIMEOUT)
    finally:
        wire.close()
    assert event["correlation_id"] == handle.correlation_id
    attributes = cloudevent_attributes(on_broker.name, headers)
    spans = wait_for_spans(exporter, handle.correlation_id, {"run/escavador_rastro": 1})
    [run] = named(spans, "run/escavador_rastro")
    assert traceparent_ids(attributes["traceparent"]) == (trace_id(run), span_id(run))


class RecordingHandler(BaseHTTPRequestHandler):
    received: list[dict[str, str]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append({name.lower(): value for name, value in self.headers.items()})
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture()
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []
    handler = type("Handler", (RecordingHandler,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


@pytest.mark.broker
def test_the_webhook_request_carries_the_pipelines_traceparent(
        traced_worker: Any, exporter: InMemorySpanExporter,
        webhook_receiver: tuple[str, list[dict[str, str]]]) -> None:
    url, received = webhook_receiver
    handle = run_pipeline("rastro", {"n": 4}, execute={"rastro_webhook": {"url": url}})
    [result] = handle.wait(timeout=TIMEOUT)
    assert result.payload["status_code"] == 200
    [request] = [headers for headers in received
                 if headers.get("x-correlation-id") == handle.correlation_id]
    spans = wait_for_spans(exporter, handle.correlation_id, {"run/executador_rastro_webhook": 1})
    [run] = named(spans, "run/executador_rastro_webhook")
    [client] = [span for span in spans if span.name == "POST"]
    assert_parented(client, run)
    assert traceparent_ids(request["traceparent"]) == (trace_id(run), span_id(client))
    assert one_trace(spans) == trace_id(run)


# --- foreign producers ------------------------------------------------------------------------

FOREIGN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FOREIGN_PARENT = "00f067aa0ba902b7"


def publish_plain(broker: BrokerUnderTest, queue: str, body: bytes,
                  trace: dict[str, str]) -> None:
    """A plain envelope from the broker's own client, with ``trace`` as that client's
    headers (AMQP headers, NATS headers, fields of the stream entry)."""
    if broker.name == "amqp":
        from urllib.parse import urlsplit

        import pika

        parts = urlsplit(broker.url)
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            host=parts.hostname, port=parts.port or 5672, virtual_host=parts.path[1:] or "/",
            credentials=pika.PlainCredentials(parts.username or "guest",
                                              parts.password or "guest")))
        connection.channel().basic_publish(exchange="", routing_key=queue, body=body,
                                           properties=pika.BasicProperties(headers=trace))
        connection.close()
    elif broker.name == "redis-streams":
        client = redis_client(broker.url)
        client.xadd(queue, {"payload": body, **trace})
        client.close()
    else:
        import nats

        async def publish() -> None:
            client = await nats.connect(broker.url)
            await client.jetstream().publish(f"orq.q.{queue}", body, headers=trace or None)
            await client.close()

        asyncio.run(publish())


def plain_envelope() -> tuple[str, bytes]:
    correlation_id = str(uuid.uuid4())
    envelope = {"correlation_id": correlation_id, "tipo_evento": "iniciar_coleta",
                "payload": {"n": 5},
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds")
                .replace("+00:00", "Z")}
    return correlation_id, json.dumps(envelope).encode()


@pytest.mark.broker
def test_a_foreign_producers_traceparent_is_honoured_and_its_absence_starts_a_trace(
        traced_worker: Any, on_broker: BrokerUnderTest,
        exporter: InMemorySpanExporter) -> None:
    joined, body = plain_envelope()
    publish_plain(on_broker, "escavador_rastro", body,
                  {"traceparent": f"00-{FOREIGN_TRACE}-{FOREIGN_PARENT}-01"})
    alone, bare = plain_envelope()
    publish_plain(on_broker, "escavador_rastro", bare, {})
    [run] = named(wait_for_spans(exporter, joined, {"run/escavador_rastro": 1}),
                  "run/escavador_rastro")
    assert (trace_id(run), parent_id(run)) == (int(FOREIGN_TRACE, 16), int(FOREIGN_PARENT, 16))
    [own] = named(wait_for_spans(exporter, alone, {"run/escavador_rastro": 1}),
                  "run/escavador_rastro")
    assert own.parent is None, "no context sent: a trace of its own"
    assert trace_id(own) != trace_id(run)


# --- configured by the environment alone ------------------------------------------------------

class OtlpReceiver(BaseHTTPRequestHandler):
    """``POST /v1/traces`` (OTLP/HTTP, protobuf): keeps every span it is sent."""

    spans: list[dict[str, Any]]

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        for resource_spans in request.resource_spans:
            resource = {item.key: item.value.string_value
                        for item in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(),
                        "service": resource.get("service.name"),
                        "attributes": {item.key: item.value.string_value
                                       for item in span.attributes}})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture()
def otlp_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    spans: list[dict[str, Any]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Receiver", (OtlpReceiver,),
                                                       {"spans": spans}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", spans
    server.shutdown()
    server.server_close()


@pytest.mark.broker
def test_a_prefork_worker_traces_from_the_otel_variables_alone(
        on_broker: BrokerUnderTest, exporter: InMemorySpanExporter, log_dir: Path,
        otlp_receiver: tuple[str, list[dict[str, Any]]]) -> None:
    endpoint, received = otlp_receiver
    purge(TRACED_QUEUES)
    env = worker_env(on_broker.url, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                     "OTEL_BSP_SCHEDULE_DELAY": "100"})
    env.pop("OTEL_SERVICE_NAME", None)
    process = WorkerProcess(env, log_dir, queues=TRACED_QUEUES, name="otel").start()
    try:
        process.wait_ready()
        exporter.clear()
        handle: PipelineHandle = run_pipeline("rastro", {"n": 6}, execute=["rastro"])
        handle.wait(timeout=TIMEOUT)
        [root] = named(spans_of(exporter, handle.correlation_id), "pipeline escavador_rastro")

        def runs() -> list[dict[str, Any]]:
            mine = [span for span in received
                    if span["attributes"].get(CID) == handle.correlation_id
                    and span["name"].startswith("run/")]
            return mine if len(mine) >= 2 else []

        spans = wait_until(runs, timeout=TIMEOUT, message="the worker's spans over OTLP")
    finally:
        process.stop()
    assert {span["name"] for span in spans} == {"run/escavador_rastro", "run/executador_rastro"}
    assert {span["trace_id"] for span in spans} == {f"{trace_id(root):032x}"}
    assert {span["service"] for span in spans} == {otel.DEFAULT_SERVICE_NAME}


# --- off ----------------------------------------------------------------------------------------

OFF_PROBE = """
import sys, threading
from celery import signals
import orchestrator.celery_app
from orchestrator.events import cloudevents
from orchestrator.observability import otel
from orchestrator.pipeline import run_pipeline
assert not otel.configure_tracing()
with otel.pipeline_span("c", ("escavador_x",)):
    pass
event = cloudevents.result_event("escavador_x", "k", {"tipo_evento": "resultado_coleta",
                                                      "correlation_id": "c"})
receivers = [repr(r) for r in signals.before_task_publish.receivers]
from opentelemetry import trace  # redis-py imports the API when it is installed; not set up
print(otel.active(),
      sorted(m for m in sys.modules if m.startswith(("opentelemetry.instrumentation",
                                                      "opentelemetry.sdk.trace"))),
      "traceparent" in event.attributes, any("opentelemetry" in r for r in receivers),
      type(trace.get_tracer_provider()).__name__, threading.active_count())
"""


@pytest.mark.parametrize("environ", [{}, {"OTEL_TRACES_EXPORTER": "none",
                                          "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
                                     {"OTEL_SDK_DISABLED": "true",
                                      "OTEL_TRACES_EXPORTER": "console"}],
                         ids=["unset", "exporter-none", "sdk-disabled"])
def test_without_otel_variables_nothing_is_set_up(environ: dict[str, str]) -> None:
    import os

    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update(environ)
    done = subprocess.run([sys.executable, "-c", OFF_PROBE], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "[]", "False", "False", "ProxyTracerProvider", "1"]


@pytest.mark.parametrize(("environ", "names"), [
    ({}, []),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
    ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ({"OTEL_SERVICE_NAME": "x"}, []),
])
def test_which_variables_turn_tracing_on(environ: dict[str, str], names: list[str]) -> None:
    assert otel.exporter_names(environ) == names
    assert otel.tracing_requested(environ) is bool(names)
