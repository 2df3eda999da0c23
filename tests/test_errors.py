"""Which errors are retried and which are final."""

from __future__ import annotations

import httpx
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ValidationError

from orchestrator.envelope import EnvelopeError
from orchestrator.failures.errors import FinalError, RetryableError, is_retryable


def http_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://example.invalid/feed")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_http_5xx_and_429_are_retryable(status: int) -> None:
    assert is_retryable(http_error(status)) is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_http_4xx_are_final(status: int) -> None:
    assert is_retryable(http_error(status)) is False


def test_raise_for_status_errors_are_classified_the_same() -> None:
    request = httpx.Request("GET", "https://example.invalid/")
    for status, expected in ((503, True), (404, False)):
        with pytest.raises(httpx.HTTPStatusError) as info:
            httpx.Response(status, request=request).raise_for_status()
        assert is_retryable(info.value) is expected


class CustomError(Exception):
    pass


def _validation_error() -> ValidationError:
    class Model(BaseModel):
        x: int

    try:
        Model.model_validate({"x": "nope"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a ValidationError")


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("peer closed"),
        TimeoutError("slow"),
        ConnectionError("gone"),
        ConnectionRefusedError("refused"),
        ConnectionResetError("reset"),
        OperationalError("broker down"),
        RetryableError("try again"),
        CustomError("unforeseen"),
        RuntimeError("unforeseen"),
        SoftTimeLimitExceeded(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_retryable_errors(exc: BaseException) -> None:
    assert is_retryable(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        FinalError("no"),
        EnvelopeError("invalid envelope: payload: bad"),
        ValueError("bad value"),
        TypeError("bad type"),
        KeyError("missing"),
        _validation_error(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_final_errors(exc: BaseException) -> None:
    assert is_retryable(exc) is False


def test_retryable_error_wins_even_when_also_a_value_error() -> None:
    class Both(RetryableError, ValueError):
        pass

    assert is_retryable(Both("retry me")) is True
