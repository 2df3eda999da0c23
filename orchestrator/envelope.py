"""The wire contract: the JSON envelope every message between the core and the workers carries.

The field names and the four event types are fixed by the design document (other services
parse them), so they stay in Portuguese. The model is strict on purpose: a message that does not
match is refused with one exception type, :class:`EnvelopeError`, whose message names the field
and the problem, so a dead letter's reason is readable without a debugger.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)


class EventType(StrEnum):
    """The four event types of the design (``tipo_evento``)."""

    INICIAR_COLETA = "iniciar_coleta"
    RESULTADO_COLETA = "resultado_coleta"
    INICIAR_EXECUCAO = "iniciar_execucao"
    RESULTADO_EXECUCAO = "resultado_execucao"


class EnvelopeError(ValueError):
    """Raised for any input that is not a valid envelope; the message names field and problem."""


def utc_now() -> datetime:
    """The current time in UTC, truncated to whole seconds as the wire format shows it."""
    return datetime.fromtimestamp(int(time.time()), UTC)  # a third of now().replace()'s cost


_WIRE_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""The wire's JSON form: compact, UTF-8 text, no NaN. Made once: ``json.dumps`` with any
option builds an encoder per call, and an envelope is encoded twice per publish (the payload
check and the size check)."""


class Envelope(BaseModel):
    """One message of the pipeline.

    ``correlation_id`` follows one request through every step; :meth:`reply` keeps it, so a
    result can always be traced back to the request that caused it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    correlation_id: uuid.UUID
    tipo_evento: EventType
    payload: dict[str, Any]
    timestamp: datetime = Field(default_factory=utc_now)

    @field_validator("timestamp")
    @classmethod
    def _must_be_aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a timezone (e.g. 2025-10-14T12:00:00Z)")
        return value.astimezone(UTC)

    @field_validator("payload")
    @classmethod
    def _must_be_plain_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            _WIRE_ENCODER.encode(value)
        except ValueError as exc:
            if str(exc).startswith("Circular reference"):  # the json module's own words
                raise ValueError("holds a circular reference") from None
            raise ValueError("NaN and Infinity are not JSON: use null or a string") from None
        except (TypeError, RecursionError) as exc:
            raise ValueError(f"not serializable as JSON ({exc})") from None
        return value

    @classmethod
    def new(
        cls,
        tipo_evento: EventType | str,
        payload: dict[str, Any] | None = None,
        correlation_id: uuid.UUID | str | None = None,
    ) -> Envelope:
        """Start a conversation: fills a fresh correlation id (unless given) and the time.

        Given as objects, not text: the id and the time are made here, so parsing them back
        from strings would only spend the publisher's time.
        """
        return cls.parse(
            {
                "correlation_id": correlation_id or uuid.uuid4(),
                "tipo_evento": tipo_evento,
                "payload": payload if payload is not None else {},
                "timestamp": utc_now(),
            }
        )

    def reply(self, tipo_evento: EventType | str, payload: dict[str, Any]) -> Envelope:
        """Answer this envelope: same correlation id, new type, payload and time."""
        return Envelope.new(tipo_evento, payload, correlation_id=self.correlation_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form sent on the wire.

        pydantic's own JSON mode already writes what the wire wants (the id as text, the
        time as ISO 8601 with ``Z``, the validator keeps it in UTC); custom serializers would
        double this per-publish cost.
        """
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """The envelope as compact JSON text."""
        return wire_json(self.to_dict())

    @classmethod
    def parse(cls, data: Any) -> Envelope:
        """Validate a decoded message (a dict) or JSON text/bytes; raise :class:`EnvelopeError`."""
        if isinstance(data, Envelope):
            return data
        if isinstance(data, bytes | bytearray | memoryview):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EnvelopeError(f"envelope: body is not UTF-8 text ({exc.reason})") from None
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except (ValueError, RecursionError) as exc:
                raise EnvelopeError(f"envelope: body is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise EnvelopeError(
                f"envelope: expected a JSON object, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise EnvelopeError(describe_validation_error(exc)) from None
        except (RecursionError, OverflowError, ValueError, TypeError) as exc:
            raise EnvelopeError(f"envelope: {type(exc).__name__}: {exc}") from None


def wire_json(message: dict[str, Any]) -> str:
    """An envelope's wire form (:meth:`Envelope.to_dict`) as compact JSON text."""
    return _WIRE_ENCODER.encode(message)


def describe_validation_error(exc: ValidationError) -> str:
    """Turn pydantic's report into one line per problem: ``field: problem``."""
    problems = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "envelope"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field (the envelope allows only correlation_id, "
            message += "tipo_evento, payload, timestamp)"
        elif error["type"] == "enum":
            message = "must be one of " + ", ".join(e.value for e in EventType)
        problems.append(f"{location}: {message}")
    return "invalid envelope: " + "; ".join(problems)
