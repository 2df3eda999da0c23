"""The Celery application: configured from ``celeryconfig``, with every step module imported.

``celery -A orchestrator ...`` finds :data:`app` through the package. Importing the step
modules here (``ORCHESTRATOR_STEP_MODULES``, default ``tasks``) fills the topology before
``task_queues`` is computed, so a worker started without ``-Q`` consumes every work queue
and no dead-letter queue.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

from celery import Celery, bootsteps

import orchestrator.correlation
import orchestrator.observability.otel  # (tracing per process when OTEL_* asks)
import orchestrator.observability.publish_time  # (stamps each publish's time)
import orchestrator.pools  # (threads, gevent: failures reported)
import orchestrator.transports  # noqa: F401  (registers redis-streams:// and nats://)
from orchestrator.events.publisher import declare_destinations
from orchestrator.settings import get_settings
from orchestrator.steps import load_step_modules, route_step
from orchestrator.topology import topology

logger = logging.getLogger("orchestrator.events")


def settings_of(module: ModuleType) -> dict[str, Any]:
    """The settings a config module defines, as a plain dict.

    Celery wraps a module in an attribute-reading layer that every ``app.conf`` lookup
    walks first, and most keys (Celery's defaults) miss it with an ``AttributeError``:
    that doubled the cost of each of the dozens of lookups in a publish and in a task run.
    What the module imports (modules, functions, classes, ``from __future__`` features) is
    not a setting and is left out.
    """
    return {
        name: value for name, value in vars(module).items()
        if not name.startswith("_") and name.islower() and not callable(value)
        and not isinstance(value, ModuleType) and type(value).__module__ != "__future__"
    }


app = Celery("orchestrator")
app.config_from_object(settings_of(importlib.import_module("celeryconfig")))


class DeclareTopology(bootsteps.StartStopStep):  # type: ignore[misc]
    """Declare exchanges, work queues, DLQs and the event destinations each time the
    consumer (re)connects."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, consumer: Any) -> None:
        topology.declare(consumer.connection)
        try:
            declare_destinations(consumer.connection)
        except Exception as exc:  # events are best effort: the steps run without them
            logger.error("the event destinations could not be declared (%s: %s); step "
                         "results are not published as events until they can be",
                         type(exc).__name__, exc)


load_step_modules(get_settings().step_modules)
app.conf.task_queues = topology.work_queues()
app.conf.task_routes = (route_step,)
app.steps["consumer"].add(DeclareTopology)
