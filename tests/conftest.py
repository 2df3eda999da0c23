"""Shared fixtures: the broker under test, one shared worker per broker, a local feed server.

The environment is fixed in :func:`pytest_configure`, before any test module is imported (and
with it the configured app, whose settings are read once), so the test process (the
orchestrator side) and the worker processes it starts share one configuration. Nothing
imported here reads the settings.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.app_broker import point_app_at
from orchestrator.devmode.embedded_broker import EmbeddedBroker
from orchestrator.devmode.feed_server import SampleFeedServer
from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.topology import topology
from tests.support.brokers import (
    EMBEDDED,
    BrokerUnderTest,
    create_test_vhost,
    delete_test_vhost,
    reachable,
    selected_brokers,
)
from tests.support.net import free_port
from tests.support.servers import NatsServer
from tests.support.workers import WorkerProcess, worker_env

SHARED_WORKER_MODULES = '["tasks", "tests.steps"]'
"""What the shared worker loads: it must not consume the crash tests' queues."""
CRASH_TEST_MODULES = '["tasks", "tests.steps", "tests.crash_steps", "tests.traced_steps"]'
"""What the test process (the orchestrator side) and the crash tests' workers load (the
tracing tests' steps too: their in-process worker runs them)."""
CRASH_QUEUES = ["escavador_lento", "escavador_crash", "escavador_teimoso"]

TEST_DATA_DIR = Path(tempfile.mkdtemp(prefix="orchestrator-tests-"))
TEST_ENVIRONMENT = {
    "ORCHESTRATOR_RESULT_BACKEND": os.environ.get("ORCHESTRATOR_TEST_RESULT_BACKEND",
                                                  "redis://127.0.0.1:6379/15"),
    "ORCHESTRATOR_STEP_MODULES": CRASH_TEST_MODULES,
    "ORCHESTRATOR_MAX_RETRIES": "2",
    "ORCHESTRATOR_RETRY_BACKOFF": "1",
    "ORCHESTRATOR_RETRY_JITTER": "false",
    "ORCHESTRATOR_DELIVERY_LIMIT": "3",
    "ORCHESTRATOR_SOFT_TIME_LIMIT": "20",
    "ORCHESTRATOR_TIME_LIMIT": "30",
    "ORCHESTRATOR_DATA_DIR": str(TEST_DATA_DIR / "data"),
    # Small enough for tests/test_events.py to fill; every process declares the same bound.
    "ORCHESTRATOR_EVENTS_MAX_LEN": "50",
    # The transports' own failover timings (Streams consumer_ttl, NATS ack_wait: 4 s) are
    # what the crash tests run with: the shipped defaults, not a faster test setting.
    "ORCHESTRATOR_BROKER_TRANSPORT_OPTIONS": "{}",
}


def pytest_configure(config: pytest.Config) -> None:
    os.environ.update(TEST_ENVIRONMENT)


def configured_app() -> Any:
    """The orchestrator's Celery app, built from :data:`TEST_ENVIRONMENT`."""
    from orchestrator.celery_app import app

    return app


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHARED_POOL = os.environ.get("ORCHESTRATOR_TEST_POOL", "prefork")
"""The shared worker's pool: ``ORCHESTRATOR_TEST_POOL=threads`` (or gevent) runs the suites
that use it on an I/O-bound pool (``.ci/run`` does, for the behaviour and failure suites)."""


def _unreachable(what: str, error: str) -> None:
    message = f"{what} is not reachable ({error})"
    if IN_CI:
        pytest.fail(message + " — under CI a missing broker is a failure, not a skip")
    pytest.skip(message)


def use_broker(url: str) -> None:
    """Point the test process's Celery app at ``url`` (closing pools made for another one)."""
    point_app_at(configured_app(), url)


@pytest.fixture(scope="session")
def result_backend() -> str:
    url = os.environ["ORCHESTRATOR_RESULT_BACKEND"]
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:
        _unreachable(f"Redis result backend {url}", str(exc))
    return url


@pytest.fixture(scope="session")
def amqp_vhost() -> Iterator[None]:
    """The suite's own RabbitMQ vhost, created for the run and removed after it."""
    error = create_test_vhost()
    if error:
        _unreachable("a RabbitMQ test vhost", error)
    yield
    use_broker("memory://")  # close this process's connections into the vhost first
    delete_test_vhost()


@pytest.fixture(scope="session")
def embedded_valkey() -> Iterator[str]:
    """The suite's own Valkey: the Redis Streams broker's URL."""
    server = EmbeddedBroker(TEST_DATA_DIR / "valkey").start()
    yield f"redis-streams://127.0.0.1:{server.port}/0"
    use_broker("memory://")
    server.stop()


@pytest.fixture(scope="session")
def embedded_nats() -> Iterator[str]:
    """The suite's own JetStream-enabled nats-server."""
    server = NatsServer(TEST_DATA_DIR / "nats", free_port())
    server.start()
    yield f"nats://127.0.0.1:{server.port}"
    use_broker("memory://")
    server.stop()


EMBEDDED_FIXTURES = {"redis-streams": "embedded_valkey", "nats": "embedded_nats"}


def broker_url(request: pytest.FixtureRequest, configured: BrokerUnderTest) -> str:
    """The URL the suite uses for ``configured``: its own vhost or its own server."""
    if configured.name == "amqp":
        request.getfixturevalue("amqp_vhost")
    if configured.url == EMBEDDED:
        return str(request.getfixturevalue(EMBEDDED_FIXTURES[configured.name]))
    return configured.url


@pytest.fixture(scope="session", params=selected_brokers(), ids=lambda b: b.name)
def broker(request: pytest.FixtureRequest, result_backend: str) -> BrokerUnderTest:
    under_test = BrokerUnderTest(request.param.name, broker_url(request, request.param))
    error = reachable(under_test.url)
    if error:
        _unreachable(f"broker {under_test.name} ({under_test.url})", error)
    use_broker(under_test.url)
    return under_test


def reset_queues() -> None:
    """Empty every work queue and DLQ so a test run starts from a known state."""
    with configured_app().connection_for_write() as connection:
        topology.declare(connection)
        for spec in topology:
            for name in (spec.name, spec.dlq):
                channel = connection.channel()
                try:
                    channel.queue_purge(name)
                finally:
                    channel.close()


@pytest.fixture(scope="session")
def log_dir() -> Path:
    path = TEST_DATA_DIR / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def feed_server() -> Iterator[SampleFeedServer]:
    """The bundled sample YouTube feed over real HTTP on 127.0.0.1."""
    server = SampleFeedServer().start()
    os.environ["ORCHESTRATOR_YOUTUBE_BASE_URL"] = server.base_url
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker(broker: BrokerUnderTest, log_dir: Path,
           feed_server: SampleFeedServer) -> Iterator[WorkerProcess]:
    """One worker consuming every work queue, shared by the tests of one broker."""
    use_broker(broker.url)
    reset_queues()
    env = worker_env(broker.url, {"ORCHESTRATOR_STEP_MODULES": SHARED_WORKER_MODULES,
                                  "ORCHESTRATOR_YOUTUBE_BASE_URL": feed_server.base_url})
    process = WorkerProcess(env, log_dir, name=f"shared-{broker.name}", pool=SHARED_POOL,
                            concurrency=2 if SHARED_POOL == "prefork" else 8)
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture()
def on_broker(broker: BrokerUnderTest) -> BrokerUnderTest:
    use_broker(broker.url)
    return broker


def dead_letters_for(correlation_id: str, queue: str | None = None) -> list[dlq.DeadLetter]:
    return [letter for letter in dlq.list_dead_letters(queue)
            if letter.summary()["correlation_id"] == correlation_id]
