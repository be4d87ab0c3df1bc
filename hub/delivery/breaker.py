"""A circuit breaker per endpoint: stop hammering a receiver that is down, and probe it.

closed → (``failures`` consecutive failures) → open → (``open_s`` later) → half-open: exactly
one request, the probe, may go → its success closes the breaker, its failure opens it again
for another ``open_s``. Only answers that say the receiver is unwell count (no answer, 5xx,
408, 429; see :func:`hub.delivery.transport.counts_against_breaker`); a 4xx refusal of one
event is a healthy receiver saying no, and resets the count like a success.

Events that find the breaker open are not attempted, so waiting behind it does not use up
their retry schedule: a receiver down for a weekend costs the probe events their attempts,
not everyone's. The clock is injectable so the tests run without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    """The values of the breaker-state gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        open_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError("a breaker opens after at least one failure")
        if not math.isfinite(open_s) or open_s < 0:
            # retry_at() is a due time of the worker's timer heap: it must be a finite number.
            raise ValueError(f"a breaker's open time must be finite and >= 0: {open_s}")
        self.failures = failures
        self.open_s = open_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_out = False
        self.opened_count = 0
        """How often the breaker has opened (for logs)."""

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self.open_s:
            self._state = BreakerState.HALF_OPEN
            self._probe_out = False
        return self._state

    def allow(self) -> bool:
        """Whether a request may go now; in half-open, True once (the probe) until its result."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def retry_at(self) -> float:
        """Clock time when :meth:`allow` may say yes again (now, when it would already)."""
        state = self.state
        if state is BreakerState.OPEN:
            return self._opened_at + self.open_s
        if state is BreakerState.HALF_OPEN and self._probe_out:
            # The probe's answer decides; look again within the request timeout at the latest.
            return self._clock() + min(self.open_s, 1.0)
        return self._clock()

    def record_success(self) -> None:
        self._consecutive = 0
        self._probe_out = False
        self._state = BreakerState.CLOSED

    def record_failure(self) -> None:
        state = self.state
        self._consecutive += 1
        if state is BreakerState.HALF_OPEN or (
            state is BreakerState.CLOSED and self._consecutive >= self.failures
        ):
            self._open()

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probe_out = False
        self.opened_count += 1
