"""The request timeline record behind ``orchestrator trace`` (not OpenTelemetry, which is
:mod:`orchestrator.observability.otel`).

What each request went through, step by step and attempt by attempt, kept in Redis by the
processes that saw it (:mod:`.record`, written from :mod:`.hooks`) and read back, with the
broker's own dead letters, by :func:`timeline` (:mod:`.timeline`; shapes in :mod:`.model`).
"""

from __future__ import annotations

from orchestrator.trace.model import Timeline, TraceEvent
from orchestrator.trace.timeline import timeline

__all__ = ["Timeline", "TraceEvent", "timeline"]
