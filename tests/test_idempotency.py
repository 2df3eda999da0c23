"""The deferred idempotency record: one owner, written once, never lost."""

from __future__ import annotations

from typing import Any

from orchestrator.idempotency import IdempotencyWrite, PendingRecords


class RecordingStore:
    def __init__(self) -> None:
        self.written: list[tuple[str, str, Any, int]] = []

    def store_and_release(self, key: str, owner: str, result: Any, ttl: int) -> None:
        self.written.append((key, owner, result, ttl))


WRITE = IdempotencyWrite("corr:escavador_x", "task-1", {"ok": 1}, 30)


def test_a_record_that_cannot_ride_along_is_written_at_once() -> None:
    records, store = PendingRecords(), RecordingStore()
    records.keep("task-1", WRITE, store, rides_along=False)  # type: ignore[arg-type]
    assert store.written == [("corr:escavador_x", "task-1", {"ok": 1}, 30)]
    assert records.take("task-1") is None


def test_a_record_the_result_store_took_is_not_written_twice() -> None:
    records, store = PendingRecords(), RecordingStore()
    records.keep("task-1", WRITE, store, rides_along=True)  # type: ignore[arg-type]
    assert store.written == []
    assert records.take("task-1") == WRITE  # the backend writes it with the result
    records.settle("task-1", store)  # type: ignore[arg-type]
    assert store.written == []


def test_a_record_nobody_wrote_is_settled_after_the_task() -> None:
    records, store = PendingRecords(), RecordingStore()
    records.keep("task-1", WRITE, store, rides_along=True)  # type: ignore[arg-type]
    taken = records.take("task-1")
    assert taken is not None
    records.put_back("task-1", taken)  # the result store failed
    records.settle("task-1", store)  # type: ignore[arg-type]
    records.settle("task-1", store)  # type: ignore[arg-type]
    assert store.written == [("corr:escavador_x", "task-1", {"ok": 1}, 30)]
