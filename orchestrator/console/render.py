"""What the console shows of a dead letter: bounded, printable text (the templates escape it).

Dead letters hold foreign bytes: not UTF-8, control characters, megabytes of body. The page
shows each part as text with every unprintable character written as an escape (``\\x00``),
cut at :data:`MAX_SHOWN_CHARS`, and says when it was cut; ``orchestrator dlq show ID --json``
has the exact bytes. HTML escaping itself is the templates' (Tornado escapes every ``{{ }}``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_SHOWN_CHARS = 64 * 1024
"""At most this much of a body, a traceback or the headers is put on the page."""
ERROR_CHARS = 160
"""A dead letter's error in the list is cut to this much (the letter's page has all of it)."""

_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


@dataclass(frozen=True)
class Shown:
    """One part of a dead letter, ready for a ``<pre>``."""

    text: str
    kind: str
    """"json", "text" or "bytes" (not UTF-8: shown with ``\\xNN`` escapes)."""
    size: int
    """Bytes (body) or characters (anything else) before cutting."""
    cut: bool

    @property
    def label(self) -> str:
        return {"json": "JSON", "text": "UTF-8 text",
                "bytes": "not UTF-8: undecodable bytes shown as \\xNN"}[self.kind]


def printable(text: str) -> str:
    """``text`` with control and invisible characters written as escapes."""
    return _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


def bounded(text: str, limit: int = MAX_SHOWN_CHARS) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def shown_body(body: bytes) -> Shown:
    """The body as pretty JSON when it is JSON, as text when it is UTF-8, else its bytes with
    the undecodable ones escaped."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        shown, cut = bounded(printable(body.decode("utf-8", "backslashreplace")))
        return Shown(shown, "bytes", len(body), cut)
    kind = "text"
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        kind = "json"
    except (ValueError, RecursionError):
        pass
    shown, cut = bounded(printable(text))
    return Shown(shown, kind, len(body), cut)


def shown_json(value: Any) -> Shown:
    """Headers and details: indented JSON, anything not JSON as its ``str``."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)
    shown, cut = bounded(printable(text))
    return Shown(shown, "json", len(text), cut)


def shown_text(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """A short field (id, reason, error, traceback): printable and bounded."""
    text, cut = bounded(printable("" if value is None else str(value)), limit)
    return text + "…" if cut else text


def age(seconds: float | None) -> str:
    """``42s``, ``3.5m``, ``2.0h``, ``1.2d``, or ``?`` when the dead letter has no time."""
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def moment(when: datetime | None) -> str:
    """A trace event's time, in UTC to the millisecond."""
    if when is None:
        return "?"
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def event_note(event: Any) -> str:
    """The part of a trace event that says why or how long: reason, delay, runtime, detail."""
    parts: list[str] = []
    if getattr(event, "by_broker", False):
        parts.append("dead-lettered by the broker")
    if getattr(event, "reason", None):
        parts.append(f"reason {event.reason}")
    if getattr(event, "delay_seconds", None) is not None:
        parts.append(f"retry in {event.delay_seconds:.1f}s")
    if getattr(event, "runtime_seconds", None) is not None:
        parts.append(f"ran {event.runtime_seconds:.3f}s")
    if getattr(event, "detail", None):
        parts.append(str(event.detail))
    return shown_text("; ".join(parts), 2000)
