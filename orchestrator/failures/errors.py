"""Which errors are worth retrying.

A step fails either *retryably* (the world may be different in a moment: a timeout, a refused
connection, HTTP 5xx or 429) or *finally* (retrying cannot help: a validation error, HTTP 4xx,
or the step said so with :class:`FinalError`). Final errors skip the retries and go straight
to the dead-letter queue; retryable ones go there only once the retries are exhausted.
"""

from __future__ import annotations

import socket

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from orchestrator.envelope import EnvelopeError


class FinalError(Exception):
    """Raise from a step to say: do not retry this, dead-letter it now."""


class RetryableError(Exception):
    """Raise from a step to ask for a retry whatever the error classification says."""


class StepInProgress(Exception):
    """Another delivery of the same step (same idempotency key) is running right now."""


class MessageRefused(Exception):
    """A message the worker cannot even hand to a task (bad body, unknown task, too big)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


RETRYABLE_TYPES: tuple[type[BaseException], ...] = (
    RetryableError,
    TimeoutError,
    ConnectionError,
    socket.timeout,
    httpx.TimeoutException,
    httpx.TransportError,
    OperationalError,
    SoftTimeLimitExceeded,
)
FINAL_TYPES: tuple[type[BaseException], ...] = (
    FinalError,
    EnvelopeError,
    ValidationError,
    TypeError,
    KeyError,
    ValueError,
)


def is_retryable(exc: BaseException) -> bool:
    """Classify ``exc``: True to retry, False to dead-letter at once.

    HTTP status errors are judged by their status: 5xx and 429 are retryable, other 4xx final.
    Unknown exception types are retried: a transient fault we did not foresee is more common
    than a permanent one, and the retry limit still bounds the cost.
    """
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status >= 500 or status == 429
    if isinstance(exc, RETRYABLE_TYPES):
        return True
    return not isinstance(exc, FINAL_TYPES)
