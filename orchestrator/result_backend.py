"""Celery's Redis result backend, with a step's idempotency record in the same round trip.

Storing a task result with Celery's stock Redis backend takes two round trips (a ``GET`` to
refuse overwriting a ``SUCCESS``, then ``SETEX`` + ``PUBLISH``), and a step then takes a third
to store its idempotency record and drop its claim. :class:`StepResultBackend` does all of it
in one Lua script: the step runtime leaves the record with
:data:`~orchestrator.idempotency.pending_records` and the backend writes it together with the
result Celery stores right after the step.

Publishing subscribes to nothing (:meth:`StepResultBackend.on_task_call`); waiting does.

It keeps Celery's semantics: the same keys, the same meta document, ``PUBLISH`` for waiting
callers, the same expiry for failures, no overwrite of a stored ``SUCCESS``, retries on
connection errors. A record the backend did not write (a task that ignores its result) is
written on its own after the task (``PendingRecords.settle``), so none is ever lost.

Selected in ``celeryconfig.py`` for ``redis://`` and ``rediss://`` result backends through
Celery's ``<backend class>+<url>`` form; any other backend URL is used as given.
"""

from __future__ import annotations

import json
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

from orchestrator.idempotency import RedisIdempotencyStore, pending_records
from orchestrator.result_backend_url import BACKEND_CLASS, REDIS_SCHEMES, backend_url

__all__ = ["BACKEND_CLASS", "REDIS_SCHEMES", "StepResultBackend", "backend_url"]


# KEYS: meta key [, idempotency result key, idempotency claim key].
# ARGV: meta, meta ttl (0: none) [, owner, idempotency record, record ttl].
_STORE_RESULT = """
if #KEYS == 3 then
    redis.call('set', KEYS[2], ARGV[4], 'EX', ARGV[5])
    if redis.call('get', KEYS[3]) == ARGV[3] then redis.call('del', KEYS[3]) end
end
local current = redis.call('get', KEYS[1])
if current then
    local ok, decoded = pcall(cjson.decode, current)
    if ok and type(decoded) == 'table' and decoded['status'] == 'SUCCESS' then return 0 end
end
if tonumber(ARGV[2]) > 0 then
    redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
    redis.call('set', KEYS[1], ARGV[1])
end
redis.call('publish', KEYS[1], ARGV[1])
return 1
"""


class StepResultBackend(RedisBackend):  # type: ignore[misc]
    """:class:`~celery.backends.redis.RedisBackend` storing a result in one round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._store_script = self.client.register_script(_STORE_RESULT)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        if self.compression:  # a compressed meta cannot be read by the script: stock path,
            # and the idempotency record is left for after_return to write on its own
            return super()._store_result(task_id, result, state, traceback=traceback,
                                         request=request, **kwargs)
        meta = self._get_result_meta(result=result, state=state, traceback=traceback,
                                     request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state,
                                    task_id=task_id)
        expires = self.failure_expires if state == states.FAILURE else self.expires
        keys = [self.get_key_for_task(task_id)]
        args: list[Any] = [value, int(expires or 0)]
        write = pending_records.take(task_id)
        if write is not None:
            keys.extend(RedisIdempotencyStore.keys_for(write.key))
            args.extend([write.owner, json.dumps(write.result), max(write.ttl, 1)])
        try:
            self.ensure(self._run_store_script, (keys, args))
        except BaseException:
            if write is not None:  # not written: settled after the task, on its own
                pending_records.put_back(task_id, write)
            raise
        return result

    def _run_store_script(self, keys: list[str], args: list[Any]) -> None:
        self._store_script(keys=keys, args=args)

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Subscribe to nothing when a task is published.

        Celery's Redis backend subscribes to the task's result channel at publish, in case
        the caller waits. A pipeline's caller waits on its *last* step, not on the first one
        published, so that subscription (and the unsubscribe when its ``AsyncResult`` is
        collected) was a pub/sub round trip or two per pipeline that nobody read. A caller
        that does wait subscribes in ``get()``, which then reads the stored result: a result
        published before the subscription is not missed."""
