"""The gate's verdict on any delivery, without a broker."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.failures.gate import judge

GATE_REASONS = {"oversized", "content_type_refused", "not_a_task", "unknown_task",
                "malformed_body"}


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


bodies = (st.binary(max_size=200) | st.text(max_size=200)
          | json_values.map(lambda value: json.dumps(value).encode()) | st.none())


header_maps = st.none() | st.dictionaries(
    st.sampled_from(["task", "id", "x_correlation_id", "other"]),
    st.text(max_size=20) | st.integers() | st.lists(st.integers(), max_size=2), max_size=4)


content_types = st.sampled_from([None, "", "application/json", "application/json; charset=utf-8",
                                 "APPLICATION/JSON", "application/x-python-serialize",
                                 "text/plain"]) | st.text(max_size=20)


@given(bodies, content_types, header_maps, st.integers(min_value=0, max_value=300))
def test_the_gate_judges_any_delivery_without_raising(
    body: Any, content_type: str | None, headers: dict[str, Any] | None, max_bytes: int,
) -> None:
    verdict = judge(body, content_type, headers, {"escavador_eco"}.__contains__, max_bytes)
    if verdict is not None:
        assert verdict.reason in GATE_REASONS
        return
    assert isinstance(headers, dict) and headers["task"] == "escavador_eco"
    decoded = json.loads(body)
    assert isinstance(decoded, list) and len(decoded) == 3


def test_the_gate_lets_a_task_message_through() -> None:
    body = json.dumps([[{}], {}, {}]).encode()
    headers = {"task": "escavador_eco", "id": "1"}
    assert judge(body, "application/json", headers, {"escavador_eco"}.__contains__, 1000) is None
    refused = judge(body, "application/json", headers, set().__contains__, 1000)
    assert refused is not None and refused.reason == "unknown_task"
