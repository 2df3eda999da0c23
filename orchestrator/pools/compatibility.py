"""Which pools each transport runs on, checked when a worker starts.

Prefork and threads work on every broker. gevent works on RabbitMQ and Redis Streams, whose
clients do their I/O through the sockets gevent patches. The NATS JetStream transport cannot:
nats-py runs on an asyncio loop in a thread of its own, and under gevent that thread is a
greenlet of the worker's one OS thread, where asyncio finds another loop already running and
the consumer never connects. Running the loop on a native thread instead would leave nats-py
with gevent's patched sockets, DNS resolver and locks used from a thread that has no gevent
hub running: nothing that can be made dependable. So a gevent worker on NATS refuses to start,
in one line, instead of retrying a connection that can never succeed.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import signals
from kombu.utils.compat import detect_environment

from orchestrator.app_broker import broker_scheme

EXIT_UNSUPPORTED_POOL = 2
"""The worker's exit code for a pool its broker cannot run (a configuration error)."""

GREEN_POOLS_UNSUPPORTED = frozenset({"nats"})
"""Transports whose client cannot run under a green pool (gevent or eventlet)."""


def unsupported_pool_reason(broker_url: Any, environment: str | None = None) -> str | None:
    """Why a worker for ``broker_url`` cannot run in this process's concurrency environment
    (``detect_environment()``: "default", "gevent" or "eventlet"); None when it can."""
    environment = environment or detect_environment()
    scheme = broker_scheme(broker_url)
    if environment != "default" and scheme in GREEN_POOLS_UNSUPPORTED:
        return (f"the {environment} pool does not work with the {scheme}:// transport (its "
                f"client runs on an asyncio loop thread); use -P threads for I/O-bound steps")
    return None


def refuse_unsupported_pool(sender: Any = None, **_: Any) -> None:
    """Stop a worker whose pool its broker cannot run, before it connects."""
    app = getattr(sender, "app", None)
    if app is None:
        return
    reason = unsupported_pool_reason(app.conf.broker_url)
    if reason:
        print(f"orchestrator worker: {reason}", file=sys.stderr)
        sys.exit(EXIT_UNSUPPORTED_POOL)


signals.worker_init.connect(refuse_unsupported_pool, weak=False)
