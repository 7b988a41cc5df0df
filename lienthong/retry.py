"""Retrying a call whose answer may come after a restart, as every lienthong client does.

Every mutation carries a client request ID, and a repeat gets the first answer (AIP-155), so
a call that failed for a reason that passes (a service restarting, the database locked, a
rate limit) can be sent again unchanged: it takes effect once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

T = TypeVar("T")

# Codes after which the same call may succeed; any other answer is final.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
FIRST_DELAY = 0.1
MAX_DELAY = 2.0
DEFAULT_PATIENCE = 300.0  # seconds a call keeps being retried


def retryable(error: BaseException) -> bool:
    """Whether the call that raised ``error`` may be sent again unchanged."""
    return isinstance(error, grpc.Call) and error.code() in RETRYABLE


def delay(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): exponential, capped, jittered.

    The jitter spreads the clients that all failed at one restart.
    """
    ceiling = min(MAX_DELAY, FIRST_DELAY * 2.0 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


def with_retries(call: Callable[[], T], *, patience: float = DEFAULT_PATIENCE) -> T:
    """``call()``, again after each retryable failure until ``patience`` seconds have passed."""
    deadline = time.monotonic() + patience
    attempt = 0
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            attempt += 1
            wait = delay(attempt)
            if not retryable(error) or time.monotonic() + wait > deadline:
                raise
            time.sleep(wait)
