"""The request trace record: each request's events, appended to a bounded list in Redis.

One list per correlation id, ``orchestrator:trace:<correlation_id>``, of compact JSON events
(the fields of :class:`~orchestrator.trace.model.TraceEvent`, ``at`` as epoch seconds). It
lives in Redis (the idempotency store, by default the result backend), not in a process, so
it answers on every broker and after workers and Flower restarted. Every write keeps it
bounded: ``LTRIM`` to the newest ``ORCHESTRATOR_TRACE_MAX_EVENTS`` and ``EXPIRE`` after
``ORCHESTRATOR_TRACE_RETENTION`` seconds.

Writing costs a step no round trip: :func:`record` appends a dict to this process's batch,
and the batch leaves from a thread every :data:`FLUSH_INTERVAL` seconds as one command (a
script doing ``RPUSH`` + ``LTRIM`` + ``EXPIRE`` per request touched). That also holds in
a worker's main process (the gate and the received events are written there): nothing in it
waits for Redis. What this gives up, like the plain events: a process killed outright (SIGKILL, the
hard time limit) loses the events of its last interval; a shutdown, a pool process's exit and
the interpreter's exit (``atexit``, for the CLI and scripts) send them. With Redis away the
process holds :data:`MAX_HELD_EVENTS` at most, and a batch that cannot be written is dropped
with a warning: the steps never fail or wait because of their trace.
"""

from __future__ import annotations

import atexit
import json
import logging
import time
from typing import Any

import redis
from celery import signals

from orchestrator.batching import Batcher
from orchestrator.per_process import PerProcess
from orchestrator.settings import Settings, get_settings

logger = logging.getLogger("orchestrator.trace")

KEY_PREFIX = "orchestrator:trace:"
FLUSH_INTERVAL = 0.05
"""Seconds an event waits for others before the batch is written."""
MAX_HELD_EVENTS = 10_000
"""Events a process holds at most while Redis is away; later ones are dropped (logged)."""

_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
"""Made once: ``json.dumps`` with arguments builds an encoder for every event."""

KINDS = ("published", "received", "started", "retried", "succeeded", "failed",
         "dead_lettered", "replayed")


def trace_key(correlation_id: str) -> str:
    return KEY_PREFIX + correlation_id


def redis_url(settings: Settings) -> str:
    """Where the record lives: the idempotency store (by default the result backend)."""
    return settings.idempotency_url or settings.result_backend


# KEYS: one trace key per request. ARGV: max events, retention, then per key the number of
# its events and the events. One command for the whole batch: a pipeline of RPUSH, LTRIM and
# EXPIRE per request cost the writing process ~3 commands of redis-py's packing per event
# (a third of a publishing loop's rate when every publish is a request of its own).
_APPEND = """
local max_events, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
local at = 3
for _, key in ipairs(KEYS) do
  local count = tonumber(ARGV[at])
  for position = at + 1, at + count do redis.call('rpush', key, ARGV[position]) end
  at = at + count + 1
  redis.call('ltrim', key, -max_events, -1)
  redis.call('expire', key, retention)
end
return #KEYS
"""


class TraceRecorder:
    """This process's batch of trace events and its Redis client (made on first write)."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.trace_enabled
        self._url = redis_url(settings)
        self._max_events = settings.trace_max_events
        self._retention = settings.trace_retention
        self._client: redis.Redis | None = None
        self._append: Any = None
        self._batch: Batcher[dict[str, Any]] = Batcher(
            self._write, FLUSH_INTERVAL, max_held=MAX_HELD_EVENTS, name="orchestrator-trace")
        self._dropped = 0

    def add(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._batch.closed:  # after close (a late event at shutdown): written at once
            self._write([event])
        elif not self._batch.add(event):
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                logger.warning("%d trace events dropped: %d wait already for Redis",
                               self._dropped, self._batch.held())

    def _script(self) -> Any:
        if self._append is None:
            self._client = redis.Redis.from_url(self._url, socket_timeout=5,
                                                socket_connect_timeout=3)
            self._append = self._client.register_script(_APPEND)
        return self._append

    def _write(self, batch: list[dict[str, Any]]) -> None:
        by_key: dict[str, list[str]] = {}
        for event in batch:
            by_key.setdefault(trace_key(event["correlation_id"]), []).append(
                _ENCODER.encode(event))
        args: list[Any] = [self._max_events, self._retention]
        for values in by_key.values():
            args.append(len(values))
            args.extend(values)
        try:
            self._script()(keys=list(by_key), args=args)
        except Exception as exc:  # Redis away: these are lost, the steps go on
            logger.warning("%d trace events were not written: %s: %s", len(batch),
                           type(exc).__name__, exc)
            self._client = self._append = None

    def flush(self) -> None:
        self._batch.flush()

    def close(self) -> None:
        self._batch.close()


_recorder: PerProcess[TraceRecorder] = PerProcess(lambda: TraceRecorder(get_settings()))


def recorder() -> TraceRecorder:
    """This process's recorder (a forked child makes its own: the parent's socket and
    thread are not its to use)."""
    return _recorder.get()


def record(kind: str, correlation_id: str | None, *, at: float | None = None,
           **fields: Any) -> None:
    """Add one event of request ``correlation_id`` to this process's next batch.

    ``at``: when it happened (epoch seconds; default now). ``fields`` are
    :class:`~orchestrator.trace.model.TraceEvent` fields; None values are left out. Never
    raises and never waits: the caller is a step, a worker's main process or a publisher."""
    if not correlation_id:
        return
    try:
        target = recorder()
        if not target.enabled:
            return
        event: dict[str, Any] = {"kind": kind, "at": time.time() if at is None else at,
                                 "correlation_id": correlation_id}
        for name, value in fields.items():
            if value is not None:
                event[name] = value
        target.add(event)
    except Exception as exc:  # the trace must never break the path it watches
        logger.warning("trace event %s of %s not recorded: %s: %s", kind, correlation_id,
                       type(exc).__name__, exc)


def flush() -> None:
    """Write what this process holds now (tests, and callers about to exit)."""
    found = _recorder.made()
    if found is not None:
        found.flush()


def close_recorder(**_: Any) -> None:
    """Send what this process still holds (worker, pool-process and interpreter exit)."""
    found = _recorder.forget()
    if found is not None:
        found.close()


def read_events(correlation_id: str, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """The stored events of one request, in the order they were written."""
    own = client is None
    reader = client if client is not None else redis.Redis.from_url(
        redis_url(get_settings()), socket_timeout=5, socket_connect_timeout=3)
    try:
        raw = reader.lrange(trace_key(correlation_id), 0, -1)
    finally:
        if own:
            reader.close()
    events = []
    for item in raw:
        try:
            decoded = json.loads(item)
        except ValueError:
            continue
        if isinstance(decoded, dict):
            events.append(decoded)
    return events


signals.worker_process_shutdown.connect(close_recorder, weak=False)
signals.worker_shutdown.connect(close_recorder, weak=False)
atexit.register(close_recorder)
