"""Items gathered by any thread of a process, handed on in batches by a thread of its own.

The shape both per-process writers off the step's path share: the plain events
(:mod:`orchestrator.events.publisher`) and the request trace record
(:mod:`orchestrator.trace.record`). A caller's :meth:`Batcher.add` only appends to a list; the
batch leaves ``interval`` seconds after its first item, from the batcher's thread, so a
step's end and its ack never wait for a socket. Closing (pool-process and worker shutdown)
sends what is held; a process killed outright loses the items of its last interval. At most
``max_held`` items wait (the destination is away): later ones are refused, and the caller
decides what to say about them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """A list of held items, sent with ``send(batch)`` after ``interval`` seconds.

    The thread starts with the first item (a process that never adds one has none: a
    worker's main process forks its pool children before that). ``send`` runs in that
    thread, or in the caller's for :meth:`flush` and :meth:`close`; it must not raise.
    """

    def __init__(self, send: Callable[[list[T]], None], interval: float, *, max_held: int,
                 name: str) -> None:
        self._send = send
        self._interval = interval
        self._max_held = max_held
        self._name = name
        self._pending: list[T] = []
        self._lock = threading.Lock()
        self._batch_started = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def held(self) -> int:
        return len(self._pending)

    def add(self, item: T) -> bool:
        """Hold ``item`` for the next batch; False when ``max_held`` items wait already."""
        with self._lock:
            if len(self._pending) >= self._max_held:
                return False
            self._pending.append(item)
            first = len(self._pending) == 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=self._name)
                self._thread.start()
        if first:
            self._batch_started.set()
        return True

    def _run(self) -> None:
        while not self._closed:
            self._batch_started.wait()
            if self._closed:
                return
            time.sleep(self._interval)
            self.flush()

    def flush(self) -> None:
        """Send every item held now (in the caller's thread)."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._batch_started.clear()
        if batch:
            self._send(batch)

    def close(self) -> None:
        """Send what is held; the thread ends (later items are the caller's to send)."""
        self._closed = True
        self._batch_started.set()  # the thread wakes and ends
        self.flush()
