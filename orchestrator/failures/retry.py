"""Retry policy: how often and how long to wait, per step type, with defaults from settings."""

from __future__ import annotations

import random
from dataclasses import dataclass

from orchestrator.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with optional full jitter, bounded by ``max_retries``."""

    max_retries: int = 3
    backoff: float = 2.0
    backoff_max: float = 300.0
    jitter: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_retries=settings.max_retries,
            backoff=settings.retry_backoff,
            backoff_max=settings.retry_backoff_max,
            jitter=settings.retry_jitter,
        )

    def delay(self, retries_done: int) -> float:
        """Seconds to wait before retry number ``retries_done + 1``.

        Full jitter (a uniform pick in ``[0, cap]``) spreads a burst of failures instead of
        retrying them in lock step; the floor of one second keeps countdowns meaningful.
        """
        # The exponent is bounded: 2 ** 1024 no longer fits a float (OverflowError), and the
        # cap is reached long before anyway.
        cap = min(self.backoff_max, self.backoff * 2.0 ** min(max(retries_done, 0), 1000))
        if self.jitter:
            return max(1.0, float(random.uniform(0, cap)))
        return max(1.0, float(cap))
