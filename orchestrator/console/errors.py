"""A failure behind a console page, in the words and HTTP status an operator should see.

The same readings as the CLI's one-line errors (:mod:`orchestrator.cli.common`): a broker
that cannot be reached or refuses the login, a Redis that is down, a dead letter or a queue
that is not there. The page names the service with its password hidden and never shows a
traceback (the console's log has it, for the unexpected ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from kombu.exceptions import OperationalError

from orchestrator.cli.common import (
    EXIT_CONFIG,
    ServiceError,
    broker_for_humans,
    is_connection_error,
    one_line,
    redis_failure,
    refused_login,
)
from orchestrator.failures.dead_letter_queues import DeadLetterNotFound
from orchestrator.names import UnknownName
from orchestrator.settings import get_settings


@dataclass(frozen=True)
class PageError:
    """What the error page says, and with which status."""

    status: int
    title: str
    message: str
    expected: bool = True
    """False for a failure nobody put in words: the console logs its traceback."""


def explain(exc: BaseException) -> PageError:
    """``exc``, raised while a page talked to the broker, a DLQ or Redis, for the page."""
    if isinstance(exc, DeadLetterNotFound):
        return PageError(404, "Not found", f"{one_line(exc)}: it was replayed or purged "
                         "already, or the id is wrong")
    if isinstance(exc, UnknownName):
        return PageError(404, "Unknown queue", one_line(exc))
    if isinstance(exc, ServiceError):
        status = 502 if exc.exit_code == EXIT_CONFIG else 503
        return PageError(status, "Service unavailable", one_line(exc))
    refused = refused_login(exc)
    if refused is not None:
        reason = one_line(refused).rstrip(". ") or type(refused).__name__
        return PageError(502, "Broker refused the login",
                         f"the broker {broker_for_humans()} refused the login: {reason}; fix "
                         "the credentials in ORCHESTRATOR_BROKER_URL")
    if isinstance(exc, redis.RedisError):
        settings = get_settings()
        url = settings.idempotency_url or settings.result_backend
        return PageError(503, "Redis unavailable",
                         one_line(redis_failure("the result backend", url, exc)))
    if isinstance(exc, OperationalError) or (isinstance(exc, OSError)
                                              and is_connection_error(exc)):
        return PageError(503, "Broker unavailable",
                         f"cannot reach the broker {broker_for_humans()}: {one_line(exc)}; "
                         "start it or fix ORCHESTRATOR_BROKER_URL, then reload this page")
    if type(exc).__name__ == "NotFound":  # a DLQ the broker does not have (AMQP 404)
        return PageError(404, "Queue not declared",
                         f"{one_line(exc)}; the topology is declared when a worker starts, or "
                         "by `orchestrator topology --declare`")
    return PageError(500, "Unexpected error",
                     f"{type(exc).__name__}: {one_line(exc)} (the console's log has the "
                     "traceback)", expected=False)
