"""Celery settings of the orchestrator, derived from ``ORCHESTRATOR_*`` environment variables.

Loaded by ``orchestrator/celery_app.py`` as a dict of this module's settings. Every value
that matters for safety is fixed here rather than left to Celery's defaults: JSON only (a
pickled message is refused, and dead-lettered by the gate), acks after the work is done, a
requeue when a worker dies, and publisher confirms so a publish that returned is on the broker.
"""

from __future__ import annotations

from orchestrator.result_backend_url import backend_url
from orchestrator.settings import get_settings

_settings = get_settings()

broker_url = _settings.broker_url
# A Redis backend gets the orchestrator's subclass: one round trip per stored result,
# idempotency record included (see orchestrator.result_backend).
result_backend = backend_url(_settings.result_backend)
# One result backend per process, not one per thread: redis-py's pool is thread-safe, and a
# gevent worker runs each task in a new greenlet, where a per-"thread" backend meant a new
# Redis connection (and its handshake) for every step's result.
result_backend_thread_safe = True

# Serialization: JSON only, both ways. Never pickle.
task_serializer = "json"
result_serializer = "json"
event_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# Delivery guarantees: a message leaves its queue only once processed.
task_acks_late = True
task_acks_on_failure = False  # non-step tasks: a failure rejects, the broker dead-letters it
task_reject_on_worker_lost = True
worker_prefetch_multiplier = _settings.prefetch_multiplier
# A pool process that died gets 3 s (Celery: 10 s) to have its result arrive before the task
# is declared lost and its message requeued: the result is in the pipe before the process
# exits, and a long wait only delays the redelivery of a poison message.
worker_lost_wait = 3.0
broker_transport_options = {"confirm_publish": True, **_settings.broker_transport_options}
broker_connection_retry_on_startup = True
broker_connection_timeout = 5.0

# Time limits (per step overridable in the decorator).
task_soft_time_limit = _settings.soft_time_limit
task_time_limit = _settings.time_limit

# Routing: one topic exchange; each step routed to its own queue (see orchestrator.topology).
task_default_exchange = "orchestrator"
task_default_exchange_type = "topic"
task_default_queue = "orchestrator_default"
task_default_routing_key = "orchestrator_default"

# The consumer: a gate in front of the tasks (bad messages go to the DLQ with a reason, never
# dropped) and task events published in batches (orchestrator/worker_consumer.py).
worker_consumer = "orchestrator.worker_consumer:WorkerConsumer"

# Observability: worker task events for Flower (received/started/succeeded/failed). Not the
# STARTED state in the backend, "task-sent" events or extended results: each costs a broker
# or backend round trip (or a bigger write) per task, and Flower shows all of it from the
# worker's events.
worker_send_task_events = True
task_send_sent_event = False
task_track_started = False
result_extended = False
result_expires = _settings.result_expires

# Every log line a task writes carries the pipeline's correlation id.
worker_log_format = "[%(asctime)s: %(levelname)s/%(processName)s] [%(correlation_id)s] %(message)s"
worker_task_log_format = (
    "[%(asctime)s: %(levelname)s/%(processName)s] [%(correlation_id)s] "
    "%(task_name)s[%(task_id)s]: %(message)s"
)
