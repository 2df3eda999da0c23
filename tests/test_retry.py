"""The retry policy: backoff, jitter and its bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.failures.retry import RetryPolicy
from orchestrator.settings import Settings


def test_delay_without_jitter_doubles_and_caps() -> None:
    policy = RetryPolicy(max_retries=10, backoff=2.0, backoff_max=30.0, jitter=False)
    assert [policy.delay(n) for n in range(6)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_delay_never_below_one_second() -> None:
    assert RetryPolicy(backoff=0.1, jitter=False).delay(0) == 1.0
    assert RetryPolicy(backoff=0.0, jitter=False).delay(3) == 1.0
    assert RetryPolicy(backoff=2.0, backoff_max=0.5, jitter=False).delay(4) == 1.0


def test_delay_treats_negative_retries_as_the_first() -> None:
    policy = RetryPolicy(backoff=3.0, jitter=False)
    assert policy.delay(-5) == policy.delay(0) == 3.0


@settings(max_examples=200, deadline=None)
@given(
    backoff=st.floats(min_value=0.0, max_value=1000.0),
    backoff_max=st.floats(min_value=0.0, max_value=10_000.0),
    retries_done=st.integers(min_value=-3, max_value=5000),
    jitter=st.booleans(),
)
def test_delay_is_always_within_one_second_and_the_cap(
    backoff: float, backoff_max: float, retries_done: int, jitter: bool
) -> None:
    policy = RetryPolicy(backoff=backoff, backoff_max=backoff_max, jitter=jitter)
    delay = policy.delay(retries_done)
    cap = min(backoff_max, backoff * 2 ** min(max(retries_done, 0), 1000))
    assert isinstance(delay, float)
    assert 1.0 <= delay <= max(1.0, cap)
    if not jitter:
        assert delay == max(1.0, cap)


def test_delay_with_jitter_spreads_within_bounds() -> None:
    policy = RetryPolicy(backoff=2.0, backoff_max=20.0, jitter=True)
    delays = [policy.delay(3) for _ in range(500)]
    assert all(1.0 <= d <= 16.0 for d in delays)
    assert len(set(delays)) > 10  # actually random, not lock step


def test_delay_for_many_retries_is_the_cap() -> None:
    policy = RetryPolicy(max_retries=10_000, backoff=2.0, backoff_max=300.0, jitter=False)
    assert policy.delay(2000) == 300.0
    assert 1.0 <= RetryPolicy(backoff_max=300.0, jitter=True).delay(10_000) <= 300.0


def test_retry_policy_from_settings() -> None:
    config = Settings(max_retries=7, retry_backoff=0.5, retry_backoff_max=9.0,
                      retry_jitter=False)
    assert RetryPolicy.from_settings(config) == RetryPolicy(
        max_retries=7, backoff=0.5, backoff_max=9.0, jitter=False
    )
