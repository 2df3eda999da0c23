"""Pointing a Celery app at another broker while the process runs, and asking if one answers.

Celery caches the app's connection pool and producer pool: changing ``broker_url`` alone
would go on publishing to the old broker. The test suite and the bench run one app against
several brokers in one process, and both re-point it with :func:`point_app_at` after asking
:func:`broker_error` whether the broker is there.
"""

from __future__ import annotations

from typing import Any

from kombu.connection import Connection


def broker_scheme(broker_url: Any) -> str:
    """The transport scheme of a broker URL, as Kombu reads it: the first URL of a failover
    list (``a;b`` or a list), without a ``+`` suffix (``amqp+ssl``); "" when there is none.
    Topology routing, the event sinks and the AsyncAPI document all decide by it."""
    first = broker_url[0] if isinstance(broker_url, list | tuple) else broker_url
    text = str(first or "").split(";", 1)[0]
    if "://" not in text:
        return ""
    return text.split("://", 1)[0].split("+", 1)[0]


def point_app_at(app: Any, url: str) -> None:
    """Re-point ``app`` at the broker ``url``, dropping pooled connections to the old one."""
    if app.conf.broker_url == url and app.conf.broker_write_url in (None, url):
        return
    app.close()
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None


def broker_error(url: str, timeout: float = 3.0) -> str | None:
    """None when the broker at ``url`` answers (two quick tries), else what went wrong."""
    try:
        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
