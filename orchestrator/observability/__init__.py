"""Observability beyond Flower: Prometheus metrics for queues, dead letters and tasks."""
