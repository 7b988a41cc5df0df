"""A peer's identity: the single SPIFFE URI SAN of its verified client certificate."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import cast

import grpc
from cryptography import x509

from lienthong import metadata

TRUST_DOMAIN = "lienthong.local"
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_SPIFFE_ID_BYTES = 2048  # the SPIFFE ID specification's limit


def spiffe_id_of(certificate: x509.Certificate) -> str:
    """The certificate's SPIFFE ID: its one URI SAN, in our trust domain (X.509-SVID)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("certificate has no subjectAltName, so no SPIFFE ID") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ValueError(f"an X.509-SVID has exactly one URI SAN; this certificate has {len(uris)}")
    return check_spiffe_id(uris[0])


def check_spiffe_id(value: str) -> str:
    """Return ``value`` if it is a SPIFFE ID of our trust domain, else raise ValueError."""
    spiffe_segments(value)
    return value


def spiffe_segments(spiffe_id: str) -> list[str]:
    """The path segments of a SPIFFE ID of TRUST_DOMAIN; ValueError if it is not one."""
    prefix = f"spiffe://{TRUST_DOMAIN}/"
    if not spiffe_id.startswith(prefix):
        raise ValueError(f"not a SPIFFE ID of trust domain {TRUST_DOMAIN}: {spiffe_id!r}")
    if len(spiffe_id.encode()) > _MAX_SPIFFE_ID_BYTES:
        raise ValueError(f"SPIFFE ID longer than {_MAX_SPIFFE_ID_BYTES} bytes: {spiffe_id!r}")
    path = spiffe_id.removeprefix(prefix)
    if not path:
        raise ValueError(f"SPIFFE ID of a workload needs a non-empty path: {spiffe_id!r}")
    segments = path.split("/")
    # This also rejects empty segments, a trailing "/", queries, fragments and %-escapes.
    if any(part in {".", ".."} or not _PATH_SEGMENT.fullmatch(part) for part in segments):
        raise ValueError(f"SPIFFE ID path segments must match [A-Za-z0-9._-]+: {spiffe_id!r}")
    return segments


@functools.lru_cache(maxsize=4096)
def _identity_of_pem(pem: bytes) -> str | None:
    try:
        return spiffe_id_of(x509.load_pem_x509_certificate(pem))
    except ValueError:
        return None


def peer_certificate(context: grpc.ServicerContext) -> bytes | None:
    """The PEM of the peer's verified certificate, or None without one."""
    # grpc-stubs types the values as bytes; grpcio gives a list of bytes per property.
    properties = cast("Mapping[str, list[bytes]]", context.auth_context())
    pems = properties.get("x509_pem_cert")
    return pems[0] if pems else None


def peer_identity(context: grpc.ServicerContext) -> str | None:
    """The verified SPIFFE ID of the peer, or None when it has no acceptable certificate.

    grpc has already verified the chain; the parsed identity is cached by certificate, so a
    connection's calls parse it once.
    """
    pem = peer_certificate(context)
    return None if pem is None else _identity_of_pem(pem)


def caller_identity(context: grpc.ServicerContext, gateways: frozenset[str] | None) -> str | None:
    """Who a call comes from: the caller the gateway verified, or the peer itself.

    A peer in ``gateways`` passes on, in ``lienthong-caller``, the identity of the client
    certificate it verified, after stripping any such header the client sent; from any other
    peer the header is ignored, and the peer's own certificate identity is the caller.
    """
    peer = peer_identity(context)
    if gateways is not None and peer in gateways:
        return metadata.first(context.invocation_metadata(), metadata.CALLER)
    return peer
