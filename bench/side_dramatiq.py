"""The Dramatiq side: the peer users would pick instead, on the same broker and machine.

It takes part in the scenarios it has an equivalent for (throughput, threaded and publish: a
no-op message per payload; io: the same HTTP request) on RabbitMQ and Redis. On the project's
own Redis Streams URL it uses Dramatiq's Redis broker on the same server (Dramatiq has no
Streams broker); NATS it has no broker for at all. Its worker runs ``--processes 2`` (the
Celery sides' pool size) with ``--threads 8``, Dramatiq's default, as a user would run it.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from bench.config import ENV_REDIS, base_env
from bench.workers import CONCURRENCY, WorkerSpec

THREADS = 8
SCENARIOS = frozenset({"throughput", "threaded", "publish", "io"})
READY_MARK = b"is ready for action."


def dramatiq_url(url: str) -> str | None:
    """The broker URL Dramatiq takes for the bench's ``url``, or None where it has none."""
    parts = urlsplit(url)
    if parts.scheme in ("amqp", "pyamqp"):
        vhost = parts.path[1:] or "/"
        return urlunsplit(("amqp", parts.netloc, "/" + quote(vhost, safe=""), "", ""))
    if parts.scheme in ("redis", "redis-streams"):
        return urlunsplit(("redis", parts.netloc, parts.path, "", ""))
    return None


class DramatiqSide:
    """``noop.send(payload)`` to a Dramatiq worker; the other scenarios are not its."""

    name = "dramatiq"
    scenarios = SCENARIOS

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._url: str | None = None
        self._broker: Any = None
        self._actor: Any = None

    def supports(self, url: str) -> bool:
        return dramatiq_url(url) is not None

    def use_broker(self, url: str) -> None:
        self.close()
        self._url = dramatiq_url(url)
        if self._url is None:
            return
        from bench import dramatiq_app

        self._broker = dramatiq_app.make_broker(self._url)
        self._actor = dramatiq_app.noop
        self._actor.broker = self._broker  # the actor sends through the broker it names
        self._broker.declare_actor(self._actor)

    def worker_spec(self) -> WorkerSpec:
        from bench.dramatiq_app import ENV_DRAMATIQ_BROKER, QUEUE

        assert self._url is not None
        env = base_env()
        env[ENV_DRAMATIQ_BROKER] = self._url
        env[ENV_REDIS] = self._redis_url
        command = (sys.executable, "-m", "dramatiq", "bench.dramatiq_app",
                   "--processes", str(CONCURRENCY), "--threads", str(THREADS),
                   "--queues", QUEUE, "--log-file", "{log}")
        return WorkerSpec(app="bench.dramatiq_app", queues=(QUEUE,), env=env,
                          label="dramatiq", command=command, ready_mark=READY_MARK,
                          ready_count=CONCURRENCY)

    def reset_queues(self) -> None:
        from bench.dramatiq_app import QUEUE

        self._broker.declare_queue(QUEUE)
        self._broker.flush(QUEUE)

    def publishing(self) -> AbstractContextManager[None]:
        return nullcontext()

    def publish(self, payload: dict[str, Any]) -> None:
        self._actor.send(payload)

    def run_chain(self, timeout: float) -> None:
        raise NotImplementedError("the Dramatiq side takes part in throughput and publish")

    def run_fanout(self, timeout: float) -> None:
        raise NotImplementedError("the Dramatiq side takes part in throughput and publish")

    def dead_lettered(self) -> int | None:
        return None

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
            self._broker = None
