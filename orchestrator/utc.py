"""Times as this project writes them on the wire (ISO 8601, ``Z`` or an offset; a time without
one is UTC), read back in one place: envelope timestamps, dead letters' failure times, trace
entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_utc(value: Any) -> datetime | None:
    """``value`` as an aware datetime, or None when it is not such a time (empty, not text,
    malformed)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
