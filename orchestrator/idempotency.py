"""Idempotent steps: a step that already ran for a request returns its stored result.

A message can arrive twice: the worker crashed after the side effect but before the ack, or
the same pipeline step was published twice. The key of a step run is derived from the
correlation id and the step name (overridable per step), and the store keeps, per key:

- a *claim* (``SET NX`` with a TTL longer than the step's hard time limit) so two concurrent
  deliveries of the same step never run at once: the second one retries later;
- the *result*, kept for ``ORCHESTRATOR_IDEMPOTENCY_TTL`` seconds, returned to any later
  delivery instead of running the step again.

What this cannot do alone: if a worker dies *during* the side effect, before the result is
stored, the redelivery runs the step again once the claim expires. Steps with external effects
therefore also receive the key (``StepContext.idempotency_key``) to make the effect itself
idempotent, as ``executador_arquivo`` (dedup in the file) and ``executador_webhook``
(``Idempotency-Key`` header) do.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import redis


class IdempotencyStore(Protocol):
    """What the step runtime needs from a store; Redis is the default implementation."""

    def get_result(self, key: str) -> dict[str, Any] | None: ...

    def claim(self, key: str, owner: str, ttl: int) -> bool: ...

    def store_result(self, key: str, result: dict[str, Any], ttl: int) -> None: ...

    def release(self, key: str, owner: str) -> None: ...


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
        self._release = client.register_script(_RELEASE_IF_OWNER)

    @classmethod
    def from_url(cls, url: str) -> RedisIdempotencyStore:
        return cls(redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5))

    def get_result(self, key: str) -> dict[str, Any] | None:
        raw = self._client.get(self.prefix + key + ":result")
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    def claim(self, key: str, owner: str, ttl: int) -> bool:
        """Take the right to run ``key``; False while another delivery holds it.

        The owner is the task id, so a redelivery of the *same* message (after its worker died)
        may take over its own stale claim at once instead of waiting for the TTL.
        """
        name = self.prefix + key + ":claim"
        if self._client.set(name, owner, nx=True, ex=max(ttl, 1)):
            return True
        holder = self._client.get(name)
        if isinstance(holder, bytes):
            holder = holder.decode()
        return holder == owner

    def store_result(self, key: str, result: dict[str, Any], ttl: int) -> None:
        self._client.set(self.prefix + key + ":result", json.dumps(result), ex=max(ttl, 1))

    def release(self, key: str, owner: str) -> None:
        self._release(keys=[self.prefix + key + ":claim"], args=[owner])


def default_idempotency_key(correlation_id: str, step: str, position: int | None = None) -> str:
    """One run per request and step: ``<correlation_id>:<step>``.

    Inside a group (several escavadores of one chord) the step's position is added, so the
    same escavador listed twice in one pipeline runs twice, once per position.
    """
    key = f"{correlation_id}:{step}"
    return key if position is None else f"{key}#{position}"
