"""The consumer every orchestrator worker runs (``worker_consumer`` in ``celeryconfig.py``).

Celery's consumer with two additions, each in its own module: the message gate that
dead-letters bad input (:mod:`orchestrator.failures.gate`) and task events published in
batches (:mod:`orchestrator.observability.task_events`).
"""

from __future__ import annotations

from orchestrator.failures.gate import GatedConsumer
from orchestrator.observability.task_events import BatchedEventsConsumer


class WorkerConsumer(BatchedEventsConsumer, GatedConsumer):
    """Gate in front of the tasks; task events batched for Flower."""
