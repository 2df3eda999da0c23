"""The brokers the bench knows, and whether one can be measured right now.

``redis-streams`` and ``nats`` are this project's own Kombu transports, still being written:
until one registers its URL scheme, its row says "not available yet" and the run goes on.
"""

from __future__ import annotations

import contextlib
import importlib
from urllib.parse import urlsplit

from kombu.connection import Connection
from kombu.transport import resolve_transport

BROKERS: dict[str, str] = {
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
    "redis": "redis://127.0.0.1:6379/13",
    "redis-streams": "redis-streams://127.0.0.1:6379/12",
    "nats": "nats://127.0.0.1:4222",
}
"""Name -> URL. ``redis`` is Kombu's stock Redis transport (lists, no dead-lettering)."""


def unavailable_reason(url: str) -> str | None:
    """Why ``url`` cannot be measured (unknown transport, broker down), or None."""
    scheme = urlsplit(url).scheme
    with contextlib.suppress(ImportError):
        importlib.import_module("orchestrator.transports")  # registers the project's schemes
    try:
        resolve_transport(scheme)
    except (KeyError, ImportError, AttributeError) as exc:
        return f"not available yet: no Kombu transport for {scheme}:// ({exc})"
    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5)
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}: {exc}"
    return None
