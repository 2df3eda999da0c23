"""The Celery application: configured from ``celeryconfig``, with every step module imported.

``celery -A orchestrator ...`` finds :data:`app` through the package. Importing the step
modules here (``ORCHESTRATOR_STEP_MODULES``, default ``tasks``) fills the topology before
``task_queues`` is computed, so a worker started without ``-Q`` consumes every work queue
and no dead-letter queue.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any

from celery import Celery, bootsteps

import orchestrator.correlation
import orchestrator.transports  # noqa: F401  (registers redis-streams:// and nats://)
from orchestrator.settings import get_settings
from orchestrator.steps import route_step
from orchestrator.topology import topology


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


def import_step_modules(packages: list[str]) -> list[str]:
    """Import every module under each package (or a single module); returns their names."""
    imported: list[str] = []
    for name in packages:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise ImportError(
                f"ORCHESTRATOR_STEP_MODULES names {name!r}, which cannot be imported ({exc}); "
                "is it installed or on PYTHONPATH?"
            ) from exc
        imported.append(name)
        search_path = getattr(module, "__path__", None)
        if search_path is None:
            continue
        for info in pkgutil.walk_packages(search_path, prefix=name + "."):
            importlib.import_module(info.name)
            imported.append(info.name)
    return imported


class DeclareTopology(bootsteps.StartStopStep):  # type: ignore[misc]
    """Declare exchanges, work queues and DLQs each time the consumer (re)connects."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, consumer: Any) -> None:
        topology.declare(consumer.connection)


import_step_modules(get_settings().step_modules)
app.conf.task_queues = topology.work_queues()
app.conf.task_routes = (route_step,)
app.steps["consumer"].add(DeclareTopology)
