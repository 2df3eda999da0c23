"""``orchestrator metrics``: a Prometheus endpoint for queue depths, dead letters and tasks."""

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
def metrics_command(port: int, address: str) -> None:
    """Serve Prometheus metrics: queue and DLQ depths per step, task outcomes and runtimes."""
    from orchestrator.celery_app import app
    from orchestrator.observability.metrics import QueueDepthCollector, TaskEventMetrics
    from orchestrator.topology import topology

    registry = CollectorRegistry()
    registry.register(QueueDepthCollector(app, topology))
    events = TaskEventMetrics(app, registry)
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
