"""The compiled data plane's configuration, written by the control plane (issue 15).

``lienthong-gateway`` (gateway/dataplane) reads one JSON document and nothing else: the TOML,
the policy language and their validation stay here. This writes that document, and the
policy compiled to JSON beside it, from a checked :class:`GatewayConfig`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from sqlalchemy import make_url

from gateway.policy import load_policy
from lienthong.config import GatewayConfig
from lienthong.contracts import SERVICE_FILES, Method
from lienthong.tls import TlsFiles

# HTTP/2 bounds of one connection: as many calls as grpcio's server allowed, and headers as
# large as grpcio accepts by default (8 KiB of metadata, plus the pseudo-headers).
MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST_SIZE = 16 * 1024
REQUEST_BODY_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class DataPlaneFiles:
    """What the data plane is started with."""

    config: Path
    policy: Path
    descriptors: Path


def descriptor_set() -> bytes:
    """The serialized FileDescriptorSet that the binary's server reflection answers from.

    The contracts, grpc health and reflection, and every file they import, each once.
    """
    files: dict[str, FileDescriptor] = {}
    pending = [*SERVICE_FILES, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR]
    while pending:
        file = pending.pop()
        if file.name not in files:
            files[file.name] = file
            pending.extend(file.dependencies)
    descriptors = descriptor_pb2.FileDescriptorSet()
    for name in sorted(files):
        files[name].CopyToProto(descriptors.file.add())
    return descriptors.SerializeToString()


def write_dataplane_config(
    config: GatewayConfig, contract_methods: dict[str, Method], directory: Path
) -> DataPlaneFiles:
    """Write the data plane's configuration and compiled policy into ``directory``.

    The policy is checked against ``contract_methods`` here (PolicyError if it is wrong); the
    files are owner-only, as the rest of the gateway's configuration.
    """
    directory.mkdir(parents=True, exist_ok=True)
    policy_path = directory / "policy.json"
    write_private(policy_path, load_policy(config.policy, contract_methods).to_json())
    document = {
        "listen": config.listen,
        "tls": _tls(config.tls),
        "upstream_tls": _tls(config.upstream_tls),
        "crls": [str(path.resolve()) for path in config.crls],
        "policy": str(policy_path.resolve()),
        "methods": {
            path: {
                "client_streaming": method.client_streaming,
                "server_streaming": method.server_streaming,
            }
            for path, method in sorted(contract_methods.items())
        },
        "metrics_listen": config.metrics_listen,
        "routes": {
            service: {"address": route.address, "identity": route.identity}
            for service, route in sorted(config.routes.items())
        },
        "limits": {
            "max_concurrent_streams": MAX_CONCURRENT_STREAMS,
            "max_header_list_size": MAX_HEADER_LIST_SIZE,
            "request_body_timeout_ms": REQUEST_BODY_TIMEOUT_MS,
            "rate_per_second": config.limits.rate_per_second,
            "burst": config.limits.burst,
            "max_concurrent": config.limits.max_concurrent,
            "max_message_bytes": config.limits.max_message_bytes,
            "upstream_timeout_ms": round(config.limits.upstream_timeout * 1000),
            "stream_timeout_ms": round(config.limits.stream_timeout * 1000),
        },
        "audit": {
            "database_url": _absolute(config.audit.database_url),
            "signing_key": str(config.audit.signing_key.resolve()),
            "origin": config.audit.origin,
            "commit_delay_us": round(config.audit.commit_delay * 1_000_000),
        },
    }
    descriptors_path = directory / "descriptors.binpb"
    descriptors_path.write_bytes(descriptor_set())
    document["descriptors"] = str(descriptors_path.resolve())
    config_path = directory / "dataplane.json"
    write_private(config_path, json.dumps(document, indent=2, sort_keys=True))
    return DataPlaneFiles(config_path, policy_path, descriptors_path)


def _absolute(url: str) -> str:
    """``url`` with a SQLite file's path made absolute: the data plane runs elsewhere."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    return f"sqlite:///{Path(parsed.database).resolve()}"


def _tls(files: TlsFiles) -> dict[str, str]:
    return {
        "ca_certificate": str(files.ca_certificate.resolve()),
        "certificate": str(files.certificate.resolve()),
        "private_key": str(files.private_key.resolve()),
    }


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, replacing it whole."""
    staging = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text + "\n")
    staging.replace(path)
