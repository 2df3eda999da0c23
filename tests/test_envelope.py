"""Unit tests of the wire envelope: strict parsing, UTC timestamps, and never a stray exception."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.envelope import Envelope, EnvelopeError, EventType

CID = "0b7f7a2e-3c1d-4c53-9b8e-2f1f3b7f9a10"
EVENT_TYPES = ["iniciar_coleta", "resultado_coleta", "iniciar_execucao", "resultado_execucao"]


def raw(**overrides: Any) -> dict[str, Any]:
    """A valid decoded envelope, with some fields replaced."""
    data: dict[str, Any] = {
        "correlation_id": CID,
        "tipo_evento": "iniciar_coleta",
        "payload": {"canal": "abc"},
        "timestamp": "2025-10-14T12:00:00Z",
    }
    data.update(overrides)
    return data


# --- examples -------------------------------------------------------------------------------


def test_round_trip_new_to_json_parse() -> None:
    envelope = Envelope.new(EventType.INICIAR_COLETA, {"canal": "abc", "n": [1, 2.5, None]})
    assert Envelope.parse(envelope.to_json()) == envelope
    assert Envelope.parse(envelope.to_json().encode("utf-8")) == envelope
    assert Envelope.parse(envelope.to_dict()) == envelope


def test_new_defaults() -> None:
    envelope = Envelope.new("resultado_coleta")
    assert envelope.payload == {}
    assert envelope.tipo_evento is EventType.RESULTADO_COLETA
    assert envelope.timestamp.tzinfo is not None
    assert envelope.timestamp.utcoffset() == timedelta(0)
    assert envelope.timestamp.microsecond == 0
    assert isinstance(envelope.correlation_id, uuid.UUID)


def test_new_keeps_given_correlation_id() -> None:
    assert str(Envelope.new("iniciar_coleta", {}, correlation_id=CID).correlation_id) == CID
    given_uuid = uuid.UUID(CID)
    envelope = Envelope.new("iniciar_coleta", {}, correlation_id=given_uuid)
    assert envelope.correlation_id == given_uuid


def test_timestamp_is_serialized_as_utc_with_z() -> None:
    envelope = Envelope.parse(raw())
    assert envelope.to_dict()["timestamp"] == "2025-10-14T12:00:00Z"
    assert json.loads(envelope.to_json())["timestamp"] == "2025-10-14T12:00:00Z"


def test_wire_form_is_compact_json_with_string_fields() -> None:
    envelope = Envelope.parse(raw())
    assert json.loads(envelope.to_json()) == {
        "correlation_id": CID,
        "tipo_evento": "iniciar_coleta",
        "payload": {"canal": "abc"},
        "timestamp": "2025-10-14T12:00:00Z",
    }
    assert " " not in envelope.to_json()


@pytest.mark.parametrize(
    "timestamp",
    [
        "2025-10-14T14:00:00+02:00",
        "2025-10-14T09:00:00-03:00",
        "2025-10-14T12:00:00+00:00",
        datetime(2025, 10, 14, 14, 0, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_aware_timestamp_is_normalised_to_utc(timestamp: str | datetime) -> None:
    envelope = Envelope.parse(raw(timestamp=timestamp))
    assert envelope.timestamp == datetime(2025, 10, 14, 12, 0, tzinfo=UTC)
    assert envelope.timestamp.utcoffset() == timedelta(0)
    assert envelope.to_dict()["timestamp"] == "2025-10-14T12:00:00Z"


@pytest.mark.parametrize("timestamp", ["2025-10-14T12:00:00", datetime(2025, 10, 14, 12, 0)])
def test_naive_timestamp_is_refused(timestamp: str | datetime) -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.parse(raw(timestamp=timestamp))
    assert "timestamp" in str(info.value)
    assert "timezone" in str(info.value)


def test_sub_second_timestamp_round_trips() -> None:
    envelope = Envelope.parse(raw(timestamp="2025-10-14T12:00:00.123456Z"))
    assert envelope.to_dict()["timestamp"] == "2025-10-14T12:00:00.123456Z"
    assert Envelope.parse(envelope.to_json()) == envelope


def test_reply_keeps_correlation_id_and_changes_type() -> None:
    request = Envelope.parse(raw())
    answer = request.reply(EventType.RESULTADO_COLETA, {"itens": [1, 2]})
    assert answer.correlation_id == request.correlation_id
    assert answer.tipo_evento is EventType.RESULTADO_COLETA
    assert answer.payload == {"itens": [1, 2]}
    assert answer.timestamp >= request.timestamp
    assert request.tipo_evento is EventType.INICIAR_COLETA  # the original is untouched


@pytest.mark.parametrize("tipo", EVENT_TYPES)
def test_the_four_event_types_are_accepted(tipo: str) -> None:
    envelope = Envelope.parse(raw(tipo_evento=tipo))
    assert envelope.tipo_evento == tipo
    assert envelope.to_dict()["tipo_evento"] == tipo


@pytest.mark.parametrize("tipo", ["", "INICIAR_COLETA", "iniciar-coleta", "outro", 1, None])
def test_other_event_types_are_refused_naming_the_field(tipo: Any) -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.parse(raw(tipo_evento=tipo))
    message = str(info.value)
    assert "tipo_evento" in message
    if isinstance(tipo, str):
        assert all(name in message for name in EVENT_TYPES)  # says what is allowed


def test_unknown_field_is_refused_naming_it() -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.parse(raw(extra_field=1))
    assert "extra_field" in str(info.value)
    assert "unknown field" in str(info.value)


@pytest.mark.parametrize("field", ["correlation_id", "tipo_evento", "payload"])
def test_missing_field_is_refused_naming_it(field: str) -> None:
    data = raw()
    del data[field]
    with pytest.raises(EnvelopeError) as info:
        Envelope.parse(data)
    assert field in str(info.value)


def test_timestamp_is_optional_and_defaults_to_now() -> None:
    data = raw()
    del data["timestamp"]
    before = datetime.now(UTC).replace(microsecond=0)
    envelope = Envelope.parse(data)
    assert before <= envelope.timestamp <= datetime.now(UTC)


@pytest.mark.parametrize("payload", [[1, 2], "texto", 3, None, True])
def test_payload_must_be_an_object(payload: Any) -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.parse(raw(payload=payload))
    assert "payload" in str(info.value)


def _circular() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"x": float("nan")}, "NaN and Infinity are not JSON"),
        ({"x": [float("inf")]}, "NaN and Infinity are not JSON"),
        ({"x": object()}, "not serializable as JSON"),
        ({"x": _circular()}, "circular reference"),
    ],
)
def test_payload_must_be_plain_json(payload: dict[str, Any], problem: str) -> None:
    for make in (lambda: Envelope.parse(raw(payload=payload)),
                 lambda: Envelope.new("iniciar_coleta", payload)):
        with pytest.raises(EnvelopeError) as info:
            make()
        assert str(info.value).startswith("invalid envelope: payload: ")
        assert problem in str(info.value)


@pytest.mark.parametrize("value", ["not-a-uuid", "", 123, None, "0b7f7a2e-3c1d-4c53-9b8e"])
def test_correlation_id_must_be_a_uuid(value: Any) -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.parse(raw(correlation_id=value))
    assert "correlation_id" in str(info.value)


def test_correlation_id_accepts_uuid_forms() -> None:
    upper = Envelope.parse(raw(correlation_id=CID.upper()))
    assert str(upper.correlation_id) == CID
    assert upper.to_dict()["correlation_id"] == CID


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\xff\xfe", "not UTF-8"),
        ("{not json", "not JSON"),
        (b"", "not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ("null", "expected a JSON object, got NoneType"),
        (42, "expected a JSON object, got int"),
    ],
)
def test_bodies_that_are_not_objects_are_refused(body: Any, problem: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.parse(body)
    assert problem in str(info.value)


def test_envelope_error_names_each_field_and_problem() -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.parse(raw(tipo_evento="x", correlation_id="y"))
    message = str(info.value)
    assert message.startswith("invalid envelope: ")
    assert "tipo_evento: must be one of" in message
    assert "correlation_id:" in message
    assert "\n" not in message


def test_envelope_error_is_a_value_error() -> None:
    assert issubclass(EnvelopeError, ValueError)


def test_envelope_is_immutable() -> None:
    envelope = Envelope.parse(raw())
    with pytest.raises(Exception):  # noqa: B017 (pydantic raises its ValidationError)
        envelope.payload = {}  # type: ignore[misc]


def test_parse_returns_an_envelope_as_is() -> None:
    envelope = Envelope.parse(raw())
    assert Envelope.parse(envelope) is envelope


# --- properties -----------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
finite_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
odd_keys = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | (
    st.tuples(st.integers(), st.text(max_size=3))
)
any_python = st.recursive(
    json_scalars | st.binary(max_size=20) | st.datetimes() | st.uuids(),
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(odd_keys, children, max_size=4),
    max_leaves=20,
)
timestamp_like = (
    st.text(max_size=40)
    | st.integers()
    | st.floats()
    | st.datetimes()
    | st.datetimes(timezones=st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                                max_value=timedelta(hours=23, minutes=59))))
    | st.from_regex(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?\Z")
)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "correlation_id": st.uuids().map(str) | st.text(max_size=40) | any_python,
    "tipo_evento": st.sampled_from(EVENT_TYPES) | st.text(max_size=20) | any_python,
    "payload": st.dictionaries(st.text(max_size=10), json_values, max_size=4) | any_python,
    "timestamp": timestamp_like | any_python,
}
envelope_like_dicts = st.fixed_dictionaries(
    {},
    optional={**field_values, "extra": any_python},
)
json_field_values: dict[str, st.SearchStrategy[Any]] = {
    "correlation_id": st.uuids().map(str) | st.text(max_size=40) | json_values,
    "tipo_evento": st.sampled_from(EVENT_TYPES) | st.text(max_size=20) | json_values,
    "payload": st.dictionaries(st.text(max_size=10), json_values, max_size=4) | json_values,
    "timestamp": timestamp_like.map(lambda v: v.isoformat() if isinstance(v, datetime) else v)
    | json_values,
}
envelope_like_json = st.fixed_dictionaries(
    {}, optional={**json_field_values, "extra": json_values}
).map(json.dumps)


def nested_envelope_text(depth: int) -> str:
    """A valid envelope as JSON text whose payload nests ``depth`` objects."""
    payload = '{"a":' * depth + "1" + "}" * depth
    return f'{{"correlation_id":"{CID}","tipo_evento":"iniciar_coleta","payload":{payload}}}'


deeply_nested = st.integers(min_value=1, max_value=5000).flatmap(
    lambda depth: st.sampled_from([
        "[" * depth + "]" * depth,
        "[" * depth,
        '{"a":' * depth + "1" + "}" * depth,
        nested_envelope_text(depth),
    ])
)

ANY_INPUT = (
    st.binary(max_size=200)
    | st.text(max_size=200)
    | json_values
    | json_values.map(json.dumps)
    | any_python
    | envelope_like_dicts
    | envelope_like_json
    | envelope_like_json.map(str.encode)
    | deeply_nested
    | deeply_nested.map(str.encode)
)

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _parse_or_envelope_error(data: Any) -> None:
    try:
        result = Envelope.parse(data)
    except EnvelopeError as exc:
        assert str(exc)  # a readable reason, never empty
    else:
        assert isinstance(result, Envelope)


@PROPERTY_SETTINGS
@given(ANY_INPUT)
def test_parse_never_raises_anything_but_envelope_error(data: Any) -> None:
    _parse_or_envelope_error(data)


@PROPERTY_SETTINGS
@given(envelope_like_dicts)
def test_parse_of_dicts_with_the_real_keys(data: dict[str, Any]) -> None:
    _parse_or_envelope_error(data)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=500, max_value=50_000))
def test_deep_nesting_in_a_payload_object(depth: int) -> None:
    payload: Any = 1
    for _ in range(depth):
        payload = {"a": payload}
    _parse_or_envelope_error(raw(payload=payload))
    _parse_or_envelope_error(nested_envelope_text(depth))


aware_datetimes = st.datetimes(
    min_value=datetime(2, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.builds(
        timezone,
        st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                      max_value=timedelta(hours=23, minutes=59)).map(
            lambda d: timedelta(minutes=round(d.total_seconds() / 60))
        ),
    ),
)
json_objects = st.dictionaries(st.text(max_size=10), finite_json_values, max_size=6)


@PROPERTY_SETTINGS
@given(st.uuids(), st.sampled_from(list(EventType)), json_objects, aware_datetimes)
def test_valid_envelopes_round_trip(
    correlation_id: uuid.UUID, tipo: EventType, payload: dict[str, Any], when: datetime
) -> None:
    envelope = Envelope(
        correlation_id=correlation_id, tipo_evento=tipo, payload=payload, timestamp=when
    )
    text = envelope.to_json()
    again = Envelope.parse(text)
    assert again == envelope
    assert Envelope.parse(text.encode("utf-8")) == envelope
    assert again.to_json() == text
    assert again.timestamp == when  # the same instant, now in UTC
    stamp = json.loads(text)["timestamp"]
    assert stamp.endswith("Z")
    assert "+" not in stamp
    assert str(again.correlation_id) == str(correlation_id)


@settings(max_examples=100, deadline=None)
@given(st.uuids(), st.sampled_from(EVENT_TYPES), json_objects, st.sampled_from(EVENT_TYPES))
def test_reply_always_keeps_the_correlation_id(
    correlation_id: uuid.UUID, tipo: str, payload: dict[str, Any], answer_type: str
) -> None:
    request = Envelope.new(tipo, payload, correlation_id=correlation_id)
    answer = request.reply(answer_type, payload)
    assert answer.correlation_id == correlation_id
    assert answer.tipo_evento == answer_type
    assert Envelope.parse(answer.to_json()) == answer
