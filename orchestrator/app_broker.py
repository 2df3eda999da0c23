"""Pointing a Celery app at another broker while the process runs.

Celery caches the app's connection pool and producer pool: changing ``broker_url`` alone
would go on publishing to the old broker. The test suite and the bench run one app against
several brokers in one process, and both re-point it with :func:`point_app_at`.
"""

from __future__ import annotations

from typing import Any


def point_app_at(app: Any, url: str) -> None:
    """Re-point ``app`` at the broker ``url``, dropping pooled connections to the old one."""
    if app.conf.broker_url == url and app.conf.broker_write_url in (None, url):
        return
    app.close()
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None
