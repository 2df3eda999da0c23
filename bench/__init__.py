"""Benchmark harness: plain Celery against the orchestrator, as ratios from one run.

Absolute figures drift on shared machines; ratios taken in one run, with the two sides
alternated, do not (much). ``python -m bench --help`` lists the options, ``bench/README.md``
explains the scenarios and the targets.

This package must stay light to import: the orchestrator's worker imports ``bench.steps``
and the plain worker ``bench.plain_app``, and the plain side must not load the orchestrator.
"""
