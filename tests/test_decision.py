"""Retry or dead-letter: the decision over its whole input space."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.failures.decision import (
    CLAIM_BUSY_COUNTDOWN,
    DeadLetterNow,
    RetryLater,
    decide_failure,
)
from orchestrator.failures.errors import FinalError, RetryableError, StepInProgress, is_retryable
from orchestrator.failures.retry import RetryPolicy

ERRORS = [RetryableError("r"), FinalError("f"), TimeoutError(), ValueError("v"),
          RuntimeError("unknown"), StepInProgress("busy")]


@given(st.sampled_from(ERRORS), st.integers(min_value=0, max_value=40),
       st.integers(min_value=0, max_value=10), st.booleans())
def test_a_failure_is_retried_exactly_while_the_policy_allows(
    exc: Exception, retries_done: int, max_retries: int, jitter: bool,
) -> None:
    policy = RetryPolicy(max_retries=max_retries, backoff=2.0, backoff_max=30.0, jitter=jitter)
    decision = decide_failure(exc, retries_done, policy)
    if isinstance(exc, StepInProgress):
        assert decision == RetryLater(CLAIM_BUSY_COUNTDOWN, busy=True)
    elif not is_retryable(exc):
        assert decision == DeadLetterNow("failed")
    elif retries_done < max_retries:
        assert isinstance(decision, RetryLater) and not decision.busy
        assert 1.0 <= decision.countdown <= 30.0
    else:
        assert decision == DeadLetterNow("retries_exhausted")
