"""The services the bench runs against: the brokers, and the Redis database of its results.

``redis-streams`` and ``nats`` are this project's own Kombu transports; a broker whose
transport is not registered, or that does not answer, gets a one-line row and the run
goes on. Between two measurements the keys the previous one left (task results, chord
counters, idempotency records, ledgers) are deleted, so each side starts on an equally
empty database: a Redis that grew by 100,000 keys in the last run must not slow down the
next. Only key patterns the bench itself produces are removed, never the whole database.
"""

from __future__ import annotations

import contextlib
import importlib
from urllib.parse import urlsplit

import redis
from kombu.transport import resolve_transport

from orchestrator.app_broker import broker_error

# -- brokers -----------------------------------------------------------------------------------

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
    error = broker_error(url)
    return f"unreachable: {error}" if error else None


# -- the results database ----------------------------------------------------------------------

PATTERNS = ("celery-task-meta-*", "celery-taskset-meta-*", "orchestrator:idem:*",
            "orchestrator:trace:*", "bench:*")
BATCH = 1000


def check_redis(url: str) -> str | None:
    """None when Redis answers, else the error text."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def tidy_redis(url: str) -> int:
    """Delete what earlier measurements left; returns how many keys went."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=30)
    removed = 0
    try:
        for pattern in PATTERNS:
            batch: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=BATCH):
                batch.append(key)
                if len(batch) >= BATCH:
                    removed += int(client.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(client.unlink(*batch))
    finally:
        client.close()
    return removed
