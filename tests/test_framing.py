"""Decoding what a stream or subject holds never raises, and keeps foreign bytes as they were."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.transports.framing import FOREIGN_FRAME_HEADER, decode_frame

KOMBU_PAYLOAD = {"body": base64.b64encode(b'[[{}], {}, {}]').decode(), "content-encoding": "utf-8",
                 "content-type": "application/json", "headers": {"task": "t", "id": "1"},
                 "properties": {"body_encoding": "base64", "delivery_info": {}}}


def test_a_kombu_payload_passes_through() -> None:
    assert decode_frame(json.dumps(KOMBU_PAYLOAD).encode()) == KOMBU_PAYLOAD


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_decode_to_a_message_kombu_can_open(data: bytes) -> None:
    payload = decode_frame(data)
    encoding = payload["properties"].get("body_encoding")
    body = base64.b64decode(payload["body"]) if encoding == "base64" else payload["body"]
    if FOREIGN_FRAME_HEADER in payload["headers"]:
        assert body == data, "a foreign frame keeps the original bytes"
        assert payload["headers"][FOREIGN_FRAME_HEADER]


@given(st.dictionaries(st.sampled_from(["body", "properties", "headers", "x"]),
                       st.none() | st.integers() | st.text(max_size=5)
                       | st.lists(st.integers(), max_size=2)
                       | st.dictionaries(st.sampled_from(["body_encoding", "delivery_info"]),
                                         st.none() | st.text(max_size=6) | st.integers(),
                                         max_size=2), max_size=4))
def test_json_objects_that_look_like_kombu_never_raise(frame: dict[str, object]) -> None:
    payload = decode_frame(json.dumps(frame).encode())
    assert isinstance(payload["headers"], dict)
    assert isinstance(payload["properties"], dict)
    assert isinstance(payload["properties"].get("delivery_info", {}), dict)
