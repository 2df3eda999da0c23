"""Whether the step runtime already dead-lettered a failure, told across the pool boundary.

The runtime runs in a pool process; the ack or reject is decided in the worker's main
process from the exception the pool hands back (pickled, under prefork). The runtime marks
the exceptions it dead-lettered itself; an exception keeps its instance attributes through
pickling, so the mark arrives with it. A failure without the mark happened outside the
runtime's reach, and its message must not be acked: see
:class:`~orchestrator.step_request.StepRequest`. Losing the mark (an exception class with a
``__reduce__`` of its own) costs a second copy in the DLQ, never a lost message.
"""

from __future__ import annotations

from typing import TypeVar

_MARK = "_orchestrator_dead_lettered"

E = TypeVar("E", bound=BaseException)


def mark_dead_lettered(exc: E) -> E:
    """Mark ``exc`` as dead-lettered by the runtime; returns it, for ``raise``."""
    setattr(exc, _MARK, True)
    return exc


def was_dead_lettered(exc: BaseException | None) -> bool:
    """True when the runtime dead-lettered the message that failed with ``exc``."""
    return bool(getattr(exc, _MARK, False))
