"""The operator console: a small server-rendered web page over the DLQ API and the trace.

``orchestrator console`` serves it (:mod:`orchestrator.cli.console`). Everything it shows or
does goes through :mod:`orchestrator.failures.dead_letter_queues` (counts, list, show, replay,
purge) and :func:`orchestrator.trace.timeline`, the same functions the CLI uses, so the page
and ``orchestrator dlq`` cannot disagree. Tornado (already installed with Flower) renders the
templates, signs the session cookie and checks an XSRF token on every POST; there is no
front-end build step and no JavaScript.
"""
