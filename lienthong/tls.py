"""mTLS credentials for servers and channels from PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

# Every certificate of the development PKI that serves names localhost; production
# certificates name their host, and the channel verifies it as usual.
DEFAULT_SERVER_NAME = "localhost"


@dataclass(frozen=True)
class TlsFiles:
    """Where a system's trust anchors, certificate and private key are."""

    ca_certificate: Path
    certificate: Path
    private_key: Path

    def read(self) -> TlsMaterial:
        """Read the three files."""
        return TlsMaterial(
            self.ca_certificate.read_bytes(),
            self.certificate.read_bytes(),
            self.private_key.read_bytes(),
        )


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes of trust anchors, certificate chain and private key."""

    ca_certificate: bytes
    certificate: bytes
    private_key: bytes


def server_credentials(material: TlsMaterial) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate (mutual TLS)."""
    return grpc.ssl_server_credentials(
        [(material.private_key, material.certificate)],
        root_certificates=material.ca_certificate,
        require_client_auth=True,
    )


# First and longest wait, in milliseconds, before reconnecting to a peer that went away.
RECONNECT_BACKOFF_MS = (250, 2_000)
# The least time a connection attempt (TCP and TLS handshake) is given, in milliseconds.
# gRPC core reads it from "grpc.min_reconnect_backoff_ms" (its MIN_CONNECT_TIMEOUT, see
# gRPC's connection-backoff.md), so setting that option to a short backoff also abandons
# every handshake slower than it ("tcp handshaker shutdown") - on a busy machine, against a
# peer that has just restarted, every attempt. gRPC's own default is 20 s.
MIN_CONNECT_TIMEOUT_MS = 20_000


def reconnect_options(first_ms: int, longest_ms: int) -> list[tuple[str, int]]:
    """Channel options: reconnect after ``first_ms``, backing off to ``longest_ms``.

    Each connection attempt keeps the time a handshake needs (MIN_CONNECT_TIMEOUT_MS).
    """
    return [
        ("grpc.initial_reconnect_backoff_ms", first_ms),
        ("grpc.max_reconnect_backoff_ms", longest_ms),
        ("grpc.min_reconnect_backoff_ms", MIN_CONNECT_TIMEOUT_MS),
    ]


def secure_channel(
    target: str,
    material: TlsMaterial,
    *,
    server_name: str = DEFAULT_SERVER_NAME,
    options: list[tuple[str, str | int]] | None = None,
) -> grpc.Channel:
    """A channel that presents our certificate and verifies the server against our CA."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=material.ca_certificate,
        private_key=material.private_key,
        certificate_chain=material.certificate,
    )
    channel_options: list[tuple[str, str | int]] = [
        ("grpc.ssl_target_name_override", server_name),
        # Every peer is a lienthong service that comes back within seconds of a restart;
        # gRPC's default backoff (up to two minutes) would keep callers away long after.
        *reconnect_options(*RECONNECT_BACKOFF_MS),
        *(options or []),
    ]
    return grpc.secure_channel(target, credentials, options=channel_options)
