"""``orchestrator metrics``: a Prometheus endpoint for queue depths, dead letters and tasks."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from orchestrator.cli.common import console


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
    events = TaskEventMetrics(app, registry).start()
    server, _thread = start_http_server(port, addr=address, registry=registry)
    console.print(f"metrics on http://{address}:{port}/metrics (Ctrl-C stops)")
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stopping.wait()
    events.stop()
    server.shutdown()
