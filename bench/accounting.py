"""Exactly-once accounting: every processed message leaves one mark in Redis.

A step (either side) that finds :data:`FLAG` in its payload runs one Lua script:
``SADD bench:<run>:seen <id>``, and if the id was already there ``INCR bench:<run>:dups``.
One round trip per message, the same on both sides, so it costs both sides alike.
The bench process then reads ``SCARD`` (processed) and the counter (duplicates):
``lost = N - SCARD``. Only the throughput and backlog scenarios set the flag.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import httpx
import redis

from bench.config import DEFAULT_REDIS_URL, ENV_REDIS

FLAG = "bench_account"

_RECORD = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
    return redis.call('INCR', KEYS[2])
end
return 0
"""

_script: tuple[int, Any] | None = None
"""(pid, registered script): re-created after a fork, one connection per pool process."""


def seen_key(run_id: str) -> str:
    return f"bench:{run_id}:seen"


def dups_key(run_id: str) -> str:
    return f"bench:{run_id}:dups"


def flagged_payload(run_id: str, number: int) -> dict[str, Any]:
    """The payload of message ``number`` of an accounted run."""
    return {FLAG: {"run": run_id, "id": str(number)}}


def _record_script() -> Any:
    global _script
    pid = os.getpid()
    if _script is None or _script[0] != pid:
        client = redis.Redis.from_url(os.environ.get(ENV_REDIS, DEFAULT_REDIS_URL),
                                      socket_timeout=10, socket_connect_timeout=5)
        _script = (pid, client.register_script(_RECORD))
    return _script[1]


def record(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Count this processing if the payload is flagged; return it without the flag.

    The flag is stripped so that a later step of the same canvas never counts the same
    message again (which would read as a duplicate).
    """
    fetch_if_asked(payload)  # the I/O-bound scenario's request, before it counts
    mark = payload.get(FLAG)
    if not isinstance(mark, Mapping):
        return dict(payload)
    run_id, message_id = str(mark["run"]), str(mark["id"])
    _record_script()(keys=[seen_key(run_id), dups_key(run_id)], args=[message_id])
    return {key: value for key, value in payload.items() if key != FLAG}


class Ledger:
    """The bench process's view of one accounted run."""

    def __init__(self, url: str, run_id: str) -> None:
        self.run_id = run_id
        self._client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

    def processed(self) -> int:
        """Distinct messages processed so far."""
        return int(self._client.scard(seen_key(self.run_id)))

    def duplicates(self) -> int:
        """Messages processed more than once (each extra processing counts one)."""
        value = self._client.get(dups_key(self.run_id))
        return int(value) if value is not None else 0

    def clear(self) -> None:
        self._client.delete(seen_key(self.run_id), dups_key(self.run_id))

    def close(self) -> None:
        self._client.close()


HOLD = "_bench_hold_first"
"""Payload key of the failover scenario: ``{"key": ..., "seconds": ...}``."""


def hold_first_delivery(payload: Mapping[str, Any]) -> None:
    """The first delivery of a payload that asks for it sleeps (its worker is killed meanwhile,
    ``failover`` scenario); any later delivery goes on at once. The first one marks the key."""
    hold = payload.get(HOLD)
    if not isinstance(hold, Mapping):
        return
    client = redis.Redis.from_url(os.environ.get(ENV_REDIS, DEFAULT_REDIS_URL),
                                  socket_timeout=10, socket_connect_timeout=5)
    try:
        first = client.set(str(hold["key"]), "started", nx=True, ex=3600)
    finally:
        client.close()
    if first:
        time.sleep(float(hold["seconds"]))


def started_key(run_id: str) -> str:
    return f"bench:started:{run_id}"


FETCH = "_bench_fetch"
"""Payload key of the I/O-bound scenario: the URL each message's step requests once."""

_http_client: tuple[int, httpx.Client] | None = None
"""(pid, client), like :data:`_script`: the bench's sides must not import the orchestrator
(``orchestrator.per_process`` does the same there)."""


def fetch_if_asked(payload: Mapping[str, Any]) -> None:
    """One real HTTP GET when the payload names a URL (an escavador's fetch), on a client
    kept per process and shared by its threads or greenlets (keep-alive, as the bundled
    escavadores' ``tasks/http_client.py``): a client per thread was one per greenlet under
    gevent, whose making (an SSL context) cost more than the request."""
    url = payload.get(FETCH)
    if not isinstance(url, str):
        return
    global _http_client
    pid = os.getpid()
    if _http_client is None or _http_client[0] != pid:
        _http_client = (pid, httpx.Client(timeout=30))  # a race makes one client too many
    _http_client[1].get(url).raise_for_status()
