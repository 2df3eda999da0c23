"""``ORCHESTRATOR_*`` settings and URL redaction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.settings import Settings, get_settings, redact_url


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MAX_RETRIES", "9")
    monkeypatch.setenv("ORCHESTRATOR_RETRY_BACKOFF", "0.25")
    monkeypatch.setenv("ORCHESTRATOR_RETRY_JITTER", "false")
    monkeypatch.setenv("ORCHESTRATOR_DELIVERY_LIMIT", "11")
    monkeypatch.setenv("ORCHESTRATOR_MAX_MESSAGE_BYTES", "2048")
    monkeypatch.setenv("ORCHESTRATOR_STEP_MODULES", '["a", "b.c"]')
    monkeypatch.setenv("ORCHESTRATOR_BROKER_URL", "redis-streams://127.0.0.1:6379/0")
    config = Settings()
    assert config.max_retries == 9
    assert config.retry_backoff == 0.25
    assert config.retry_jitter is False
    assert config.delivery_limit == 11
    assert config.max_message_bytes == 2048
    assert config.step_modules == ["a", "b.c"]
    assert config.broker_url == "redis-streams://127.0.0.1:6379/0"


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_RETRIES", "RETRY_BACKOFF", "DELIVERY_LIMIT", "WEBHOOK_URL"):
        monkeypatch.delenv("ORCHESTRATOR_" + name, raising=False)
    config = Settings()
    assert config.max_retries == 3
    assert config.retry_backoff == 2.0
    assert config.delivery_limit == 5
    assert config.webhook_url is None


def test_settings_refuse_invalid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MAX_RETRIES", "many")
    with pytest.raises(ValidationError, match="max_retries"):
        Settings()


def test_process_settings_come_from_the_conftest_environment() -> None:
    assert get_settings().max_retries == 2
    assert get_settings().delivery_limit == 3


@pytest.mark.parametrize(
    ("url", "user"),
    [
        ("amqp://u:secret@h:5672//", "u"),
        ("amqp://guest:guest@127.0.0.1:5672//", "guest"),
        ("redis://:secret@h:6379/0", ""),
        ("amqp://u:p%40ss:secret@h//", "u"),
        ("amqp://u:se@cret@h:5672/vhost", "u"),
    ],
)
def test_redact_url_hides_the_password(url: str, user: str) -> None:
    redacted = redact_url(url)
    assert "secret" not in redacted
    assert ":guest@" not in redacted
    assert f"//{user}:***@h" in redacted or f"//{user}:***@127.0.0.1" in redacted


def test_redact_url_keeps_the_rest() -> None:
    assert redact_url("amqp://u:secret@h:5672//") == "amqp://u:***@h:5672//"


@pytest.mark.parametrize(
    "url", ["amqp://h:5672//", "amqp://user@h//", "redis://127.0.0.1:6379/0", "nats://n:4222",
            "memory://", "foo://x"],
)
def test_redact_url_leaves_password_less_urls_alone(url: str) -> None:
    assert redact_url(url) == url


def test_redact_url_of_garbage_does_not_leak_it() -> None:
    assert redact_url("http://[::1") == "<unparseable url>"
