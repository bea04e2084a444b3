"""Retry policies for steps, with Dagster's names (``RetryPolicy``, ``Backoff``, ``Jitter``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from tidegate.errors import InvalidDefinitionError


class Backoff(Enum):
    """How the delay grows between attempts."""

    LINEAR = "LINEAR"  # delay * n
    EXPONENTIAL = "EXPONENTIAL"  # delay * 2 ** (n - 1)


class Jitter(Enum):
    """Randomness added to the delay so that many failed steps do not retry in lockstep."""

    FULL = "FULL"  # uniform in [0, delay]
    PLUS_MINUS = "PLUS_MINUS"  # delay +/- up to delay


@dataclass(frozen=True)
class RetryPolicy:
    """Re-run a failed step up to ``max_retries`` more times, ``delay`` seconds apart."""

    max_retries: int = 1
    delay: float | None = None
    backoff: Backoff | None = None
    jitter: Jitter | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise InvalidDefinitionError(f"RetryPolicy: max_retries must be an integer >= 0, got {self.max_retries!r}")
        if self.delay is not None and self.delay < 0:
            raise InvalidDefinitionError(f"RetryPolicy: delay must be >= 0, got {self.delay!r}")
        if self.backoff is not None and self.delay is None:
            raise InvalidDefinitionError("RetryPolicy: backoff needs a delay")

    def delay_before(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 for the first retry)."""
        base = float(self.delay or 0.0)
        if self.backoff is Backoff.LINEAR:
            base *= retry_number
        elif self.backoff is Backoff.EXPONENTIAL:
            base *= 2 ** (retry_number - 1)
        draw = (rng or random).random()
        if self.jitter is Jitter.FULL:
            return base * draw
        if self.jitter is Jitter.PLUS_MINUS:
            return max(0.0, base + base * (2 * draw - 1))
        return base
