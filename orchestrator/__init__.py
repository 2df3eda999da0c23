"""The orchestrator core: envelope, topology, correlation, pipelines, failures, observability.

``celery -A orchestrator worker`` finds :data:`app` here. It is loaded on first access (PEP 562)
so that ``orchestrator`` subcommands can report a configuration error in one line instead of
failing while Python imports the package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from orchestrator.celery_app import app

        return app
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
