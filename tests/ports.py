"""Loopback ports for the test servers, safe when pytest-xdist runs several workers at once.

A port the kernel hands out for bind(("127.0.0.1", 0)) comes from the ephemeral range, which
every process on the machine shares: a port probed free by one worker could be bound by
another before the first binds it, and gRPC servers set SO_REUSEPORT, so the two would share
it silently. Each worker takes its ports from its own slice of the range below the
ephemeral one instead, and never hands the same port out twice.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

_LOWEST, _HIGHEST = 20_000, 32_000  # below Linux's ephemeral range (32768-60999)
_SLICES = 8  # workers the range is split between; more than the machine runs at once
_handed_out: set[int] = set()


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw3" under xdist
    return int(worker.removeprefix("gw") or 0) % _SLICES


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port that no one listens on now and this worker has not handed out."""
    width = (_HIGHEST - _LOWEST) // _SLICES
    first = _LOWEST + _worker_index() * width
    start = random.randrange(width)  # noqa: S311 - spreading ports, not a secret
    for offset in itertools.islice(itertools.count(start), width):
        port = first + offset % width
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port left in {first}-{first + width - 1}")
