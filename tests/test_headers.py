"""What a retry or a dead letter carries of the message it replaces."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator import headers as message_headers

BROKER_HEADERS = {
    "x-death": [{"reason": "expired", "queue": "celery_delayed_1", "count": 1}],
    "x-first-death-exchange": "celery_delayed_1", "x-first-death-queue": "celery_delayed_1",
    "x-first-death-reason": "expired", "x-delivery-count": 2,
}


def test_a_retry_carries_the_project_headers_and_none_of_the_brokers() -> None:
    mine = {message_headers.CORRELATION_ID: "c", message_headers.FIRST_FAILURE_AT: "t",
            message_headers.REPLAY_ID: "r", "traceparent": "00-ab-cd-01"}
    assert message_headers.carried({**BROKER_HEADERS, **mine, "stray": 1}) == mine
    assert message_headers.carried(None) == {}


@given(st.dictionaries(st.text(max_size=20), st.integers()))
def test_carried_headers_are_always_a_subset_of_the_carried_names(
    headers: dict[str, int],
) -> None:
    assert set(message_headers.carried(headers)) <= message_headers.CARRIED
