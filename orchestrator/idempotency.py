"""Idempotent steps: a step that already ran for a request returns its stored result.

A message can arrive twice: the worker crashed after the side effect but before the ack, or
the same pipeline step was published twice. The key of a step run is derived from the
correlation id and the step name (overridable per step), and the store keeps, per key:

- a *claim* (``SET NX`` with a TTL longer than the step's hard time limit) so two concurrent
  deliveries of the same step never run at once: the second one retries later;
- the *result*, kept for ``ORCHESTRATOR_IDEMPOTENCY_TTL`` seconds, returned to any later
  delivery instead of running the step again.

One round trip before the step (a Lua script); the one after it is shared with the task's
result when the result backend is Redis (:mod:`orchestrator.result_backend`).

What this cannot do alone: if a worker dies *during* the side effect, before the result is
stored, the redelivery (same task id, so it takes over its own claim) runs the step again.
Steps with external effects therefore also receive the key (``StepContext.idempotency_key``)
to make the effect itself idempotent, as ``executador_arquivo`` (dedup in the file) and
``executador_webhook`` (``Idempotency-Key`` header) do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import redis


@dataclass(frozen=True)
class IdempotencyWrite:
    """A step's result, to be kept under its idempotency key, and the claim to drop."""

    key: str
    owner: str
    result: dict[str, Any]
    ttl: int


class PendingRecords:
    """The idempotency records of finished steps that are not written yet, by task id.

    The one owner of a deferred record. A step's runtime hands its record over with
    :meth:`keep`: written at once, or, when the result backend is the same Redis, kept here
    so that :class:`~orchestrator.result_backend.StepResultBackend` writes it in the round
    trip that stores the task's result (:meth:`take`, then :meth:`put_back` if that store
    failed). :meth:`settle`, run after the task returned, writes what is still here (a task
    whose result is ignored, a compressed backend, a failed store): no record is lost.
    One object per process; a task id runs once at a time in it, so a dict is enough (also
    under the threads pool).
    """

    def __init__(self) -> None:
        self._pending: dict[str, IdempotencyWrite] = {}

    def keep(self, task_id: str, write: IdempotencyWrite, store: IdempotencyStore, *,
             rides_along: bool) -> None:
        """Write ``write`` now, or keep it for the result store when it ``rides_along``."""
        if rides_along:
            self._pending[task_id] = write
        else:
            store.store_and_release(write.key, write.owner, write.result, ttl=write.ttl)

    def take(self, task_id: str) -> IdempotencyWrite | None:
        """The record of ``task_id`` that is not written yet, no longer kept here."""
        return self._pending.pop(task_id, None)

    def put_back(self, task_id: str, write: IdempotencyWrite) -> None:
        """A record the result store took and could not write."""
        self._pending[task_id] = write

    def settle(self, task_id: str, store: IdempotencyStore) -> None:
        """Write the record of ``task_id`` if nobody did."""
        write = self.take(task_id)
        if write is not None:
            store.store_and_release(write.key, write.owner, write.result, ttl=write.ttl)


pending_records = PendingRecords()
"""This process's records waiting to ride along with a task result."""


class Busy:
    """Another delivery holds the claim on this key right now."""


BUSY = Busy()


class IdempotencyStore(Protocol):
    """What the step runtime needs from a store; Redis is the default implementation.

    Two calls per step run (one before, one after) keep the store off the hot path's budget.
    """

    def claim_or_result(self, key: str, owner: str, ttl: int) -> dict[str, Any] | Busy | None:
        """The stored result if the step already ran; :data:`BUSY` if another delivery runs
        it now; ``None`` once the claim is ours."""

    def store_and_release(self, key: str, owner: str, result: dict[str, Any],
                          ttl: int) -> None:
        """Keep ``result`` for ``ttl`` seconds and drop our claim."""

    def release(self, key: str, owner: str) -> None:
        """Drop our claim without a result (the step failed)."""


# KEYS: result key, claim key. ARGV: owner, claim ttl.
_CLAIM_OR_RESULT = """
local stored = redis.call('get', KEYS[1])
if stored then return {1, stored} end
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return {0, ''} end
if redis.call('get', KEYS[2]) == ARGV[1] then return {0, ''} end
return {2, ''}
"""

# KEYS: result key, claim key. ARGV: owner, result, result ttl.
_STORE_AND_RELEASE = """
redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
if redis.call('get', KEYS[2]) == ARGV[1] then redis.call('del', KEYS[2]) end
return 1
"""

_RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisIdempotencyStore:
    """Keys ``orchestrator:idem:<key>:result`` and ``...:claim`` in one Redis database."""

    prefix = "orchestrator:idem:"

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._claim_or_result = client.register_script(_CLAIM_OR_RESULT)
        self._store_and_release = client.register_script(_STORE_AND_RELEASE)
        self._release = client.register_script(_RELEASE_IF_OWNER)

    @classmethod
    def from_url(cls, url: str) -> RedisIdempotencyStore:
        return cls(redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5))

    @classmethod
    def keys_for(cls, key: str) -> list[str]:
        """The result key and the claim key of an idempotency key (result backend too)."""
        return [cls.prefix + key + ":result", cls.prefix + key + ":claim"]

    def _keys(self, key: str) -> list[str]:
        return self.keys_for(key)

    def claim_or_result(self, key: str, owner: str, ttl: int) -> dict[str, Any] | Busy | None:
        """One round trip. The owner is the task id, so a redelivery of the *same* message
        (after its worker died) takes over its own stale claim at once."""
        status, stored = self._claim_or_result(keys=self._keys(key), args=[owner, max(ttl, 1)])
        if int(status) == 1:
            value: dict[str, Any] = json.loads(stored)
            return value
        return BUSY if int(status) == 2 else None

    def store_and_release(self, key: str, owner: str, result: dict[str, Any],
                          ttl: int) -> None:
        self._store_and_release(keys=self._keys(key),
                                args=[owner, json.dumps(result), max(ttl, 1)])

    def release(self, key: str, owner: str) -> None:
        self._release(keys=[self._keys(key)[1]], args=[owner])


def default_idempotency_key(correlation_id: str, step: str, position: int | None = None) -> str:
    """One run per request and step: ``<correlation_id>:<step>``.

    Inside a group (several escavadores of one chord) the step's position is added, so the
    same escavador listed twice in one pipeline runs twice, once per position.
    """
    key = f"{correlation_id}:{step}"
    return key if position is None else f"{key}#{position}"
