"""lienthong-gateway as a process for tests, started from a GatewayConfig as `lienthong
serve gateway` starts it: the policy compiled beside it, its JSON log in a file (issue 15).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dataplane_build import built_binary
from sqlalchemy import Engine

from gateway.audit.store import AuditLog
from gateway.dataplane_config import write_dataplane_config
from gateway.policy_compiler import PolicyCompiler
from lienthong.config import GatewayConfig
from lienthong.contracts import Method, methods
from lienthong.db import ensure_database, make_engine
from lienthong.signed_note import load_signer


@dataclass
class CompiledGateway:
    """lienthong-gateway as a process, and what the tests read of a gateway: its address, its
    audit log (the Python store over the same database, read only) and its metrics port."""

    address: str
    process: subprocess.Popen[bytes]
    audit: AuditLog
    metrics_port: int
    log: IO[bytes]
    engine: Engine
    compiler: PolicyCompiler
    log_path: Path

    def events(self) -> list[dict[str, object]]:
        """Every JSON line the gateway has logged so far."""
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> None:
        """SIGTERM: it drains and exits 0."""
        self.process.send_signal(signal.SIGTERM)
        try:
            stopped = self.process.wait(timeout=15)
        finally:
            self.compiler.stop()
            self.log.close()
            self.engine.dispose()
        assert stopped == 0, "lienthong-gateway did not stop cleanly on SIGTERM"


def start_compiled(
    config: GatewayConfig, directory: Path, extra_methods: dict[str, Method] | None = None
) -> CompiledGateway:
    """Start lienthong-gateway on ``config`` (the contracts' methods, and ``extra_methods``)
    and wait until it listens."""
    known = {**methods(), **(extra_methods or {})}
    ensure_database(config.audit.database_url)  # as `lienthong serve gateway` does
    files = write_dataplane_config(config, known, directory / "dataplane")
    # As `lienthong serve gateway` does in a child process: the policy recompiled on change.
    compiler = PolicyCompiler(config.policy, known, files.policy)
    compiler.start()
    log_path = directory / "dataplane.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [str(built_binary()), "--config", str(files.config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_listening(config.listen, process, log_path)
    except AssertionError:  # release what was started, so that the failure is its own
        process.kill()
        process.wait()
        compiler.stop()
        log.close()
        raise
    signer = load_signer(config.audit.origin, config.audit.signing_key.read_bytes())
    engine = make_engine(config.audit.database_url)
    assert config.metrics_listen is not None
    metrics_port = int(config.metrics_listen.rsplit(":", 1)[1])
    return CompiledGateway(
        config.listen, process, AuditLog(engine, signer), metrics_port, log, engine, compiler,
        log_path,
    )  # fmt: skip


def _wait_listening(address: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"lienthong-gateway exited: see {log_path}"
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, f"lienthong-gateway never listened on {port}"
            time.sleep(0.05)


def refused_at_start(
    config: GatewayConfig, directory: Path, extra_methods: dict[str, Method] | None = None
) -> str:
    """Start lienthong-gateway on ``config``, which it must refuse: it exits with a status
    other than 0 (within 15 s, without serving). What it wrote."""
    known = {**methods(), **(extra_methods or {})}
    files = write_dataplane_config(config, known, directory / "dataplane")
    try:
        ran = subprocess.run(
            [str(built_binary()), "--config", str(files.config)],
            capture_output=True, text=True, timeout=15, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError("lienthong-gateway started where it should have refused") from None
    assert ran.returncode != 0, ran.stdout + ran.stderr
    return ran.stdout + ran.stderr
