"""When to try a failed delivery again: a destination's schedule, with jitter inside each step.

A destination declares its retry schedule as the delays after attempt 1, 2, ... (Svix-like by
default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, a little over a day in all). That schedule
is the exponential backoff and its ceiling; the jitter spreads each delay uniformly over the
upper half of its step, ``uniform(step / 2, step)`` (AWS's "equal jitter"). Full jitter over
``[0, step]`` spreads a thundering herd no better, but it would let a 10-hour step retry after
a minute and make the schedule's length a matter of luck; the half-step floor keeps every wait
within a factor of two of what the destination declared (Svix's default: 13.8 to 27.6 hours,
about 20 on average). Equal steps (Svix's last two, a test's 1 s ones) still get spread.

A receiver's Retry-After is honoured as a lower bound on the delay (it knows best when it is
back), capped at the schedule's longest step so that a careless "Retry-After: 31536000" cannot
park an event for a year. When the schedule is used up, :meth:`RetrySchedule.delay_after`
answers None and the event becomes a dead letter.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Delays after attempt 1, 2, ...; ``len(steps_s) + 1`` attempts in all."""

    steps_s: tuple[float, ...]

    def __post_init__(self) -> None:
        # Every due time of the timer heap is now + a delay from here: one NaN or infinity
        # would sit at the heap's top for good (NaN compares false with everything) and stop
        # every record of the destination, so a non-finite step is refused outright.
        if not all(math.isfinite(step) for step in self.steps_s):
            raise ValueError(f"retry delays must be finite numbers of seconds: {self.steps_s}")
        if any(step < 0 for step in self.steps_s):
            raise ValueError("retry delays must not be negative")
        if list(self.steps_s) != sorted(self.steps_s):
            raise ValueError(f"retry delays must not decrease: {self.steps_s}")

    @property
    def max_attempts(self) -> int:
        return len(self.steps_s) + 1

    def band(self, attempts: int) -> tuple[float, float]:
        """The (low, high) bounds of the delay after attempt number ``attempts`` (1-based)."""
        high = self.steps_s[attempts - 1]
        return high / 2, high

    def delay_after(
        self,
        attempts: int,
        retry_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait after the ``attempts``-th failed attempt; None: give up."""
        if attempts < 1:
            raise ValueError("attempts counts from 1")
        if attempts > len(self.steps_s):
            return None
        low, high = self.band(attempts)
        delay = (rng or random).uniform(low, high)
        # A receiver's Retry-After is foreign input: NaN or infinity is no floor at all.
        if retry_after_s is not None and math.isfinite(retry_after_s) and retry_after_s > delay:
            delay = min(retry_after_s, self.steps_s[-1])
        # Defensive clamp: whatever the arithmetic did, the answer is finite and in range.
        if not math.isfinite(delay):
            return high
        return min(max(delay, 0.0), self.steps_s[-1])
