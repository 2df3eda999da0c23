"""What to do with a step's failure: retry it later, or dead-letter it now.

A pure function of the error, the retries already done and the step's policy, so every case
is tested without a broker; :class:`~orchestrator.step_task.StepTask` only carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.failures.errors import StepInProgress, is_retryable
from orchestrator.failures.retry import RetryPolicy

REASON_FAILED = "failed"
REASON_RETRIES_EXHAUSTED = "retries_exhausted"

CLAIM_BUSY_COUNTDOWN = 2.0
"""Seconds before looking again when another delivery of the same step holds its claim."""


@dataclass(frozen=True)
class RetryLater:
    """Publish a retry in ``countdown`` seconds.

    ``busy``: another delivery of the same step is running; waiting for it is not a failed
    attempt, so it is retried whatever the budget says and never ends in the DLQ (Celery's
    retry count still goes up by one, which a later real failure sees as spent budget).
    """

    countdown: float
    busy: bool = False


@dataclass(frozen=True)
class DeadLetterNow:
    """Move the message to its DLQ with ``reason``."""

    reason: str


FailureDecision = RetryLater | DeadLetterNow


def decide_failure(exc: BaseException, retries_done: int, policy: RetryPolicy) -> FailureDecision:
    """Retry a retryable error while the policy allows; dead-letter everything else."""
    if isinstance(exc, StepInProgress):
        return RetryLater(CLAIM_BUSY_COUNTDOWN, busy=True)
    if not is_retryable(exc):
        return DeadLetterNow(REASON_FAILED)
    if retries_done < policy.max_retries:
        return RetryLater(policy.delay(retries_done))
    return DeadLetterNow(REASON_RETRIES_EXHAUSTED)
