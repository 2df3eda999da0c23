"""The configured Celery app."""

from __future__ import annotations

from orchestrator.celery_app import app


def test_the_app_reads_every_setting_of_celeryconfig_and_no_import() -> None:
    import celeryconfig
    from orchestrator.celery_app import settings_of

    settings = settings_of(celeryconfig)
    assert {"broker_url", "result_backend", "task_acks_late", "accept_content",
            "worker_consumer"} <= set(settings)
    assert not {"annotations", "backend_url", "get_settings"} & set(settings)
    for name, value in settings.items():
        if name not in app.conf.changes:  # re-pointed at runtime by the broker tests
            assert app.conf[name] == value, name
    assert app.conf.accept_content == ["json"]  # never pickle


def test_celeryconfig_imports_no_network_client() -> None:
    """gevent's monkey patching makes Celery import ``celeryconfig`` before ``socket`` and
    ``select`` are patched: a client imported then keeps the blocking functions, and a gevent
    worker hangs in a real ``select()`` (orchestrator/result_backend_url.py)."""
    import subprocess
    import sys

    probe = ("import sys, celeryconfig; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('redis', 'amqp', 'nats', 'kombu', 'celery', 'httpx')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
