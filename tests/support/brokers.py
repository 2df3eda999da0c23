"""The brokers the behaviour suite runs against, behind one parametrized fixture."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass

import orchestrator.transports  # noqa: F401  (registers redis-streams:// and nats://)
from orchestrator.app_broker import broker_error


@dataclass(frozen=True)
class BrokerUnderTest:
    name: str
    url: str


TEST_VHOST = f"orchestrator-tests-{uuid.uuid4().hex[:8]}"
"""This run's own RabbitMQ vhost: whatever the default vhost holds (queues a user's run
declared with other arguments, an earlier run's leftovers) cannot touch the suite."""

AMQP_URL = os.environ.get("ORCHESTRATOR_TEST_AMQP_URL",
                          f"amqp://guest:guest@127.0.0.1:5672/{TEST_VHOST}")

EMBEDDED = "embedded"
"""The URL of a broker the suite starts itself (see :mod:`tests.support.servers`); set
``ORCHESTRATOR_TEST_REDIS_STREAMS_URL`` / ``ORCHESTRATOR_TEST_NATS_URL`` to use another."""

ALL_BROKERS = {
    "amqp": BrokerUnderTest("amqp", AMQP_URL),
    "redis-streams": BrokerUnderTest(
        "redis-streams", os.environ.get("ORCHESTRATOR_TEST_REDIS_STREAMS_URL", EMBEDDED)),
    "nats": BrokerUnderTest("nats", os.environ.get("ORCHESTRATOR_TEST_NATS_URL", EMBEDDED)),
}

MACHINE_URLS = {
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
    "redis-streams": "redis-streams://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
}
"""Where a user's run on this machine would put its queues, with the default settings."""


def selected_brokers() -> list[BrokerUnderTest]:
    """``ORCHESTRATOR_TEST_BROKERS=amqp,...`` narrows the suite; default: every broker."""
    wanted = os.environ.get("ORCHESTRATOR_TEST_BROKERS")
    if not wanted:
        return list(ALL_BROKERS.values())
    return [ALL_BROKERS[name.strip()] for name in wanted.split(",") if name.strip()]


def reachable(url: str) -> str | None:
    """None when the broker answers, else the error text."""
    return broker_error(url)


def create_test_vhost() -> str | None:
    """Create :data:`TEST_VHOST` with ``rabbitmqctl`` (None when done, else why not).

    Not needed when ``ORCHESTRATOR_TEST_AMQP_URL`` names a vhost that exists already."""
    if "ORCHESTRATOR_TEST_AMQP_URL" in os.environ:
        return None
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not on PATH: set ORCHESTRATOR_TEST_AMQP_URL to a test vhost"
    for command in (["add_vhost", TEST_VHOST],
                    ["set_permissions", "-p", TEST_VHOST, "guest", ".*", ".*", ".*"]):
        done = subprocess.run(["rabbitmqctl", "-q", *command], capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            return f"rabbitmqctl {' '.join(command)}: {done.stderr.strip() or done.stdout}"
    return None


def delete_test_vhost() -> None:
    if "ORCHESTRATOR_TEST_AMQP_URL" not in os.environ and shutil.which("rabbitmqctl"):
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", TEST_VHOST], capture_output=True,
                       timeout=120, check=False)
