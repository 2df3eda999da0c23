"""The baseline side: plain Celery tasks from :mod:`bench.plain_app`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from celery import chain, chord

from bench import plain_app
from bench.config import WITHOUT_FAILOVER, base_env, plain_env
from bench.side import FANOUT_WIDTH, CanvasFailed, without_publish_hooks
from bench.workers import WorkerSpec
from orchestrator.app_broker import point_app_at
from orchestrator.pipeline import forget_pending

CHAIN_LENGTH = 4


class PlainSide:
    """Plain ``apply_async``, ``chain`` and ``chord`` of one no-op task on a classic queue."""

    name = "plain"
    scenarios = WITHOUT_FAILOVER

    def __init__(self, redis_url: str, task_events: bool, quorum: bool = False) -> None:
        self._redis_url = redis_url
        self._task_events = task_events
        self._quorum = quorum
        self._app = plain_app.app
        self._broker_url = str(self._app.conf.broker_url)

    def use_broker(self, url: str) -> None:
        point_app_at(self._app, url)
        self._broker_url = url

    def worker_spec(self) -> WorkerSpec:
        env = base_env()
        env.update(plain_env(self._broker_url, self._redis_url, self._task_events,
                             self._quorum))
        return WorkerSpec(app="bench.plain_app", queues=(plain_app.QUEUE,), env=env,
                          label="plain")

    def reset_queues(self) -> None:
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=3)
            with connection.channel() as channel:
                # Deleted, not purged: a queue of the other type (--plain-quorum or not)
                # cannot be redeclared.
                queue = plain_app.work_queue().bind(channel)
                queue.delete()
                queue.declare()
                queue.purge()  # virtual transports delete only bindings this process made

    def publishing(self) -> AbstractContextManager[None]:
        """Without the orchestrator's publish hook, which a plain deployment does not have."""
        return without_publish_hooks()

    def publish(self, payload: dict[str, Any]) -> None:
        plain_app.noop.apply_async((payload,))

    def run_chain(self, timeout: float) -> None:
        links = [plain_app.noop.s({})] + [plain_app.noop.s() for _ in range(CHAIN_LENGTH - 1)]
        result = chain(*links).apply_async()
        try:
            value = result.get(timeout=timeout)
        except Exception:
            forget_pending(result)
            raise
        if not isinstance(value, dict):
            raise CanvasFailed(f"plain chain returned {value!r}")

    def run_fanout(self, timeout: float) -> None:
        header = [plain_app.noop.s({}) for _ in range(FANOUT_WIDTH)]
        result = chord(header)(plain_app.noop.s())
        try:
            value = result.get(timeout=timeout)
        except Exception:
            forget_pending(result)
            raise
        if value != {"inputs": FANOUT_WIDTH}:
            raise CanvasFailed(f"plain chord body saw {value!r}")

    def dead_lettered(self) -> int | None:
        return None

    def close(self) -> None:
        self._app.close()
