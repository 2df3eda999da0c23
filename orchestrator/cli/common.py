"""Helpers shared by the CLI commands: clean one-line errors, JSON output, the console."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import ssl
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click
import redis
from kombu.exceptions import OperationalError
from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console
from rich.markup import escape

from orchestrator.names import UnknownName
from orchestrator.settings import get_settings, redact_url

PIPED_WIDTH = 10_000
"""Output that goes to a pipe or a file is not cut to fit a terminal: Rich would assume 80
columns and shorten names (``executador_we…``), and ``| grep`` would miss them."""

# soft_wrap: never break a line for the terminal width (errors stay one line, names whole).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)

EXIT_FAILED = 1
"""The operation failed: a pipeline failed, a dead letter is not there, an unexpected error."""
EXIT_CONFIG = 2
"""Usage, configuration or a name no step has (as click's own usage errors); a service that
refuses the configured credentials; a ``metrics`` port that is taken."""
EXIT_BROKER = 3
"""A service the command needs cannot be reached: the broker or the result backend."""
EXIT_UNREACHABLE = EXIT_BROKER

EXIT_TIMEOUT = 4
"""``run --wait`` gave up waiting: the pipeline may still finish."""
EXIT_INTERRUPTED = 130
"""Ctrl-C, as shells report it."""

DEBUG_VARIABLE = "ORCHESTRATOR_DEBUG"

BACKEND_TIMEOUT = 3.0
"""Seconds the CLI gives the result backend to accept a connection, and then to answer."""
BACKEND_RETRIES = 2
"""Retries of Celery's reconnection when ``run --wait`` loses the result backend (3 attempts,
the last 1 s after the first)."""
BACKEND_VARIABLE = "ORCHESTRATOR_RESULT_BACKEND"

_CONNECTION_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETUNREACH, errno.ENETDOWN,
})


class ServiceError(Exception):
    """A failure the command has put in words: one line on stderr and its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(text: object) -> str:
    """``text`` on one line: newlines and runs of blanks become one space (httpx, for one,
    ends an HTTP error's message with a line of its own, "For more information check: …")."""
    return " ".join(str(text).split())


def print_error(message: object) -> None:
    """The one line a failure prints: ``error: <message>``, the message taken as text, never
    as Rich markup (``[/x]`` in an exception's message would otherwise crash the print)."""
    err_console.print(f"[red]error:[/red] {escape(one_line(message))}")


def broker_for_humans() -> str:
    return redact_url(get_settings().broker_url)


def print_json(data: Any) -> None:
    """Machine-readable output goes to stdout as plain JSON (no colour, no wrapping)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def redis_failure(what: str, url: str, exc: BaseException, variable: str = BACKEND_VARIABLE,
                  note: str = "") -> ServiceError:
    """``exc``, met talking to the Redis at ``url`` (``what``: "the result backend"), in
    words: a refused login is configuration (exit 2), anything else an unreachable service
    (exit 3). ``note`` says what became of the command ("nothing was sent"). The password
    never shows."""
    shown = redact_url(url)
    reason = str(exc).rstrip(". ") or type(exc).__name__
    said = f"; {note}" if note else ""
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return ServiceError(f"{what} {shown} refused the login: authentication failed "
                            f"({reason}){said}; fix the credentials in {variable}", EXIT_CONFIG)
    return ServiceError(f"cannot reach {what} {shown}: {reason}{said}; start it or fix "
                        f"{variable}", EXIT_UNREACHABLE)


def check_redis(what: str, url: str, variable: str = BACKEND_VARIABLE, *,
                client: redis.Redis | None = None, note: str = "") -> None:
    """One ``PING`` to the Redis at ``url``: no retry, :data:`BACKEND_TIMEOUT` s to connect
    and as long for the answer. Raises :class:`ServiceError` saying what failed."""
    probe = client if client is not None else redis.Redis.from_url(
        url, socket_connect_timeout=BACKEND_TIMEOUT, socket_timeout=BACKEND_TIMEOUT,
        retry=Retry(NoBackoff(), 0))
    try:
        probe.ping()
    except (redis.RedisError, OSError) as exc:
        raise redis_failure(what, url, exc, variable, note) from None
    finally:
        probe.close()


def bound_result_backend(app: Any) -> None:
    """Make the app's Redis result backend give up in bounded time: :data:`BACKEND_TIMEOUT`
    s to connect and as long for an answer, and :data:`BACKEND_RETRIES` + 1 attempts to
    reconnect within about 1 s (Celery's defaults: no connect timeout, 120 s for an answer,
    21 attempts over 20 s). The CLI's own process only (workers keep Celery's patience); call
    it before the backend is first used."""
    options = dict(app.conf.result_backend_transport_options or {})
    options.setdefault("retry_policy", {"max_retries": BACKEND_RETRIES, "interval_start": 0,
                                        "interval_step": 1, "interval_max": 1})
    app.conf.result_backend_transport_options = options
    app.conf.redis_socket_connect_timeout = BACKEND_TIMEOUT
    app.conf.redis_socket_timeout = BACKEND_TIMEOUT


def check_result_backend(app: Any, note: str = "") -> None:
    """Before anything is sent: can the app's result backend (Redis) be used? One attempt,
    in at most 2 × :data:`BACKEND_TIMEOUT` s, with the backend's own connection settings."""
    from celery.backends.redis import RedisBackend, SentinelBackend

    backend = app.backend
    if not isinstance(backend, RedisBackend) or isinstance(backend, SentinelBackend):
        return  # another kind of backend: Celery's own behaviour
    params = {**backend.connparams, "socket_connect_timeout": BACKEND_TIMEOUT,
              "socket_timeout": BACKEND_TIMEOUT, "retry": Retry(NoBackoff(), 0),
              "max_connections": 1}
    client = redis.Redis(connection_pool=backend.ConnectionPool(**params))
    check_redis("the result backend", get_settings().result_backend, client=client,
                note=note)


def lost_backend(exc: BaseException) -> BaseException | None:
    """The Redis error behind ``exc`` if ``exc`` is this process losing the result backend,
    else None. Celery gives up reconnecting with a ``RuntimeError`` caused by it; a step's own
    exception, rebuilt from its stored result, was not raised by redis-py's code."""
    cause = exc.__cause__ if isinstance(exc, RuntimeError) else exc
    if not isinstance(cause, redis.ConnectionError | redis.TimeoutError):
        return None
    trace = cause.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    module = "" if trace is None else str(trace.tb_frame.f_globals.get("__name__", ""))
    return cause if module.split(".")[0] == "redis" else None


def is_connection_error(exc: OSError) -> bool:
    """An ``OSError`` of a network connection (refused, reset, timed out, no route, DNS,
    TLS), not of a file, a port to listen on or a permission."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror | ssl.SSLError):
        return True
    if exc.errno in _CONNECTION_ERRNOS:
        return True
    # asyncio's "Multiple exceptions: [Errno 111] Connect call failed ..." has no errno
    return exc.errno is None and exc.filename is None


@contextlib.contextmanager
def fail_cleanly() -> Iterator[None]:
    """Turn the usual operational failures into one red line and a distinct exit code."""
    try:
        yield
    except (click.ClickException, click.exceptions.Abort):
        raise  # the entry point prints them
    except ServiceError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except UnknownName as exc:
        print_error(exc)
        sys.exit(EXIT_CONFIG)
    except Exception as exc:
        _explain(exc)


def _explain(exc: Exception) -> NoReturn:
    """The one line and the exit code of a failure no command put in words itself."""
    refused = refused_login(exc)
    if refused is not None:
        reason = str(refused).rstrip(". ") or type(refused).__name__
        print_error(f"the broker {broker_for_humans()} refused the login: {reason}; fix the "
                    "credentials in ORCHESTRATOR_BROKER_URL")
        sys.exit(EXIT_CONFIG)
    if isinstance(exc, OSError | OperationalError):
        if isinstance(exc, OSError) and not is_connection_error(exc):
            _unexpected(exc)  # a file, a port: not the broker's doing
        print_error(f"cannot reach the broker {broker_for_humans()}: {exc}")
        sys.exit(EXIT_BROKER)
    if isinstance(exc, KeyError | ValueError | ImportError):
        if isinstance(exc, KeyError) and "transport" not in str(exc).lower():
            _unexpected(exc)
        print_error(f"configuration: {exc}")
        sys.exit(EXIT_CONFIG)
    if type(exc).__name__ == "NotFound":  # a queue the broker does not have (AMQP 404)
        print_error(f"{exc}; the topology is declared when a worker starts, or by "
                    "`orchestrator topology --declare`")
        sys.exit(EXIT_FAILED)
    _unexpected(exc)


def refused_login(exc: BaseException) -> BaseException | None:
    """The broker's "wrong credentials" behind ``exc`` (Kombu wraps it), if that is what it
    is: RabbitMQ's ACCESS_REFUSED, Redis's failed AUTH."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "AccessRefused" or isinstance(
                seen, redis.AuthenticationError | redis.exceptions.NoPermissionError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _unexpected(exc: BaseException) -> NoReturn:
    """Anything else: one line naming it (the traceback with ORCHESTRATOR_DEBUG=1)."""
    if os.environ.get(DEBUG_VARIABLE, "").lower() in ("1", "true", "yes"):
        raise exc
    print_error(f"{type(exc).__name__}: {exc} (set {DEBUG_VARIABLE}=1 for the traceback)")
    sys.exit(EXIT_FAILED)


def check_replay_journal() -> None:
    """A replay records each message it moved in Redis (the idempotency store, by default the
    result backend): checked before the first message moves, and given up within seconds, so
    a Redis that is down is said before anything is replayed (``dlq replay``, the console)."""
    settings = get_settings()
    if settings.idempotency_url:
        check_redis("the idempotency store", settings.idempotency_url,
                    "ORCHESTRATOR_IDEMPOTENCY_URL", note="nothing was replayed")
    else:
        check_redis("the result backend", settings.result_backend, BACKEND_VARIABLE,
                    note="nothing was replayed")
