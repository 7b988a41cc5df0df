"""The compiled data plane's binary, for tests that start it (issue 15)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def built_binary() -> Path:
    """lienthong-gateway, built first (a no-op once `make test`'s cargo test built it)."""
    subprocess.run(
        ["cargo", "build", "--quiet", "--locked", "--bin", "lienthong-gateway"],
        cwd=REPOSITORY,
        check=True,
    )
    return REPOSITORY / "target" / "debug" / "lienthong-gateway"
