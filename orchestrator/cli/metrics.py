"""``orchestrator metrics``: a Prometheus endpoint for queues, dead letters and steps."""

from __future__ import annotations

import errno
import signal
import threading
from types import FrameType

import click
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from orchestrator.cli.common import EXIT_CONFIG, ServiceError, console


@click.command("metrics")
@click.option("--port", default=9808, show_default=True, help="HTTP port of /metrics.")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--dead-letters-read", default=1000, show_default=True,
              type=click.IntRange(min=0),
              help="Dead letters read per DLQ to count reasons; the rest count as 'unread'.")
def metrics_command(port: int, address: str, dead_letters_read: int) -> None:
    """Serve Prometheus metrics: queue and DLQ depths, oldest ages and consumers per step,
    dead letters by reason, task outcomes, queue waits and run times."""
    from orchestrator.celery_app import app
    from orchestrator.observability.dead_letter_census import DeadLetterCensus
    from orchestrator.observability.metrics import (
        QueueDepthCollector,
        StartLog,
        TaskEventMetrics,
    )
    from orchestrator.topology import topology

    registry = CollectorRegistry()
    starts = StartLog()
    registry.register(QueueDepthCollector(app, topology, starts,
                                          DeadLetterCensus(limit=dead_letters_read)))
    events = TaskEventMetrics(app, registry, starts)
    # The port first: taken, it is said at once, before any broker connection is made.
    try:
        server, _thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ServiceError(f"port {port} on {address} is in use: pick another with --port",
                               EXIT_CONFIG) from None
        raise ServiceError(f"cannot listen on {address} port {port}: "
                           f"{exc.strerror or exc}: pick another --address or --port",
                           EXIT_CONFIG) from None
    events.start()
    console.print(f"metrics on http://{address}:{port}/metrics (Ctrl-C stops)")
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stopping.wait()
    events.stop()
    server.shutdown()
