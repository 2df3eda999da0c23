"""What a gevent worker's loop and its tasks share (``orchestrator/pools/gevent.py``,
``celeryconfig.py``): found by draining a backlog on ``-P gevent``, where RabbitMQ ran ten steps
a second whatever the concurrency, and every step opened a new Redis connection."""

from __future__ import annotations

import threading
from typing import Any

from orchestrator.celery_app import app


def test_the_green_loop_reads_the_event_connection_without_waiting() -> None:
    """Celery's ``synloop`` drains the task-event connection after every message it takes in,
    waiting up to 0.1 s for a frame that never comes; it now reads only what is there."""
    from celery.worker import loops

    import orchestrator.pools.gevent  # noqa: F401  (what -P gevent loads)

    waits: list[Any] = []

    class EventConnection:
        def drain_events(self, timeout: Any = None) -> None:
            waits.append(timeout)
            raise TimeoutError()

    loops._quick_drain(EventConnection())
    assert waits == [0.0]


def test_threads_share_the_result_backend() -> None:
    """A backend per thread was one per greenlet under gevent (a new one for every task),
    with its own Redis connection pool: a connection and its handshake per stored result."""
    from_a_thread: list[Any] = []
    thread = threading.Thread(target=lambda: from_a_thread.append(app.backend))
    thread.start()
    thread.join()
    assert from_a_thread == [app.backend]
