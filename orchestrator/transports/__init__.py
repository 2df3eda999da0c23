"""Kombu transports of this project (Redis Streams, NATS JetStream) and their registration.

Kombu finds a transport by the URL scheme in ``kombu.transport.TRANSPORT_ALIASES``;
:func:`register` adds ours, and importing :mod:`orchestrator.celery_app` calls it, so
``celery -A orchestrator ...``, Flower and the ``orchestrator`` CLI all accept the URLs.
"""

from __future__ import annotations

from kombu import transport as kombu_transport

ALIASES = {
    "redis-streams": "orchestrator.transports.redis_streams:Transport",
    "rediss-streams": "orchestrator.transports.redis_streams:Transport",
    "nats": "orchestrator.transports.nats_jetstream:Transport",
    "tls": "orchestrator.transports.nats_jetstream:Transport",
}


def register() -> None:
    """Make Kombu resolve this project's URL schemes (idempotent)."""
    kombu_transport.TRANSPORT_ALIASES.update(ALIASES)


register()
