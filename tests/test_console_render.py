"""What the console puts on a page of a dead letter's parts: printable, bounded, exact kinds."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.console.render import (
    MAX_SHOWN_CHARS,
    age,
    printable,
    shown_body,
    shown_json,
    shown_text,
)


def test_a_json_body_is_indented() -> None:
    shown = shown_body(json.dumps({"a": [1, "é"]}).encode())
    assert shown.kind == "json" and '"a": [' in shown.text and "é" in shown.text
    assert not shown.cut


def test_a_text_body_is_text_and_control_characters_are_escapes() -> None:
    shown = shown_body("línea\x00\x1b[31m\nnext\u2028".encode())
    assert shown.kind == "text"
    assert shown.text == "línea\\x00\\x1b[31m\nnext\\u2028"


def test_bytes_that_are_not_utf8_are_written_as_escapes() -> None:
    shown = shown_body(b"<b>\xff\xfe ok")
    assert shown.kind == "bytes" and shown.text == "<b>\\xff\\xfe ok"
    assert shown.size == 8 and "not UTF-8" in shown.label


def test_a_large_body_is_cut_and_says_so() -> None:
    shown = shown_body(b"x" * (MAX_SHOWN_CHARS + 10))
    assert shown.cut and len(shown.text) == MAX_SHOWN_CHARS and shown.size == MAX_SHOWN_CHARS + 10


def test_headers_of_any_type_become_json() -> None:
    shown = shown_json({"b": b"bytes", "n": None, "x-death": [{"count": 1}]})
    assert json.loads(shown.text)["n"] is None and "bytes" in shown.text


def test_short_fields_are_cut_with_an_ellipsis() -> None:
    assert shown_text("abcdef", 3) == "abc…"
    assert shown_text(None) == ""


def test_ages() -> None:
    assert [age(None), age(5), age(90), age(7200), age(86400 * 2)] == [
        "?", "5s", "1.5m", "2.0h", "2.0d"]


@given(st.binary(max_size=300))
def test_any_body_is_shown_without_a_control_character(body: bytes) -> None:
    shown = shown_body(body)
    assert not any(ord(c) < 32 and c not in "\n\t" for c in shown.text)
    assert printable(shown.text) == shown.text
