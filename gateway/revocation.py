"""Revocation and key-usage checks of callers' client certificates.

grpcio verifies a client's chain and validity at the TLS handshake but knows nothing of
certificate revocation lists, and BoringSSL may not enforce a client certificate's key
usages. The gateway therefore checks each call's peer certificate itself:

- ``CrlSet.is_revoked`` answers from CRL files (PEM or DER) issued by the trusted CAs. A file
  that changes while the gateway runs is read again within ``check_interval`` seconds, so a
  revocation takes effect without a restart. A CRL that cannot be read or whose signature
  does not verify is refused: at start with ``RevocationError`` (the gateway must not start
  without the revocations it was told to enforce), later with an error logged while the
  last good CRL of that file stays in force.
- ``check_client_certificate`` says why a certificate may not authenticate a TLS client.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from lienthong.watch import FileWatch

log = structlog.get_logger(__name__)

DEFAULT_CHECK_INTERVAL: Final = 0.25
DEFAULT_CACHE_SIZE: Final = 4096
# The key types that can sign a CRL; any other key in the CA bundle cannot have signed one.
_ISSUER_KEY_TYPES: Final = (
    ec.EllipticCurvePublicKey,
    rsa.RSAPublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    dsa.DSAPublicKey,
)
_PEM_CRL: Final = b"-----BEGIN X509 CRL-----"

_Extension = TypeVar("_Extension", bound=x509.ExtensionType)


class RevocationError(ValueError):
    """A CRL or the CA bundle cannot be read, or a CRL is not signed by a trusted CA."""


class CrlSet:
    """The revocations listed by some CRL files, kept up to date as the files change.

    Answers are cached per certificate until a CRL changes. Thread-safe.
    """

    def __init__(
        self,
        crl_paths: Sequence[Path],
        trusted_cas: Path,
        *,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        """Load ``crl_paths``, each checked against the CAs of the PEM bundle ``trusted_cas``.

        The files, CA bundle included, are looked at again at most every ``check_interval``
        seconds of ``clock``; at most ``cache_size`` answers are kept. RevocationError if a
        file is missing or not a CRL signed by one of the CAs.
        """
        if not crl_paths:
            raise ValueError("a CrlSet needs at least one CRL file")
        if not (math.isfinite(check_interval) and check_interval >= 0):
            raise ValueError(f"check_interval must be a finite number >= 0, not {check_interval}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, not {cache_size}")
        self._paths = tuple(crl_paths)
        self._trusted_cas = trusted_cas
        self._cache_size = cache_size
        # Watching starts before the first load: a file replaced while it is read is read again.
        # The CA bundle is watched too, since the gateway rotates it without restart and a new
        # CA's CRL only verifies once its certificate is known.
        self._watch = FileWatch([*self._paths, trusted_cas], interval=check_interval, clock=clock)
        self._authorities = _load_authorities(trusted_cas)
        # One reload at a time; _lock guards the CRLs in force and the cache, held briefly.
        self._reload_lock = threading.Lock()
        self._lock = threading.Lock()
        self._crls = tuple(self._load(path) for path in self._paths)
        self._generation = 0
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        for path, crl in zip(self._paths, self._crls, strict=True):
            log.info("crl_loaded", path=str(path), revoked=len(crl), crl_number=_number(crl))

    def is_revoked(self, certificate_pem: bytes) -> bool:
        """Whether a CRL of the certificate's issuer lists its serial number.

        ValueError if ``certificate_pem`` is not a PEM certificate.
        """
        self._refresh()
        # Keyed by the PEM's digest, not the DER fingerprint: grpc hands over the same bytes
        # on every call of a connection, and a hit then costs no certificate parsing at all.
        key = hashlib.sha256(certificate_pem).digest()
        with self._lock:
            answer = self._cache.get(key)
            if answer is not None:
                self._cache.move_to_end(key)
                return answer
            generation, crls = self._generation, self._crls
        answer = _listed(x509.load_pem_x509_certificate(certificate_pem), crls)
        with self._lock:
            # An answer from CRLs replaced meanwhile is returned once but never cached.
            if generation == self._generation:
                self._cache[key] = answer
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return answer

    def _refresh(self) -> None:
        if not self._watch.changed():
            return
        with self._reload_lock:
            try:
                self._authorities = _load_authorities(self._trusted_cas)
            except RevocationError as error:
                # The CRLs are then checked against the CAs known before.
                log.error("crl_authorities_reload_failed", error=str(error))  # noqa: TRY400
            crls = list(self._crls)
            for index, path in enumerate(self._paths):
                try:
                    crl = self._load(path)
                except RevocationError as error:
                    # Never fall back to "nothing revoked": the last good CRL stays in force.
                    # The message says what is wrong; a traceback of it would be noise.
                    log.error("crl_reload_failed", path=str(path), error=str(error))  # noqa: TRY400
                    continue
                if crl != crls[index]:
                    crls[index] = crl
                    log.info(
                        "crl_reloaded", path=str(path), revoked=len(crl), crl_number=_number(crl)
                    )
            with self._lock:
                self._crls = tuple(crls)
                self._generation += 1
                self._cache.clear()

    def _load(self, path: Path) -> x509.CertificateRevocationList:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise RevocationError(f"cannot read CRL {path}: {error.strerror}") from None
        try:
            crl = x509.load_pem_x509_crl(data) if _PEM_CRL in data else x509.load_der_x509_crl(data)
        except ValueError as error:
            raise RevocationError(f"{path} is not a CRL in PEM or DER: {error}") from None
        issuer = crl.issuer.rfc4514_string()
        candidates = [ca for ca in self._authorities if ca.subject == crl.issuer]
        if not candidates:
            raise RevocationError(f"{path}: its issuer {issuer} is not a trusted CA")
        # Several CAs may share a name (a CA reissued with a new key): any of them may sign.
        if not any(_signed_by(crl, ca) for ca in candidates):
            raise RevocationError(f"{path}: signature does not verify with the key of CA {issuer}")
        next_update = crl.next_update_utc
        if next_update is not None and next_update < datetime.now(UTC):
            # Its revocations still hold, so it stays in use; but newer ones may be missing.
            log.warning("crl_out_of_date", path=str(path), next_update=next_update.isoformat())
        return crl


def check_client_certificate(certificate_pem: bytes) -> str | None:
    """Why the certificate may not authenticate a TLS client, or None if it may.

    Refused: a CA certificate, a keyUsage without digitalSignature, an extendedKeyUsage
    without clientAuth, and extensions that cannot be parsed. ValueError if
    ``certificate_pem`` is not a PEM certificate.
    """
    return _client_certificate_problem(certificate_pem)


def _load_authorities(path: Path) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(x509.load_pem_x509_certificates(path.read_bytes()))
    except OSError as error:
        raise RevocationError(f"cannot read CA certificates {path}: {error.strerror}") from None
    except ValueError as error:
        raise RevocationError(f"{path} holds no PEM certificates: {error}") from None


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    public_key = ca.public_key()
    if not isinstance(public_key, _ISSUER_KEY_TYPES):
        return False
    # RFC 5280 section 4.2.1.3: a CA whose keyUsage lacks cRLSign may not sign CRLs.
    try:
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if not usage.crl_sign:
            return False
    return crl.is_signature_valid(public_key)


def _listed(certificate: x509.Certificate, crls: Sequence[x509.CertificateRevocationList]) -> bool:
    return any(
        crl.issuer == certificate.issuer
        and crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
        for crl in crls
    )


def _number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


# The answer depends on the bytes alone; a connection's calls all bring the same bytes.
@functools.lru_cache(maxsize=DEFAULT_CACHE_SIZE)
def _client_certificate_problem(certificate_pem: bytes) -> str | None:
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    try:
        constraints = _extension(certificate, x509.BasicConstraints)
        usage = _extension(certificate, x509.KeyUsage)
        purposes = _extension(certificate, x509.ExtendedKeyUsage)
    except (ValueError, x509.DuplicateExtension) as error:
        return f"its extensions cannot be parsed: {error}"
    if constraints is not None and constraints.ca:
        return "it is a CA certificate (basicConstraints cA is true)"
    if usage is not None and not usage.digital_signature:
        return "its keyUsage lacks digitalSignature"
    if purposes is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in purposes:
        return "its extendedKeyUsage lacks clientAuth"
    return None


def _extension(certificate: x509.Certificate, kind: type[_Extension]) -> _Extension | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
