"""For tests that run services as processes (`lienthong serve`): their configuration, and
waiting until one serves.

The configuration is config/dev.toml itself, the file `make run` uses, with free ports and
the test's PKI, log directory and databases put in, rather than a copy of its sections that
would drift from it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ports import free_port

from lienthong.tls import TlsMaterial, secure_channel

DEV_CONFIG = Path(__file__).resolve().parent.parent / "config" / "dev.toml"
_DEV_ADDRESSES = ("50051", "50061", "50071", "9464")  # gateway, justice, police, metrics


def write_dev_config(
    directory: Path, pki_directory: Path, urls: dict[str, str], name: str = "lienthong.toml"
) -> Path:
    """config/dev.toml on free ports with ``pki_directory``, ``directory``/log and ``urls``
    (database URLs by "justice", "police", "audit"; the others stay SQLite files)."""
    text = DEV_CONFIG.read_text(encoding="utf-8")
    for port in _DEV_ADDRESSES:
        text = text.replace(f'"127.0.0.1:{port}"', f'"127.0.0.1:{free_port()}"')
    for database in ("justice", "police", "audit"):
        url = urls.get(database, f"sqlite:///{directory / f'{database}.db'}")
        text = text.replace(f'"sqlite:///../var/{database}.db"', json.dumps(url))
    text = text.replace('"../certs/dev', json.dumps(str(pki_directory))[:-1])
    text = text.replace('"../var/log"', json.dumps(str(directory / "log")))
    text = text.replace('"policy.toml"', json.dumps(str(DEV_CONFIG.parent / "policy.toml")))
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def wait_serving(
    address: str, material: TlsMaterial, process: subprocess.Popen[bytes], timeout: float
) -> str | None:
    """Wait until the service at ``address`` answers its health check SERVING (None), or
    say why it did not: its ``process`` exited, or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    with secure_channel(address, material) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"exited with {process.returncode}"
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return None
    return f"did not become healthy on {address}"
