"""The bench's Redis database (results, idempotency records, ledgers): check and tidy.

Between two measurements the keys the previous one left (task results, chord counters,
idempotency records, ledgers) are deleted, so each side starts on an equally empty
database: a Redis that grew by 100,000 keys in the last run must not slow down the next.
Only key patterns the bench itself produces are removed, never the whole database.
"""

from __future__ import annotations

import redis

PATTERNS = ("celery-task-meta-*", "celery-taskset-meta-*", "orchestrator:idem:*", "bench:*")
BATCH = 1000


def check(url: str) -> str | None:
    """None when Redis answers, else the error text."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def tidy(url: str) -> int:
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
