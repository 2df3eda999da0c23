"""The dead-letter contract: RabbitMQ's, reproduced by this project's transports.

A work queue names where its dead letters go in RabbitMQ's queue arguments; a broker moves a
message there when it is rejected without requeue or returned past the delivery limit, and
stamps it with an ``x-death`` entry. RabbitMQ does this itself; the Redis Streams and NATS
transports do it with the same arguments, the same arithmetic and the same ``x-death`` fields,
so the code reading dead letters (``orchestrator.failures``) sees one format on every broker.
This module is the one place those names and rules are written; the transports import nothing
else of the project.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEAD_LETTER_EXCHANGE = "x-dead-letter-exchange"
DEAD_LETTER_ROUTING_KEY = "x-dead-letter-routing-key"
DELIVERY_LIMIT = "x-delivery-limit"

DEATHS = "x-death"
"""The header listing a message's deaths, newest first (RabbitMQ's)."""
DELIVERY_COUNT = "x-delivery-count"
"""How often a message was returned to the queue it is read from (quorum queues' header)."""

REASON_REJECTED = "rejected"
REASON_DELIVERY_LIMIT = "delivery_limit"

DEATH_FIELDS = frozenset({"count", "reason", "queue", "time", "exchange", "routing-keys"})
"""The fields of an ``x-death`` entry, as RabbitMQ writes them (without a message TTL)."""


@dataclass(frozen=True)
class DeadLetterRoute:
    """Where a queue's dead letters go and when a returned message becomes one."""

    exchange: str | None = None
    routing_key: str | None = None
    delivery_limit: int | None = None

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any] | None) -> DeadLetterRoute:
        arguments = arguments or {}
        limit = arguments.get(DELIVERY_LIMIT)
        return cls(exchange=arguments.get(DEAD_LETTER_EXCHANGE),
                   routing_key=arguments.get(DEAD_LETTER_ROUTING_KEY),
                   delivery_limit=int(limit) if limit is not None else None)

    def arguments(self) -> dict[str, Any]:
        """The queue arguments that declare this route."""
        named = {DEAD_LETTER_EXCHANGE: self.exchange, DEAD_LETTER_ROUTING_KEY: self.routing_key,
                 DELIVERY_LIMIT: self.delivery_limit}
        return {name: value for name, value in named.items() if value is not None}

    def past_limit(self, returns: int) -> bool:
        """True once a message was returned more often than the limit allows.

        With a limit of N, a message is delivered N + 1 times; the return after the last of
        them dead-letters it (as a RabbitMQ quorum queue does).
        """
        return self.delivery_limit is not None and returns > self.delivery_limit


def runs_at_delivery_limit(delivery_limit: int) -> int:
    """How often the step ran when its message was dead-lettered for the delivery limit."""
    return delivery_limit + 1


def death_headers(*, reason: str, queue: str, exchange: str, routing_keys: Sequence[str],
                  returns: int, now: datetime | None = None) -> dict[str, Any]:
    """The headers a transport adds to a message it dead-letters from ``queue``.

    ``exchange`` and ``routing_keys`` are where the message was published, as in RabbitMQ's
    entry (the transports publish steps through the anonymous exchange, by queue name).
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    entry = {"count": 1, "reason": reason, "queue": queue, "time": moment.isoformat(),
             "exchange": exchange, "routing-keys": list(routing_keys)}
    return {DEATHS: [entry], DELIVERY_COUNT: returns}
