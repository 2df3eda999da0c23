"""Pipeline canvases, built and never sent, and what telemetry shows of them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from celery import chain, chord, group
from celery.canvas import Signature, _chain

from orchestrator.celery_app import app
from orchestrator.correlation import HEADER
from orchestrator.pipeline import (
    PipelineError,
    _normalise_execute,
    args_description,
    build_pipeline,
    check_size,
    kwargs_description,
)
from orchestrator.settings import get_settings

CID = "0b7f7a2e-3c1d-4c53-9b8e-2f1f3b7f9a10"


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
