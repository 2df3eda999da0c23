"""Turning whatever a queue holds into a Kombu message, so that no bytes can stop a worker.

The Redis Streams and NATS transports carry Kombu's JSON framing (``body``, ``headers``,
``properties``, ...). A foreign client can put anything on a step's stream or subject: text
that is not JSON, a JSON list, an object without Kombu's fields, a stream entry without the
``payload`` field. Raised from a transport's delivery path, a decoding error is a worker crash
(Celery takes it for a connection or an unrecoverable error), and the redelivery crashes the
next worker too. So the transports decode with :func:`decode_frame`: a frame that is not
Kombu's becomes a message whose body is the original bytes, marked with
:data:`FOREIGN_FRAME_HEADER` saying what was wrong, which the worker's gate then refuses into
the queue's DLQ (transports only carry bytes; the gate judges).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from orchestrator.headers import carried_trace_context

FOREIGN_FRAME_HEADER = "x-foreign-frame"
"""Set on a delivery whose bytes were not a Kombu message: what was wrong with them."""

KOMBU_FIELDS = ("body", "properties")


def decode_frame(data: bytes | str | None) -> dict[str, Any]:
    """Kombu's payload dict from ``data``, or a foreign-frame message holding ``data``."""
    raw = data.encode("utf-8", errors="surrogateescape") if isinstance(data, str) \
        else (data or b"")
    try:
        decoded = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return foreign_frame(raw, f"not JSON ({exc})")
    if not isinstance(decoded, dict):
        return foreign_frame(raw, f"JSON {type(decoded).__name__}, not a Kombu message")
    problem = _framing_problem(decoded)
    if problem:
        return foreign_frame(raw, f"a JSON object without Kombu's framing ({problem})")
    if decoded.get("headers") is None:
        decoded["headers"] = {}
    return decoded


def keep_trace_context(payload: dict[str, Any], carrier: Any) -> dict[str, Any]:
    """``payload`` with the W3C trace context of ``carrier`` (the broker's own headers or
    fields of the delivery) in its headers, when it is a foreign frame: a plain client has
    no Kombu headers to put it in. A Kombu message keeps its own headers as they are."""
    headers = payload.get("headers")
    if isinstance(headers, dict) and FOREIGN_FRAME_HEADER in headers:
        headers.update(carried_trace_context(carrier))
    return payload


def _framing_problem(decoded: dict[str, Any]) -> str | None:
    """What keeps ``decoded`` from being a Kombu payload that Kombu can open, if anything."""
    missing = [name for name in KOMBU_FIELDS if name not in decoded]
    if missing:
        return f"no {', '.join(missing)}"
    properties = decoded["properties"]
    if not isinstance(properties, dict):
        return "properties is not an object"
    if not isinstance(properties.get("delivery_info", {}), dict):
        return "delivery_info is not an object"
    if not isinstance(decoded.get("headers") or {}, dict):
        return "headers is not an object"
    body = decoded["body"]
    if not isinstance(body, str):
        return "body is not text"
    if properties.get("body_encoding") == "base64":
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return "body_encoding is base64 but the body is not"
    return None


def foreign_frame(raw: bytes, what: str) -> dict[str, Any]:
    """A Kombu payload whose body is ``raw``, as it came, marked as foreign."""
    return {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-encoding": "binary",
        "content-type": "application/octet-stream",
        "headers": {FOREIGN_FRAME_HEADER: what},
        "properties": {"body_encoding": "base64", "delivery_info": {}},
    }
