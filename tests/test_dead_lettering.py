"""The dead-letter contract the transports share with RabbitMQ: route, limit, x-death."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.failures.dead_letter import describe
from orchestrator.topology import QueueSpec
from orchestrator.transports.dead_lettering import (
    DEATH_FIELDS,
    DeadLetterRoute,
    death_headers,
    runs_at_delivery_limit,
)


@given(st.integers(min_value=0, max_value=50), st.integers(min_value=0, max_value=60))
def test_a_message_dies_on_the_return_after_its_last_allowed_delivery(
    limit: int, returns: int,
) -> None:
    route = DeadLetterRoute.from_arguments({"x-delivery-limit": limit})
    assert route.past_limit(returns) == (returns >= runs_at_delivery_limit(limit))
    assert not DeadLetterRoute.from_arguments(None).past_limit(returns)


def test_the_route_is_written_and_read_with_rabbitmqs_argument_names() -> None:
    arguments = QueueSpec("escavador_x", "escavador", 5).queue_arguments()
    route = DeadLetterRoute.from_arguments(arguments)
    assert route == DeadLetterRoute("escavador_x.dlx", "escavador_x.dlq", 5)
    assert {**route.arguments(), "x-queue-type": "quorum"} == arguments


def test_a_transports_death_has_rabbitmqs_fields() -> None:
    headers = death_headers(reason="rejected", queue="q", exchange="", routing_keys=["q"],
                            returns=2, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    [death] = headers["x-death"]
    assert set(death) == DEATH_FIELDS
    assert headers["x-delivery-count"] == 2
    assert describe(headers, delivery_limit=4)["last_failure_at"] == "2026-01-01T00:00:00+00:00"
