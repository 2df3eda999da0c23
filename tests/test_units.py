"""Unit tests without a broker: retry policy, error classification, topology, settings,
dead-letter descriptions and pipeline canvases (built, never sent)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from celery import chain, chord, group
from celery.canvas import Signature, _chain
from celery.exceptions import SoftTimeLimitExceeded
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ValidationError

from orchestrator.celery_app import app
from orchestrator.correlation import HEADER
from orchestrator.envelope import EnvelopeError
from orchestrator.failures import dead_letter
from orchestrator.failures.errors import FinalError, RetryableError, is_retryable
from orchestrator.failures.retry import RetryPolicy
from orchestrator.pipeline import (
    PipelineError,
    _normalise_execute,
    args_description,
    build_pipeline,
    check_size,
    kwargs_description,
)
from orchestrator.settings import Settings, get_settings, redact_url
from orchestrator.steps import route_step
from orchestrator.topology import (
    WORK_EXCHANGE,
    QueueSpec,
    Topology,
    dlq_name,
    dlx_name,
    is_dead_letter_queue,
    original_queue,
    queue_name,
    routes_through_exchange,
    topology,
)

CID = "0b7f7a2e-3c1d-4c53-9b8e-2f1f3b7f9a10"

# --- retry policy ---------------------------------------------------------------------------


def test_delay_without_jitter_doubles_and_caps() -> None:
    policy = RetryPolicy(max_retries=10, backoff=2.0, backoff_max=30.0, jitter=False)
    assert [policy.delay(n) for n in range(6)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_delay_never_below_one_second() -> None:
    assert RetryPolicy(backoff=0.1, jitter=False).delay(0) == 1.0
    assert RetryPolicy(backoff=0.0, jitter=False).delay(3) == 1.0
    assert RetryPolicy(backoff=2.0, backoff_max=0.5, jitter=False).delay(4) == 1.0


def test_delay_treats_negative_retries_as_the_first() -> None:
    policy = RetryPolicy(backoff=3.0, jitter=False)
    assert policy.delay(-5) == policy.delay(0) == 3.0


@settings(max_examples=200, deadline=None)
@given(
    backoff=st.floats(min_value=0.0, max_value=1000.0),
    backoff_max=st.floats(min_value=0.0, max_value=10_000.0),
    retries_done=st.integers(min_value=-3, max_value=5000),
    jitter=st.booleans(),
)
def test_delay_is_always_within_one_second_and_the_cap(
    backoff: float, backoff_max: float, retries_done: int, jitter: bool
) -> None:
    policy = RetryPolicy(backoff=backoff, backoff_max=backoff_max, jitter=jitter)
    delay = policy.delay(retries_done)
    cap = min(backoff_max, backoff * 2 ** min(max(retries_done, 0), 1000))
    assert isinstance(delay, float)
    assert 1.0 <= delay <= max(1.0, cap)
    if not jitter:
        assert delay == max(1.0, cap)


def test_delay_with_jitter_spreads_within_bounds() -> None:
    policy = RetryPolicy(backoff=2.0, backoff_max=20.0, jitter=True)
    delays = [policy.delay(3) for _ in range(500)]
    assert all(1.0 <= d <= 16.0 for d in delays)
    assert len(set(delays)) > 10  # actually random, not lock step


def test_delay_for_many_retries_is_the_cap() -> None:
    policy = RetryPolicy(max_retries=10_000, backoff=2.0, backoff_max=300.0, jitter=False)
    assert policy.delay(2000) == 300.0
    assert 1.0 <= RetryPolicy(backoff_max=300.0, jitter=True).delay(10_000) <= 300.0


def test_retry_policy_from_settings() -> None:
    config = Settings(max_retries=7, retry_backoff=0.5, retry_backoff_max=9.0,
                      retry_jitter=False)
    assert RetryPolicy.from_settings(config) == RetryPolicy(
        max_retries=7, backoff=0.5, backoff_max=9.0, jitter=False
    )


# --- error classification -------------------------------------------------------------------


def http_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://example.invalid/feed")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_http_5xx_and_429_are_retryable(status: int) -> None:
    assert is_retryable(http_error(status)) is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_http_4xx_are_final(status: int) -> None:
    assert is_retryable(http_error(status)) is False


def test_raise_for_status_errors_are_classified_the_same() -> None:
    request = httpx.Request("GET", "https://example.invalid/")
    for status, expected in ((503, True), (404, False)):
        with pytest.raises(httpx.HTTPStatusError) as info:
            httpx.Response(status, request=request).raise_for_status()
        assert is_retryable(info.value) is expected


class CustomError(Exception):
    pass


def _validation_error() -> ValidationError:
    class Model(BaseModel):
        x: int

    try:
        Model.model_validate({"x": "nope"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a ValidationError")


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("peer closed"),
        TimeoutError("slow"),
        ConnectionError("gone"),
        ConnectionRefusedError("refused"),
        ConnectionResetError("reset"),
        OperationalError("broker down"),
        RetryableError("try again"),
        CustomError("unforeseen"),
        RuntimeError("unforeseen"),
        SoftTimeLimitExceeded(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_retryable_errors(exc: BaseException) -> None:
    assert is_retryable(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        FinalError("no"),
        EnvelopeError("invalid envelope: payload: bad"),
        ValueError("bad value"),
        TypeError("bad type"),
        KeyError("missing"),
        _validation_error(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_final_errors(exc: BaseException) -> None:
    assert is_retryable(exc) is False


def test_retryable_error_wins_even_when_also_a_value_error() -> None:
    class Both(RetryableError, ValueError):
        pass

    assert is_retryable(Both("retry me")) is True


# --- topology -------------------------------------------------------------------------------


def test_queue_name() -> None:
    assert queue_name("escavador", "youtube") == "escavador_youtube"
    assert queue_name("executador", "web-hook_2") == "executador_web-hook_2"


@pytest.mark.parametrize(
    "name",
    ["YouTube", "you.tube", "you tube", " youtube", "", "_youtube", "-x", "youtube\n",
     "você", "a/b", "a*", "a#b"],
)
def test_queue_name_refuses_names_a_broker_would_mangle(name: str) -> None:
    with pytest.raises(ValueError, match="lower-case"):
        queue_name("escavador", name)


def test_dead_letter_names() -> None:
    assert dlq_name("escavador_youtube") == "escavador_youtube.dlq"
    assert dlx_name("escavador_youtube") == "escavador_youtube.dlx"
    assert is_dead_letter_queue("escavador_youtube.dlq")
    assert not is_dead_letter_queue("escavador_youtube")
    assert not is_dead_letter_queue("escavador_youtube.dlx")
    assert original_queue("escavador_youtube.dlq") == "escavador_youtube"
    with pytest.raises(ValueError, match="not a dead-letter queue"):
        original_queue("escavador_youtube")


def test_queue_arguments() -> None:
    spec = QueueSpec("escavador_youtube", "escavador", 5)
    assert spec.dlq == "escavador_youtube.dlq"
    assert spec.dlx == "escavador_youtube.dlx"
    assert spec.queue_arguments() == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 5,
        "x-dead-letter-exchange": "escavador_youtube.dlx",
        "x-dead-letter-routing-key": "escavador_youtube.dlq",
    }


def test_work_queue_uses_the_topic_exchange_and_its_own_name() -> None:
    spec = QueueSpec("executador_webhook", "executador", 3)
    queue = spec.work_queue()
    assert queue.name == "executador_webhook"
    assert queue.routing_key == "executador_webhook"
    assert queue.exchange is not None
    assert queue.exchange.name == WORK_EXCHANGE == "orchestrator"
    assert queue.exchange.type == "topic"
    assert queue.durable
    assert getattr(queue, "queue_arguments", None) == spec.queue_arguments()


@pytest.mark.parametrize(("url", "expected"), [
    ("amqp://guest:guest@127.0.0.1:5672//", True),
    ("pyamqp://127.0.0.1", True),
    ("amqps://host;amqp://other", True),
    (["amqp://a", "amqp://b"], True),
    ("redis://127.0.0.1:6379/0", False),
    ("redis-streams://127.0.0.1:6379/0", False),
    ("nats://127.0.0.1:4222", False),
    ("memory://", False),
])
def test_only_rabbitmq_routes_through_the_work_exchange(url: Any, expected: bool) -> None:
    assert routes_through_exchange(url) is expected


@pytest.mark.parametrize(("url", "exchange"), [
    ("amqp://guest:guest@127.0.0.1:5672//", None),
    ("redis-streams://127.0.0.1:6379/0", ""),
    ("nats://127.0.0.1:4222", ""),
])
def test_router_sends_a_step_to_its_own_queue(url: str, exchange: str | None) -> None:
    """Through the topic exchange on RabbitMQ (delayed delivery needs it), through the
    anonymous exchange where the transport would read the binding table per publish."""
    task = SimpleNamespace(app=SimpleNamespace(conf=SimpleNamespace(broker_url=url)))
    route = route_step("executador_webhook", (), {}, {}, task=task)
    assert route is not None
    assert route["queue"] == route["routing_key"] == "executador_webhook"
    assert route.get("exchange") == exchange
    assert route_step("not_a_step", (), {}, {}, task=task) is None


def test_dead_letter_entities() -> None:
    spec = QueueSpec("executador_webhook", "executador", 3)
    exchange = spec.dead_letter_exchange()
    assert (exchange.name, exchange.type) == ("executador_webhook.dlx", "direct")
    dlq = spec.dead_letter_queue()
    assert dlq.name == dlq.routing_key == "executador_webhook.dlq"
    assert dlq.exchange is not None
    assert dlq.exchange.name == "executador_webhook.dlx"
    assert "x-dead-letter-exchange" not in (getattr(dlq, "queue_arguments", None) or {})


def test_topology_add_is_idempotent_but_refuses_conflicts() -> None:
    local = Topology()
    spec = QueueSpec("escavador_x", "escavador", 5)
    assert local.add(spec) is spec
    local.add(QueueSpec("escavador_x", "escavador", 5))
    assert local.names() == ["escavador_x"]
    with pytest.raises(ValueError, match="different settings"):
        local.add(QueueSpec("escavador_x", "escavador", 6))
    assert local.get("escavador_x").delivery_limit == 5
    with pytest.raises(KeyError, match="escavador_x"):
        local.get("escavador_y")


def test_topology_work_queues_never_include_dead_letter_queues() -> None:
    local = Topology()
    local.add(QueueSpec("escavador_a", "escavador", 5))
    local.add(QueueSpec("executador_b", "executador", 5))
    names = [q.name for q in local.work_queues()]
    assert names == ["escavador_a", "executador_b"]
    assert "escavador_a" in local
    assert "escavador_a.dlq" not in local


def test_the_process_topology_has_the_shipped_steps() -> None:
    names = topology.names()
    for name in ("escavador_youtube", "escavador_rss", "executador_arquivo",
                 "executador_webhook"):
        assert name in topology
        assert name in names
    assert not any(is_dead_letter_queue(q.name) for q in topology.work_queues())
    assert {q.name for q in app.conf.task_queues} == set(names)
    for spec in topology:
        assert spec.name.startswith(spec.kind + "_")
        assert spec.name in app.tasks  # each queue has its step task


# --- settings -------------------------------------------------------------------------------


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MAX_RETRIES", "9")
    monkeypatch.setenv("ORCHESTRATOR_RETRY_BACKOFF", "0.25")
    monkeypatch.setenv("ORCHESTRATOR_RETRY_JITTER", "false")
    monkeypatch.setenv("ORCHESTRATOR_DELIVERY_LIMIT", "11")
    monkeypatch.setenv("ORCHESTRATOR_MAX_MESSAGE_BYTES", "2048")
    monkeypatch.setenv("ORCHESTRATOR_STEP_MODULES", '["a", "b.c"]')
    monkeypatch.setenv("ORCHESTRATOR_BROKER_URL", "redis-streams://127.0.0.1:6379/0")
    config = Settings()
    assert config.max_retries == 9
    assert config.retry_backoff == 0.25
    assert config.retry_jitter is False
    assert config.delivery_limit == 11
    assert config.max_message_bytes == 2048
    assert config.step_modules == ["a", "b.c"]
    assert config.broker_url == "redis-streams://127.0.0.1:6379/0"


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_RETRIES", "RETRY_BACKOFF", "DELIVERY_LIMIT", "WEBHOOK_URL"):
        monkeypatch.delenv("ORCHESTRATOR_" + name, raising=False)
    config = Settings()
    assert config.max_retries == 3
    assert config.retry_backoff == 2.0
    assert config.delivery_limit == 5
    assert config.webhook_url is None


def test_settings_refuse_invalid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MAX_RETRIES", "many")
    with pytest.raises(ValidationError, match="max_retries"):
        Settings()


def test_process_settings_come_from_the_conftest_environment() -> None:
    assert get_settings().max_retries == 2
    assert get_settings().delivery_limit == 3


@pytest.mark.parametrize(
    ("url", "user"),
    [
        ("amqp://u:secret@h:5672//", "u"),
        ("amqp://guest:guest@127.0.0.1:5672//", "guest"),
        ("redis://:secret@h:6379/0", ""),
        ("amqp://u:p%40ss:secret@h//", "u"),
        ("amqp://u:se@cret@h:5672/vhost", "u"),
    ],
)
def test_redact_url_hides_the_password(url: str, user: str) -> None:
    redacted = redact_url(url)
    assert "secret" not in redacted
    assert ":guest@" not in redacted
    assert f"//{user}:***@h" in redacted or f"//{user}:***@127.0.0.1" in redacted


def test_redact_url_keeps_the_rest() -> None:
    assert redact_url("amqp://u:secret@h:5672//") == "amqp://u:***@h:5672//"


@pytest.mark.parametrize(
    "url", ["amqp://h:5672//", "amqp://user@h//", "redis://127.0.0.1:6379/0", "nats://n:4222",
            "memory://", "foo://x"],
)
def test_redact_url_leaves_password_less_urls_alone(url: str) -> None:
    assert redact_url(url) == url


def test_redact_url_of_garbage_does_not_leak_it() -> None:
    assert redact_url("http://[::1") == "<unparseable url>"


# --- dead-letter descriptions ---------------------------------------------------------------


def test_describe_returns_our_own_header_as_is() -> None:
    own = dead_letter.failure_details(
        reason=dead_letter.REASON_FAILED, queue="escavador_x", task_name="escavador_x",
        task_id="t1", correlation_id=CID, attempts=1, exc=FinalError("boom"),
    )
    described = dead_letter.describe({dead_letter.DEAD_LETTER_HEADER: own, "x-death": []})
    assert described == own
    assert described is not own  # a copy, the message is untouched
    assert described["reason"] == "failed"
    assert described["exception_type"] == "FinalError"
    assert described["exception_message"] == "boom"


def test_describe_reads_rabbitmq_x_death() -> None:
    when = datetime(2025, 10, 14, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    headers: dict[str, Any] = {
        "x-death": [{"reason": "delivery_limit", "queue": "escavador_x", "count": 1,
                     "time": when}],
        "task": "escavador_x",
        "id": "task-1",
        HEADER: CID,
    }
    described = dead_letter.describe(headers, delivery_limit=3)
    assert described["reason"] == dead_letter.REASON_DELIVERY_LIMIT == "delivery_limit"
    assert described["queue"] == "escavador_x"
    assert described["attempts"] == 4, "the step ran delivery_limit + 1 times"
    assert described["task"] == "escavador_x"
    assert described["task_id"] == "task-1"
    assert described["correlation_id"] == CID
    assert described["last_failure_at"] == datetime(2025, 10, 14, 12, 0, tzinfo=UTC).isoformat()
    assert "delivery limit" in described["exception_message"]


def test_describe_x_death_ignores_the_dead_letters_own_delivery_count() -> None:
    headers = {"x-delivery-count": 4, "retries": 1,
               "x-death": [{"reason": "rejected", "queue": "executador_y", "count": 1}]}
    described = dead_letter.describe(headers)
    assert described["reason"] == "rejected"
    assert described["queue"] == "executador_y"
    assert described["attempts"] == 2, "retries + 1: how often the step ran"


@pytest.mark.parametrize("headers", [None, {}, {"x-death": []}, {"x-death": "garbage"}])
def test_describe_without_details_says_rejected(headers: dict[str, Any] | None) -> None:
    described = dead_letter.describe(headers)
    assert described["reason"] == "rejected"
    assert described["queue"] is None


# --- pipelines (built, never sent) ----------------------------------------------------------


def leaves(canvas: Signature) -> Iterator[Signature]:
    """Every task signature of a canvas (chains, groups, chords walked through)."""
    if isinstance(canvas, chord):
        yield from leaves(canvas.tasks)
        yield from leaves(canvas.body)
    elif isinstance(canvas, group | _chain):
        for task in canvas.tasks:
            yield from leaves(task)
    elif isinstance(canvas, list | tuple):
        for task in canvas:
            yield from leaves(task)
    else:
        yield canvas


def assert_correlated(canvas: Signature, correlation_id: str) -> None:
    found = list(leaves(canvas))
    assert found
    for signature in found:
        assert signature.options["headers"][HEADER] == correlation_id, signature
        if signature.task.startswith("escavador_"):
            assert signature.args[0]["correlation_id"] == correlation_id


def test_one_escavador_alone_is_one_signature() -> None:
    envelope, canvas, steps = build_pipeline(app, "rss", {"url": "http://feed"})
    assert type(canvas) is Signature
    assert canvas.task == "escavador_rss"
    assert steps == ("escavador_rss",)
    assert canvas.args[0] == envelope.to_dict()
    assert envelope.tipo_evento == "iniciar_coleta"
    assert envelope.payload == {"url": "http://feed"}
    assert_correlated(canvas, str(envelope.correlation_id))


def test_one_escavador_and_one_executador_is_a_chain() -> None:
    envelope, canvas, steps = build_pipeline(app, ["youtube"], {"canal": "x"},
                                             execute=["arquivo"])
    assert isinstance(canvas, chain | _chain)
    assert [t.task for t in canvas.tasks] == ["escavador_youtube", "executador_arquivo"]
    assert steps == ("escavador_youtube", "executador_arquivo")
    assert canvas.tasks[1].kwargs == {"options": {}}
    assert_correlated(canvas, str(envelope.correlation_id))


def test_one_escavador_and_two_executadores_ends_in_a_group() -> None:
    envelope, canvas, steps = build_pipeline(
        app, "rss", {}, execute={"arquivo": None, "webhook": {"url": "http://hook"}}
    )
    assert isinstance(canvas, _chain | chord)
    last = canvas.body if isinstance(canvas, chord) else canvas.tasks[-1]
    assert isinstance(last, group | chord)
    assert sorted(t.task for t in leaves(last)) == ["executador_arquivo", "executador_webhook"]
    webhook = next(t for t in leaves(canvas) if t.task == "executador_webhook")
    assert webhook.kwargs == {"options": {"url": "http://hook"}}
    assert steps == ("escavador_rss", "executador_arquivo", "executador_webhook")
    assert_correlated(canvas, str(envelope.correlation_id))


def test_two_escavadores_and_an_executador_is_a_chord() -> None:
    envelope, canvas, steps = build_pipeline(app, ["rss", "youtube"], {}, execute=["webhook"])
    assert isinstance(canvas, chord)
    assert canvas.body.task == "executador_webhook"
    assert sorted(t.task for t in leaves(canvas.tasks)) == ["escavador_rss", "escavador_youtube"]
    assert steps == ("escavador_rss", "escavador_youtube", "executador_webhook")
    assert_correlated(canvas, str(envelope.correlation_id))


def test_two_escavadores_without_executador_is_a_group() -> None:
    envelope, canvas, _ = build_pipeline(app, ["rss", "youtube"], {})
    assert isinstance(canvas, group)
    assert_correlated(canvas, str(envelope.correlation_id))


def test_caller_given_correlation_id_is_kept() -> None:
    envelope, canvas, _ = build_pipeline(app, ["rss", "youtube"], {},
                                         execute=["arquivo", "webhook"], correlation_id=CID)
    assert str(envelope.correlation_id) == CID
    assert len(list(leaves(canvas))) == 4
    assert_correlated(canvas, CID)


def test_each_build_gets_a_fresh_correlation_id() -> None:
    first, _, _ = build_pipeline(app, "rss", {})
    second, _, _ = build_pipeline(app, "rss", {})
    assert first.correlation_id != second.correlation_id
    assert isinstance(first.correlation_id, uuid.UUID)


def test_invalid_correlation_id_is_a_pipeline_error() -> None:
    with pytest.raises(PipelineError, match="correlation_id"):
        build_pipeline(app, "rss", {}, correlation_id="not-a-uuid")


@pytest.mark.parametrize(
    ("collect", "execute"), [("nope", None), ("rss", ["nope"]), (["rss", "nope"], ["arquivo"])]
)
def test_unknown_step_names_the_known_steps(collect: str | list[str],
                                            execute: list[str] | None) -> None:
    with pytest.raises(PipelineError) as info:
        build_pipeline(app, collect, {}, execute=execute)
    message = str(info.value)
    assert "unknown step" in message
    assert "_nope" in message
    assert "escavador_rss" in message
    assert "executador_webhook" in message


def test_no_escavador_is_refused() -> None:
    with pytest.raises(PipelineError, match="at least one escavador"):
        build_pipeline(app, [], {})


def test_execute_as_a_string_is_refused() -> None:
    with pytest.raises(PipelineError, match="not a string"):
        build_pipeline(app, "rss", {}, execute="webhook")  # a str is a Sequence[str]
    with pytest.raises(PipelineError):
        _normalise_execute("webhook")


def test_normalise_execute() -> None:
    assert _normalise_execute(None) == {}
    assert _normalise_execute(["a", "b"]) == {"a": {}, "b": {}}
    assert _normalise_execute({"a": None, "b": {"k": 1}}) == {"a": {}, "b": {"k": 1}}


def test_check_size_refuses_oversized_envelopes() -> None:
    envelope, _, _ = build_pipeline(app, "rss", {"data": "x" * 1000})
    size = len(envelope.to_json().encode("utf-8"))
    check_size(envelope, max_bytes=size)
    with pytest.raises(PipelineError, match="ORCHESTRATOR_MAX_MESSAGE_BYTES") as info:
        check_size(envelope, max_bytes=size - 1)
    assert f"{size} bytes" in str(info.value)


def test_check_size_counts_utf8_bytes_not_characters() -> None:
    envelope, _, _ = build_pipeline(app, "rss", {"data": "ç" * 1000})
    chars = len(envelope.to_json())
    with pytest.raises(PipelineError):
        check_size(envelope, max_bytes=chars)


def test_build_refuses_an_oversized_payload_with_the_default_limit() -> None:
    limit = get_settings().max_message_bytes
    with pytest.raises(PipelineError, match="over the"):
        build_pipeline(app, "rss", {"data": "x" * (limit + 1)})


def test_build_refuses_a_payload_the_envelope_refuses() -> None:
    with pytest.raises(PipelineError, match="payload"):
        build_pipeline(app, "rss", {1: "non-string key"})  # type: ignore[dict-item]


# --- what telemetry shows of a step's arguments ----------------------------------------------


def test_flower_sees_the_envelope_kind_and_correlation_id_not_the_payload() -> None:
    envelope = {"correlation_id": CID, "tipo_evento": "iniciar_coleta",
                "payload": {"token": "s3cr3t"}, "timestamp": "2026-11-27T00:00:00Z"}
    shown = args_description(CID, (envelope,))
    assert shown == f"(<envelope iniciar_coleta correlation_id={CID}>,)"
    assert "s3cr3t" not in args_description(CID, ())
    assert kwargs_description({"options": {"url": "https://x/?key=s3cr3t"}}) == \
        "{'options': <url>}"
    assert kwargs_description({}) == "{}"


def test_every_step_of_a_pipeline_carries_the_description() -> None:
    _, canvas, _ = build_pipeline(app, "eco", {"token": "s3cr3t"}, ["eco"])
    for signature in canvas.tasks:
        assert CID not in signature.options["argsrepr"]
        assert "correlation_id=" in signature.options["argsrepr"]
        assert "s3cr3t" not in signature.options["argsrepr"]


def test_the_app_reads_every_setting_of_celeryconfig_and_no_import() -> None:
    import celeryconfig
    from orchestrator.celery_app import settings_of

    settings = settings_of(celeryconfig)
    assert {"broker_url", "result_backend", "task_acks_late", "accept_content",
            "worker_consumer"} <= set(settings)
    assert not {"annotations", "backend_url", "get_settings"} & set(settings)
    for name, value in settings.items():
        if name not in app.conf.changes:  # re-pointed at runtime by the broker tests
            assert app.conf[name] == value, name
    assert app.conf.accept_content == ["json"]  # never pickle
