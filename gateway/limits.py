"""Per-caller admission limits: a request rate and a number of concurrent calls.

Each caller identity (a SPIFFE ID) gets its own token bucket and its own in-flight counter,
so one ministry's burst or slow calls never take capacity from another. ``CallerLimits.admit``
answers every call with either an ``Admission`` (release it when the call ends) or a
``Rejection`` that says why and when to retry. Nothing here knows about gRPC: mapping a
rejection to ``RESOURCE_EXHAUSTED`` is the forwarding code's job.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, TypeAlias

# A source of seconds that never goes back; tests pass a fake one they advance by hand.
Clock: TypeAlias = Callable[[], float]
RejectionReason: TypeAlias = Literal["RATE_LIMITED", "CONCURRENCY_LIMITED"]


@dataclass(frozen=True)
class LimitSettings:
    """The limits of one caller.

    ``rate_per_second`` calls are allowed on average, with bursts of up to ``burst`` calls,
    and at most ``max_concurrent`` calls in flight at once.
    """

    rate_per_second: float = 200.0
    burst: int = 400
    max_concurrent: int = 64

    def __post_init__(self) -> None:
        """Refuse settings that would silently admit nothing or everything."""
        _check_rate_and_burst(self.rate_per_second, self.burst)
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {self.max_concurrent}")


def _check_rate_and_burst(rate: float, burst: int) -> None:
    # A NaN or infinite rate would poison the refill arithmetic; a burst below 1 never admits.
    if not (math.isfinite(rate) and rate >= 0):
        raise ValueError(f"rate must be a finite number >= 0, not {rate}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, not {burst}")


class TokenBucket:
    """A token bucket: ``burst`` tokens at most, refilled continuously at ``rate`` per second.

    It starts full. Thread-safe.
    """

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        """A full bucket refilled at ``rate`` tokens per second, read from ``clock``."""
        _check_rate_and_burst(rate, burst)
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()

    def try_acquire(self) -> bool:
        """Whether a token was available; if so it has been taken."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def retry_after(self) -> float:
        """Seconds until a token is available: 0.0 if one is now, ``math.inf`` at rate 0."""
        with self._lock:
            self._refill()
            missing = 1.0 - self._tokens
            if missing <= 0.0:
                return 0.0
            if self._rate == 0.0:
                return math.inf
            return missing / self._rate

    def _refill(self) -> None:
        now = self._clock()
        # A clock that steps back (only a fake one can) must not drain the bucket.
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate)


@dataclass(frozen=True)
class Rejection:
    """A refused call: why, and how many seconds until a retry could succeed.

    ``retry_after`` is 0.0 for a concurrency refusal (a slot frees when any call ends, which
    cannot be predicted) and ``math.inf`` when the caller's rate is 0.
    """

    reason: RejectionReason
    retry_after: float


class _CallerState:
    """One caller's bucket and in-flight count; ``lock`` makes check-and-take atomic."""

    def __init__(self, settings: LimitSettings, clock: Clock) -> None:
        self.settings = settings
        self.bucket = TokenBucket(settings.rate_per_second, settings.burst, clock)
        self.in_flight = 0
        self.lock = threading.Lock()


class Admission:
    """One admitted call's concurrency slot; ``release`` gives it back.

    Release it exactly when the call ends, whatever the outcome: calling ``release`` again
    does nothing, and ``with limits.admit(caller) as admission:`` releases on exit.
    """

    def __init__(self, caller: str, state: _CallerState) -> None:
        """The slot just taken from ``state``, the state of ``caller``."""
        self.caller = caller
        self._state = state
        self._released = False

    @property
    def released(self) -> bool:
        """Whether the slot has been given back."""
        return self._released

    def release(self) -> None:
        """Give the slot back; only the first call has an effect."""
        # The caller's lock makes the check-and-set atomic, so two racing releases (a
        # cancellation callback and the handler's own finally) still decrement once.
        with self._state.lock:
            if self._released:
                return
            self._released = True
            self._state.in_flight -= 1

    def __enter__(self) -> Self:
        """The admission itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Release the slot."""
        self.release()


class CallerLimits:
    """Admission by caller identity: each caller has its own rate bucket and concurrency limit.

    Callers' state is created on first use and kept for the life of the object: identities
    come from certificates of the lienthong PKI, so there are few of them. Do not admit calls
    under identities a client can choose freely.
    """

    def __init__(
        self,
        settings: LimitSettings,
        clock: Clock = time.monotonic,
        overrides: Mapping[str, LimitSettings] | None = None,
    ) -> None:
        """Limit every caller by ``settings``, except those ``overrides`` names."""
        self._settings = settings
        self._clock = clock
        self._overrides = dict(overrides or {})
        self._callers: dict[str, _CallerState] = {}
        self._lock = threading.Lock()

    def settings_for(self, caller: str) -> LimitSettings:
        """The limits that apply to ``caller``."""
        return self._overrides.get(caller, self._settings)

    def in_flight(self, caller: str) -> int:
        """How many of ``caller``'s admitted calls are not yet released."""
        with self._lock:
            state = self._callers.get(caller)
        if state is None:
            return 0
        with state.lock:
            return state.in_flight

    def admit(self, caller: str) -> Admission | Rejection:
        """Admit one call of ``caller``, or say why not.

        The concurrency limit is checked first, so a caller at its limit spends no token on a
        call that would be refused anyway; a rejected call takes neither a token nor a slot.
        """
        state = self._state(caller)
        with state.lock:
            if state.in_flight >= state.settings.max_concurrent:
                return Rejection("CONCURRENCY_LIMITED", 0.0)
            if not state.bucket.try_acquire():
                return Rejection("RATE_LIMITED", state.bucket.retry_after())
            state.in_flight += 1
        return Admission(caller, state)

    def _state(self, caller: str) -> _CallerState:
        with self._lock:
            state = self._callers.get(caller)
            if state is None:
                state = _CallerState(self.settings_for(caller), self._clock)
                self._callers[caller] = state
            return state
