"""Worker task events for Flower, sent in batches instead of one publish per event.

Celery buffers a worker's task events (``task-received``, ``task-started``,
``task-succeeded``...) and flushes the buffer on the event loop's next tick, so in practice
each event is its own publish: three per task, about a third of the worker main process's time
in our profiles, and the reason plain Celery drains 35-45 % slower with ``-E`` here. Flower
does not need them within a millisecond: :class:`BatchedEventsConsumer` flushes at most every
:data:`FLUSH_INTERVAL` seconds (or when Celery's buffer limit, 24 events, is reached), as one
``task.multi`` message, which Flower and every Celery event receiver read as a list. Worker
heartbeats and other non-task events are not buffered and leave at once, as before.

Celery buffers task events only when its event hub runs ("XXX This excludes eventlet/gevent,
which should actually buffer", ``celery/worker/consumer/events.py``): a gevent worker sent
each one on its own. Its dispatcher is given the same buffer when the loop starts, flushed by
the worker's timer (a greenlet there).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from celery.worker.consumer import Consumer

FLUSH_INTERVAL = 0.1
"""Seconds a task event may wait for others before the buffer is published."""


class BatchedEventsConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer with task events flushed on a short timer, not on every tick."""

    _event_flush_due: float | None = None

    def on_ready(self) -> None:
        """The loop starts (again after a reconnection, with a new dispatcher)."""
        self._buffer_task_events_when_green()
        super().on_ready()

    def _buffer_task_events_when_green(self) -> None:
        dispatcher = self.event_dispatcher
        if self.hub is None and getattr(self.pool, "is_green", False) and dispatcher:
            dispatcher.buffer_group = frozenset({"task"})
            dispatcher.on_send_buffered = self.on_send_event_buffered

    def on_send_event_buffered(self) -> None:
        """A task event was buffered: only with the hub (Celery) or on a green pool (here),
        so one of the two timers below is there to flush it."""
        now = time.monotonic()
        # A flush already due is not scheduled again, unless it is long overdue: the hub
        # drops its timers when the connection is lost and the loop restarts.
        if self._event_flush_due is None or now > self._event_flush_due + 1.0:
            self._event_flush_due = now + FLUSH_INTERVAL
            if self.hub is not None:
                self.hub.call_later(FLUSH_INTERVAL, self._flush_buffered_events)
            else:
                self.timer.call_after(FLUSH_INTERVAL, self._flush_buffered_events)

    def _flush_buffered_events(self) -> None:
        self._event_flush_due = None
        self._flush_events()

    def shutdown(self) -> Any:
        """Send what is buffered before the events connection closes."""
        with contextlib.suppress(Exception):
            self._flush_events()
        return super().shutdown()
