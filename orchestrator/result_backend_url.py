"""Which result backend Celery loads for a configured URL, decided without importing it.

``celeryconfig`` needs this, and ``celeryconfig`` must stay light: under ``-P gevent``,
gevent's ``patch_all`` inspects every live object while it patches ``threading``, which makes
one of Celery's lazy proxies create Celery's default app, whose loader imports the module named
``celeryconfig``, before ``socket`` and ``select`` are patched. Whatever that import pulls in
(redis-py, Kombu's Redis transport) keeps the unpatched, blocking functions: Kombu's poller then
blocks the whole worker in a real ``select()``, and tasks sit received but never run.
"""

from __future__ import annotations

from urllib.parse import urlsplit

BACKEND_CLASS = "orchestrator.result_backend:StepResultBackend"
REDIS_SCHEMES = frozenset({"redis", "rediss"})


def backend_url(result_backend: str) -> str:
    """``result_backend`` as Celery should load it: Redis URLs get the step backend
    (:class:`orchestrator.result_backend.StepResultBackend`)."""
    scheme = urlsplit(result_backend).scheme.lower()
    if scheme in REDIS_SCHEMES:
        return f"{BACKEND_CLASS}+{result_backend}"
    return result_backend
