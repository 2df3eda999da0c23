"""The bench harness's own fairness rules (the bench itself is run by hand, not by tests)."""

from __future__ import annotations

from typing import Any

import pytest
from celery import signals

import orchestrator.correlation  # noqa: F401  (connects the hook the plain side must not pay)
from bench.side import without_publish_hooks


def test_plain_side_publishes_without_hooks_other_apps_connected() -> None:
    calls: list[str] = []

    def record(sender: str | None = None, **_: Any) -> None:
        calls.append(str(sender))

    signals.before_task_publish.connect(record, weak=False)
    try:
        assert signals.before_task_publish.receivers
        with without_publish_hooks():
            signals.before_task_publish.send(sender="plain", headers={})
            signals.after_task_publish.send(sender="plain", headers={})
        signals.before_task_publish.send(sender="orchestrator", headers={})
        assert calls == ["orchestrator"]

        with pytest.raises(RuntimeError), without_publish_hooks():
            raise RuntimeError("a failed publish turn")
        signals.before_task_publish.send(sender="again", headers={})
        assert calls == ["orchestrator", "again"]
    finally:
        signals.before_task_publish.disconnect(record)
