"""The orchestrator core: envelope, topology, correlation, pipelines, failures, observability.

``celery -A orchestrator worker`` finds :data:`app` here.
"""

from orchestrator.celery_app import app

__all__ = ["app"]
