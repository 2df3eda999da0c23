"""A short-lived cache of exchange binding tables, shared by this project's transports.

Kombu's virtual transports route a topic or direct publish by reading the exchange's binding
table from the broker (Kombu's Redis transport: one ``SMEMBERS`` per publish), because another
process may have bound a queue since. Every step message goes through the ``orchestrator``
topic exchange, so that read doubled the round trips of a publish.

Bindings change rarely (a worker declares its queues once; a remote-control caller binds one
reply queue), so each process keeps a table for :data:`TTL` seconds, and a lookup that finds
*no* queue reads the broker again before giving up: a queue bound a moment ago by another
process is found at once. What the cache can delay by up to :data:`TTL` is only the removal
of a binding (a message may still reach a queue unbound in the last two seconds) and a second
queue bound to a routing key that already had one; neither happens in the orchestrator's
topology, where each routing key has exactly one queue.

Celery's event exchange (``celeryev``) is telemetry and usually has nobody bound (no Flower
running): its table is kept for :data:`TTL` seconds even when empty and a miss is not re-read,
or every task event would read the broker. A monitor that starts listening gets the events
at most :data:`TTL` seconds later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Table = list[tuple[str, str, str]]

TTL = 2.0
"""Seconds a binding table read from the broker is used without reading it again."""

TELEMETRY_EXCHANGES = frozenset({"celeryev"})
"""Exchanges whose empty table is cached too and whose misses are not re-read."""


class BindingCache:
    """Binding tables per exchange, each read at most once every :data:`TTL` seconds."""

    def __init__(self, ttl: float = TTL,
                 telemetry: frozenset[str] = TELEMETRY_EXCHANGES) -> None:
        self._ttl = ttl
        self.telemetry = telemetry
        self._tables: dict[str, tuple[float, Table]] = {}
        self._lock = threading.Lock()

    def cached(self, exchange: str) -> Table | None:
        """The table if it was read less than ``ttl`` ago and is not empty (empty is fine for
        a telemetry exchange), else ``None``."""
        with self._lock:
            entry = self._tables.get(exchange)
        if entry is None or time.monotonic() - entry[0] >= self._ttl:
            return None
        if not entry[1] and exchange not in self.telemetry:
            return None
        return entry[1]

    def store(self, exchange: str, table: Table) -> Table:
        with self._lock:
            self._tables[exchange] = (time.monotonic(), table)
        return table

    def get(self, exchange: str, read: Callable[[], Table]) -> Table:
        """The cached table, or ``read()`` from the broker (and kept)."""
        table = self.cached(exchange)
        return table if table is not None else self.store(exchange, read())

    def forget(self, exchange: str) -> None:
        """Drop ``exchange``'s table: the next lookup reads the broker."""
        with self._lock:
            self._tables.pop(exchange, None)


def cached_match(channel: Any, cache: BindingCache, exchange: str, routing_key: str) -> list[str]:
    """The queues ``routing_key`` reaches through ``exchange`` by the channel's (cached)
    ``get_table``; on no match, ``[]`` and the table is forgotten, so the caller's fallback
    (Kombu's own ``_lookup``) reads the broker again and handles an undeliverable message."""
    if not exchange:
        return []
    try:
        found = channel.typeof(exchange).lookup(channel.get_table(exchange), exchange,
                                                routing_key, None)
    except KeyError:
        found = ()
    if found:
        return list(found)
    if exchange not in cache.telemetry:
        cache.forget(exchange)
    return []
