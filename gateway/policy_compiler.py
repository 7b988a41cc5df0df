"""The compiled data plane's policy, compiled again from the TOML whenever it changes.

lienthong-gateway re-reads its policy JSON when it changes (gateway/dataplane/src/reload.rs);
this keeps that file in step with the TOML an operator edits, through a PolicyStore: a file
that fails to load is logged and the last good policy stays in force (issue 15).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.dataplane_config import write_private
from gateway.policy import Policy, PolicyStore
from lienthong.contracts import Method

INTERVAL = 0.25


class PolicyCompiler:
    """Writes ``target`` from ``source`` whenever the policy in force changes."""

    def __init__(self, source: Path, methods: dict[str, Method], target: Path) -> None:
        """Watch ``source`` (loaded now: PolicyError if it is wrong) and compile into ``target``."""
        self._store = PolicyStore(source, methods, interval=INTERVAL)
        self._target = target
        self._written: Policy | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def compile_once(self) -> bool:
        """Write the policy in force if it is not the one last written; whether it wrote."""
        policy = self._store.current()
        if policy is self._written:
            return False
        write_private(self._target, policy.to_json())
        self._written = policy
        return True

    def run_while(self, keep_going: Callable[[], bool]) -> None:
        """Compile every interval for as long as ``keep_going()`` says (or until stopped)."""
        while keep_going() and not self._stop.is_set():
            self.compile_once()
            time.sleep(INTERVAL)

    def start(self) -> None:
        """Compile in a thread of this process until ``stop``."""
        self._thread = threading.Thread(
            target=self.run_while, args=(lambda: True,), name="policy-compiler", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread ``start`` began."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
