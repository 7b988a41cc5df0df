"""Noticing that files changed on disk, cheaply enough to ask on every call."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

Signature = tuple[int, int, int] | None  # (inode, size, mtime_ns), None when missing


def _signature(path: Path) -> Signature:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class FileWatch:
    """Tells whether any of some files changed since the last time it said so.

    The files are looked at no more often than every ``interval`` seconds, so that a hot path
    can ask on every call; a replaced file (rename over it) counts as a change too.
    """

    def __init__(self, paths: Iterable[Path], *, interval: float = 0.25) -> None:
        """Watch ``paths`` from their present state."""
        self._paths = tuple(paths)
        self._interval = interval
        self._lock = threading.Lock()
        self._seen = [_signature(path) for path in self._paths]
        self._checked = time.monotonic()

    def changed(self) -> bool:
        """True once after any watched file changed (at most one look per interval)."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self._interval:
                return False
            self._checked = now
            current = [_signature(path) for path in self._paths]
            if current == self._seen:
                return False
            self._seen = current
            return True
