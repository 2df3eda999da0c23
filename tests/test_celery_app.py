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
