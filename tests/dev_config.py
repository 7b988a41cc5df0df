"""The development configuration (config/dev.toml) moved to a directory of a test's own.

Tests that run services as processes (`lienthong serve`) use the very file `make run` uses,
with free ports, the test's PKI, log directory and databases put in, rather than a copy of
its sections that would drift from it.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

DEV_CONFIG = Path(__file__).resolve().parent.parent / "config" / "dev.toml"
_DEV_ADDRESSES = ("50051", "50061", "50071", "9464")  # gateway, justice, police, metrics


def free_port() -> int:
    """A port free on loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
