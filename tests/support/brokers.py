"""The brokers the behaviour suite runs against, behind one parametrized fixture."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kombu import Connection

import orchestrator.transports  # noqa: F401  (registers redis-streams:// and nats://)


@dataclass(frozen=True)
class BrokerUnderTest:
    name: str
    url: str


ALL_BROKERS = {
    "amqp": BrokerUnderTest("amqp", "amqp://guest:guest@127.0.0.1:5672//"),
    "redis-streams": BrokerUnderTest("redis-streams", "redis-streams://127.0.0.1:6379/8"),
    "nats": BrokerUnderTest("nats", "nats://127.0.0.1:4222"),
}


def selected_brokers() -> list[BrokerUnderTest]:
    """``ORCHESTRATOR_TEST_BROKERS=amqp,...`` narrows the suite; default: every broker."""
    wanted = os.environ.get("ORCHESTRATOR_TEST_BROKERS")
    if not wanted:
        return list(ALL_BROKERS.values())
    return [ALL_BROKERS[name.strip()] for name in wanted.split(",") if name.strip()]


def reachable(url: str) -> str | None:
    """None when the broker answers, else the error text."""
    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
