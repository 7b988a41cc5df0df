"""`lienthong serve gateway`: lienthong-gateway in its place.

The control plane checks the configuration and compiles the policy
(gateway/dataplane_config.py), then execs the binary, so that the supervisor's signals
(SIGTERM: drain, SIGKILL) reach the data plane itself and its exit status is the service's
(issue 15); a forked child keeps the compiled policy in step with its file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import NoReturn

from gateway.dataplane_config import write_dataplane_config
from gateway.policy import PolicyError
from gateway.policy_compiler import PolicyCompiler
from lienthong.config import ConfigError, GatewayConfig
from lienthong.contracts import methods
from lienthong.db import ensure_database

BINARY = "lienthong-gateway"
# Set to the binary's path to run another build than the repository's newest.
BINARY_VARIABLE = "LIENTHONG_GATEWAY_BINARY"
REPOSITORY = Path(__file__).resolve().parent.parent


def binary() -> Path:
    """The binary to run: the variable's, else the repository's newest build, else PATH's."""
    chosen = os.environ.get(BINARY_VARIABLE)
    if chosen:
        return Path(chosen)
    builds = [
        path
        for path in (REPOSITORY / "target" / profile / BINARY for profile in ("release", "debug"))
        if path.is_file()
    ]
    if builds:
        return max(builds, key=lambda path: path.stat().st_mtime)
    found = shutil.which(BINARY)
    if found is None:
        raise ConfigError(
            f"{BINARY} is not built: run `cargo build --release --bin {BINARY}`"
            f" or set {BINARY_VARIABLE}"
        )
    return Path(found)


def exec_compiled(config: GatewayConfig) -> NoReturn:
    """Write the data plane's configuration (owner-only, in a folder of its own) and exec it.

    A forked child stays behind as the control plane: it compiles the policy again whenever
    its file changes (PolicyCompiler), and when the gateway's process is gone (its parent
    changed) it removes the folder and exits.
    """
    program = binary()
    known = methods()
    # As the adapters' databases: a PostgreSQL audit database is created if missing.
    ensure_database(config.audit.database_url)
    directory = Path(tempfile.mkdtemp(prefix="lienthong-gateway-"))
    try:
        files = write_dataplane_config(config, known, directory)
    except PolicyError as error:
        shutil.rmtree(directory, ignore_errors=True)
        raise ConfigError(f"gateway: {error}") from None
    compiler = PolicyCompiler(config.policy, known, files.policy)
    gateway = os.getpid()
    if os.fork() == 0:  # the control plane
        try:
            compiler.run_while(lambda: os.getppid() == gateway)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            os._exit(0)
    os.execv(program, [str(program), "--config", str(files.config)])  # noqa: S606
