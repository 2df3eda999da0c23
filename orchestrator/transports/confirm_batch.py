"""Publishing many messages with confirms, waiting for the confirms once at the end.

A single publish waits for its broker confirm before it returns (``confirm_publish``): one
round trip per message. A batch sends every message first and then collects the confirms,
so the round trips overlap, and still knows, message by message, which ones the broker
confirmed. Each broker has its own way:

- RabbitMQ (py-amqp): the channel is put in confirm mode and its publishes do not wait;
  ``basic.ack`` / ``basic.nack`` arrive with the delivery tags (1, 2, ... in publish order,
  ``multiple`` covering every earlier tag), read until every tag is settled or time is up.
- Redis Streams and NATS JetStream (this project's transports): the channel holds the
  messages it is given (:meth:`start_batch`), then writes them as one Redis pipeline of
  ``XADD``s, or as concurrent JetStream publishes, each with its own reply
  (:meth:`finish_batch`).
- Any other transport: each publish is confirmed as it is made (the slow path, still exact).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from kombu.connection import Connection


class NotConfirmed(Exception):
    """The broker did not confirm a message: it nacked it, or no answer came in time."""


class ConfirmBatch(Protocol):
    """Counts publishes on one channel and tells, at the end, which were confirmed."""

    def published(self) -> int:
        """Note one publish made on the channel; its number (0, 1, ...)."""
        ...

    def settle(self, timeout: float) -> list[BaseException | None]:
        """Wait up to ``timeout`` seconds; the outcome of every publish, in order."""
        ...


class AmqpConfirmBatch:
    """RabbitMQ publisher confirms, collected after the publishes."""

    def __init__(self, connection: Connection, channel: Any) -> None:
        self._connection = connection
        self._channel = channel
        self._count = 0
        self._outcomes: dict[int, BaseException | None] = {}
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)

    def published(self) -> int:
        self._count += 1
        return self._count - 1

    def _settle_tags(self, delivery_tag: int, multiple: bool,
                     outcome: BaseException | None) -> None:
        first = 1 if multiple else delivery_tag
        for tag in range(first, delivery_tag + 1):
            self._outcomes.setdefault(tag, outcome)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle_tags(delivery_tag, multiple, None)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle_tags(delivery_tag, multiple, NotConfirmed("the broker refused it (nack)"))

    def settle(self, timeout: float) -> list[BaseException | None]:
        deadline = time.monotonic() + timeout
        late = NotConfirmed(f"no confirm from the broker within {timeout:g} s")
        while len(self._outcomes) < self._count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self._connection.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
            except Exception as exc:  # the connection broke: what is unsettled stays so
                late = NotConfirmed(f"the connection broke before a confirm: {exc}")
                break
        return [self._outcomes.get(tag, late) for tag in range(1, self._count + 1)]


class ChannelConfirmBatch:
    """This project's transports: the channel holds the messages and writes them at once."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._count = 0
        channel.start_batch()

    def published(self) -> int:
        self._count += 1
        return self._count - 1

    def settle(self, timeout: float) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = self._channel.finish_batch(timeout)
        return outcomes


class EachConfirmedBatch:
    """Any other transport: the publish itself waited for its confirm."""

    def __init__(self) -> None:
        self._count = 0

    def published(self) -> int:
        self._count += 1
        return self._count - 1

    def settle(self, timeout: float) -> list[BaseException | None]:
        return [None] * self._count


def confirm_batch(connection: Connection, channel: Any) -> ConfirmBatch:
    """The batch for ``channel``'s transport (``connection`` opened without
    ``confirm_publish``: the batch does the confirming)."""
    if hasattr(channel, "start_batch"):
        return ChannelConfirmBatch(channel)
    if hasattr(channel, "confirm_select") and hasattr(channel, "events"):
        return AmqpConfirmBatch(connection, channel)
    return EachConfirmedBatch()
