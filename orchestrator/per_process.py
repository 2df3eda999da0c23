"""One object per process, made on first use, for what holds sockets or threads.

A prefork child inherits its parent's objects, but not the parent's threads, and the
parent's sockets are not the child's to use: each process makes its own on first use. The
parent's is forgotten, not closed (closing it would close the parent's socket too). Threads
and greenlets of one process share it: made once, under a lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """``make()``'s result for this process (:meth:`get`)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._made: dict[int, T] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        pid = os.getpid()
        found = self._made.get(pid)
        if found is None:
            with self._lock:
                found = self._made.get(pid)
                if found is None:
                    self._made.clear()  # a parent's, inherited across a fork
                    found = self._made[pid] = self._make()
        return found

    def made(self) -> T | None:
        """This process's, if it made one (without making it)."""
        return self._made.get(os.getpid())

    def forget(self) -> T | None:
        """This process's, no longer kept (to be closed by the caller), if it made one."""
        with self._lock:
            return self._made.pop(os.getpid(), None)
