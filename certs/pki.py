"""A development CA and the SPIFFE X.509-SVIDs it issues to every lienthong system.

It also issues civil-status officers their own client certificates, in ``officers/``, so the
gateway and the registry know which officer acts, not just which portal; ``init`` issues the
bootstrap administrator's, who may then create the other officers' accounts.

For local runs and tests only: private keys are written unencrypted (mode 0o600).
Certificates follow RFC 5280 and the SPIFFE X.509-SVID specification; so does the CA's
certificate revocation list, ``crl.pem``, which ``revoke`` extends.
"""

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lienthong.identity import TRUST_DOMAIN, spiffe_id_of, spiffe_segments
from lienthong.signed_note import NoteSigner, load_signer

CA_COMMON_NAME: Final = "lienthong development CA"
ORGANIZATION: Final = "lienthong"

# Peers whose clocks run a little behind must still accept a certificate issued just now.
CLOCK_SKEW: Final = timedelta(minutes=5)
# The longest validity browsers accept; nothing needs longer for development.
LEAF_VALIDITY: Final = timedelta(days=825)
# A CRL's nextUpdate: relying parties warn about an older one, so revoke again or reissue weekly.
CRL_VALIDITY: Final = timedelta(days=7)

# An officer's ID is the last segment of its SPIFFE ID and the stem of its files.
OFFICER_ID: Final = re.compile(r"[a-z][a-z0-9-]{0,62}")
# The officer `init` issues a certificate to, so a fresh stack has someone to create the others.
BOOTSTRAP_ADMINISTRATOR: Final = "admin"

# The audit log's note signing key: audit-log.key (PEM PKCS8) and audit-log.vkey (verifier key).
AUDIT_KEY_STEM: Final = "audit-log"

_CA_STEM: Final = "ca"
_CRL_NAME: Final = "crl.pem"
_OFFICERS_DIRECTORY: Final = "officers"
_FILE_STEM: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_COMMON_NAME: Final = 64  # ub-common-name, RFC 5280 appendix A.1
_PRIVATE_MODE: Final = 0o600
_PUBLIC_MODE: Final = 0o644
_DIRECTORY_MODE: Final = 0o700


@dataclass(frozen=True)
class SystemIdentity:
    """A system of the development PKI and the certificate it gets."""

    name: str
    spiffe_id: str
    server: bool
    client: bool


SYSTEMS: tuple[SystemIdentity, ...] = (
    SystemIdentity("gateway-server", "spiffe://lienthong.local/gateway", server=True, client=False),
    SystemIdentity("gateway-client", "spiffe://lienthong.local/gateway", server=False, client=True),
    SystemIdentity(
        "justice", "spiffe://lienthong.local/moj/civil-registry", server=True, client=True
    ),
    SystemIdentity("police", "spiffe://lienthong.local/mps/population", server=True, client=True),
    SystemIdentity(
        "officer-portal", "spiffe://lienthong.local/moj/officer-portal", server=False, client=True
    ),
)


@dataclass(frozen=True)
class CertificatePaths:
    """Where a certificate (PEM, the leaf alone) and its private key (PEM PKCS8) are."""

    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class DevPki:
    """Where a development PKI lives: ``ca.pem``, ``ca.key``, ``{system}.pem/.key``, officers'.

    Each officer's certificate and key are ``officers/{officer_id}.pem`` and ``.key``.
    """

    directory: Path
    ca_certificate: Path
    ca_private_key: Path

    def paths(self, system_name: str) -> CertificatePaths:
        """Return where the certificate and key of ``system_name`` are."""
        # The name becomes a file name: no separators, no hidden files, never the CA's files.
        if not _FILE_STEM.fullmatch(system_name) or system_name == _CA_STEM:
            raise ValueError(f"not a usable system name: {system_name!r}")
        return CertificatePaths(
            certificate=self.directory / f"{system_name}.pem",
            private_key=self.directory / f"{system_name}.key",
        )

    def officer_paths(self, officer_id: str) -> CertificatePaths:
        """Return where the certificate and key of officer ``officer_id`` are, in ``officers/``.

        A directory of their own: officer IDs can never collide with system names or the CA.
        """
        directory = self.directory / _OFFICERS_DIRECTORY
        stem = _check_officer_id(officer_id)
        return CertificatePaths(directory / f"{stem}.pem", directory / f"{stem}.key")


def officer_spiffe_id(officer_id: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """The SPIFFE ID of civil-status officer ``officer_id``; ValueError for a bad officer ID."""
    return f"spiffe://{trust_domain}/moj/officers/{_check_officer_id(officer_id)}"


def create_ca(
    common_name: str, *, valid_days: int = 3650
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Create a self-signed P-256 CA that may sign leaf certificates only."""
    if valid_days <= 0:
        raise ValueError(f"valid_days must be positive, got {valid_days}")
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=valid_days))
        # path_length=0: the CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def issue_certificate(  # noqa: PLR0913 -- the keyword-only knobs let tests build bad certificates
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    spiffe_id: str,
    server: bool,
    client: bool,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key_usage_digital_signature: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Issue a P-256 X.509-SVID for ``spiffe_id``, signed by the CA.

    ``not_before``, ``not_after`` (timezone-aware) and ``key_usage_digital_signature=False``
    build expired, not-yet-valid or wrongly usable certificates for tests.
    """
    segments = spiffe_segments(spiffe_id)
    if not (server or client):
        # An empty extendedKeyUsage is invalid (SIZE (1..MAX)); such a certificate has no use.
        raise ValueError("a certificate must be for server use, client use or both")
    now = datetime.now(UTC)
    valid_from = now - CLOCK_SKEW if not_before is None else _aware(not_before, "not_before")
    valid_until = now + LEAF_VALIDITY if not_after is None else _aware(not_after, "not_after")
    if valid_until <= valid_from:
        raise ValueError(f"not_after {valid_until} is not after not_before {valid_from}")

    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
    if server:
        names += [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    # RFC 5280 forbids a KeyUsage with no bit set, so the "wrong" certificate gets
    # keyAgreement instead: valid for an EC key, useless for signing a TLS handshake.
    key_usage = (
        _key_usage(digital_signature=True)
        if key_usage_digital_signature
        else _key_usage(key_agreement=True)
    )

    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(segments[-1]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_cert, ca_key), critical=False)
        # Not critical: the subject is not empty (RFC 5280 section 4.2.1.6).
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


def write_certificate(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, paths: CertificatePaths
) -> None:
    """Write the private key (PKCS8, mode 0o600), then the certificate (mode 0o644)."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a certificate on disk then always has its key next to it.
    _write_file(paths.private_key, key_pem, _PRIVATE_MODE)
    _write_file(paths.certificate, cert.public_bytes(serialization.Encoding.PEM), _PUBLIC_MODE)


def init_dev_pki(directory: Path, *, force: bool = False) -> DevPki:
    """Create the CA, every SYSTEMS certificate and the bootstrap administrator's in ``directory``.

    Without ``force`` an existing CA and existing certificates are kept and only missing
    ones are issued; with ``force`` everything is made anew.
    """
    pki = _layout(directory)
    _private_directory(directory)

    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
    new_ca = force or not pki.ca_certificate.exists()
    if new_ca:
        ca = create_ca(CA_COMMON_NAME)
        write_certificate(*ca, CertificatePaths(pki.ca_certificate, pki.ca_private_key))
        crl_path(pki).unlink(missing_ok=True)  # the old CA's CRL would not verify
    for system in SYSTEMS:
        paths = pki.paths(system.name)
        # Leaves of a replaced CA would no longer verify, so a new CA reissues them all.
        if not new_ca and paths.certificate.exists() and paths.private_key.exists():
            continue
        if ca is None:
            ca = _load_ca(pki)
        cert, key = issue_certificate(
            *ca, spiffe_id=system.spiffe_id, server=system.server, client=system.client
        )
        write_certificate(cert, key, paths)
    # The gateway is configured with the CRL from the start, before anything is revoked.
    ensure_crl(pki)
    ensure_audit_key(pki)
    # A new CA makes the administrator's certificate unusable, so it is reissued with the rest.
    issue_officer_certificate(pki, BOOTSTRAP_ADMINISTRATOR)
    return pki


def rotate_certificate(
    pki: DevPki, paths: CertificatePaths, *, revoke_old: bool = False
) -> x509.Certificate:
    """Replace a leaf's key and certificate with new ones for the same identity and uses.

    Both files are replaced atomically (key first), so services that watch them (the
    gateway) take the new pair for new connections without restart. With ``revoke_old`` the
    old certificate goes on the CRL as superseded, once the new one is in place.
    """
    old = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
    usages = old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    ca = _load_ca(pki)
    certificate, key = issue_certificate(
        *ca,
        spiffe_id=spiffe_id_of(old),
        server=ExtendedKeyUsageOID.SERVER_AUTH in usages,
        client=ExtendedKeyUsageOID.CLIENT_AUTH in usages,
    )
    write_certificate(certificate, key, paths)
    if revoke_old:
        revoke(pki, old, reason=x509.ReasonFlags.superseded)
    return certificate


def issue_officer_certificate(pki: DevPki, officer_id: str) -> CertificatePaths:
    """Issue officer ``officer_id`` a client certificate of their own; return where it is.

    The certificate is for client use only (an officer never serves) and names the officer
    by officer_spiffe_id. One already there is returned as it is if it is still usable:
    issued by this CA for this officer, in force, not revoked and next to its key; so
    running this again changes nothing, and after ``init --force`` or a revocation it
    issues a new one. ValueError for a bad officer ID.
    """
    spiffe_id = officer_spiffe_id(officer_id)
    paths = pki.officer_paths(officer_id)
    if _is_usable(paths, spiffe_id, pki):
        return paths
    cert, key = issue_certificate(*_load_ca(pki), spiffe_id=spiffe_id, server=False, client=True)
    _private_directory(paths.certificate.parent)
    write_certificate(cert, key, paths)
    return paths


def load_pki(directory: Path) -> DevPki:
    """Return the development PKI in ``directory``; FileNotFoundError if it is incomplete."""
    pki = _layout(directory)
    expected = [pki.ca_certificate, pki.ca_private_key]
    for system in SYSTEMS:
        paths = pki.paths(system.name)
        expected += [paths.certificate, paths.private_key]
    missing = [path.name for path in expected if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"no complete development PKI in {directory} (missing {', '.join(missing)}); "
            f"run `python -m certs init --dir {directory}`"
        )
    return pki


def crl_path(pki: DevPki) -> Path:
    """Where the CA's certificate revocation list (PEM) is: ``crl.pem`` in the PKI directory."""
    return pki.directory / _CRL_NAME


def ensure_crl(pki: DevPki) -> Path:
    """Create an empty CRL signed by the CA unless ``crl.pem`` exists; return its path.

    A gateway can then be configured with the CRL before anything is revoked.
    """
    path = crl_path(pki)
    if not path.exists():
        _write_crl(path, *_load_ca(pki), entries=[], number=1)
    return path


def revoke(
    pki: DevPki,
    certificate: x509.Certificate,
    *,
    reason: x509.ReasonFlags = x509.ReasonFlags.key_compromise,
) -> Path:
    """Add ``certificate`` to the CA's CRL and return the CRL's path.

    The CRL is created if absent; earlier revocations are kept (a certificate revoked again
    keeps its first entry), the CRL number goes up by one, and the new CRL is valid from now
    for CRL_VALIDITY. The file is replaced atomically, so a gateway never reads half of it.
    Two revocations running at once in one directory may lose one: this is a development
    tool, run by hand. ValueError if the certificate is not a leaf of this CA or the
    existing CRL is not this CA's.
    """
    if reason is x509.ReasonFlags.remove_from_crl:
        # removeFromCRL belongs in delta CRLs only (RFC 5280 section 5.3.1).
        raise ValueError("removeFromCRL is not a reason to revoke a certificate")
    ca_cert, ca_key = _load_ca(pki)
    _check_issued_by(certificate, ca_cert, pki)
    path = crl_path(pki)
    previous = _read_crl(path, ca_cert)
    entries = list(previous) if previous is not None else []
    number = _crl_number(previous) + 1 if previous is not None else 1
    if all(entry.serial_number != certificate.serial_number for entry in entries):
        entry = x509.RevokedCertificateBuilder().serial_number(certificate.serial_number)
        entry = entry.revocation_date(datetime.now(UTC))
        # RFC 5280 section 5.3.1: the reason code unspecified SHOULD be absent.
        if reason is not x509.ReasonFlags.unspecified:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        entries.append(entry.build())
    _write_crl(path, ca_cert, ca_key, entries=entries, number=number)
    return path


def audit_key_paths(pki: DevPki) -> tuple[Path, Path]:
    """Where the audit log's Ed25519 private key (PEM PKCS8) and its verifier key text are."""
    return (
        pki.directory / f"{AUDIT_KEY_STEM}.key",
        pki.directory / f"{AUDIT_KEY_STEM}.vkey",
    )


def ensure_audit_key(pki: DevPki, name: str = "lienthong.local/audit") -> Path:
    """Create the audit log's signing key unless it exists; return the private key's path.

    The key (mode 0o600) signs the log's checkpoints and receipts as ``name``, a
    c2sp.org/signed-note key name. The verifier key file (mode 0o644) holds the text
    ``<name>+<key ID>+<public key>`` that auditors are given; it is rewritten whenever it
    does not match the key and ``name``, as it is derived from them. NoteError if an
    existing key file is not an unencrypted Ed25519 key.
    """
    private_path, verifier_path = audit_key_paths(pki)
    if private_path.exists():
        signer = load_signer(name, private_path.read_bytes())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Key first: a verifier key on disk then always has its private key next to it.
        _write_file(private_path, pem, _PRIVATE_MODE)
        signer = NoteSigner(name, key)
    verifier_key = f"{signer.verifier_key()}\n".encode()
    try:
        current = verifier_path.read_bytes()
    except FileNotFoundError:
        current = None
    if current != verifier_key:
        _write_file(verifier_path, verifier_key, _PUBLIC_MODE)
    return private_path


def _check_officer_id(officer_id: str) -> str:
    # The ID becomes a file name and a SPIFFE ID path segment: the pattern keeps it safe as both.
    if not OFFICER_ID.fullmatch(officer_id):
        raise ValueError(
            f"not an officer ID (a lower-case letter, then up to 62 of a-z, 0-9, -): {officer_id!r}"
        )
    return officer_id


def _private_directory(directory: Path) -> None:
    directory.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
    # mkdir's mode is narrowed by the umask and ignored for an existing directory.
    directory.chmod(_DIRECTORY_MODE)


def _is_usable(paths: CertificatePaths, spiffe_id: str, pki: DevPki) -> bool:
    # Whatever cannot be read or checked is replaced, never trusted.
    try:
        certificate = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
        key = serialization.load_pem_private_key(paths.private_key.read_bytes(), password=None)
        ca_cert = _load_ca_certificate(pki)
        certificate.verify_directly_issued_by(ca_cert)
        crl = _read_crl(crl_path(pki), ca_cert)
        identity = spiffe_id_of(certificate)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    now = datetime.now(UTC)
    revoked = crl is not None and (
        crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
    )
    return (
        identity == spiffe_id
        and key.public_key() == certificate.public_key()
        and certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc
        and not revoked
    )


def _name(common_name: str) -> x509.Name:
    if not 0 < len(common_name) <= _MAX_COMMON_NAME:
        raise ValueError(f"common name must be 1 to {_MAX_COMMON_NAME} characters")
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(
    *,
    digital_signature: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    # keyEncipherment stays off: EC keys cannot encrypt (RFC 8813).
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_identifier(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> x509.AuthorityKeyIdentifier:
    # RFC 5280 section 4.2.1.1: the leaf's AKI is the issuer's SKI, whatever method made it.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _aware(moment: datetime, name: str) -> datetime:
    # cryptography reads a naive datetime as UTC; a local time would be silently wrong.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
    return moment


def _layout(directory: Path) -> DevPki:
    return DevPki(
        directory=directory,
        ca_certificate=directory / f"{_CA_STEM}.pem",
        ca_private_key=directory / f"{_CA_STEM}.key",
    )


def _load_ca_certificate(pki: DevPki) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.ca_certificate.read_bytes())


def _load_ca(pki: DevPki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    certificate = _load_ca_certificate(pki)
    try:
        pem = pki.ca_private_key.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{pki.ca_private_key} is missing, so no certificate can be issued; "
            f"run `python -m certs init --force --dir {pki.directory}` to start over"
        ) from None
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.ca_private_key} is not an EC private key")
    if key.public_key() != certificate.public_key():
        raise ValueError(
            f"{pki.ca_private_key} does not belong to {pki.ca_certificate}; "
            f"run `python -m certs init --force --dir {pki.directory}` to start over"
        )
    return certificate, key


def _check_issued_by(certificate: x509.Certificate, ca_cert: x509.Certificate, pki: DevPki) -> None:
    serial = f"{certificate.serial_number:x}"
    # The CA is self-issued, so it would pass the check below; its own CRL cannot revoke it.
    if certificate == ca_cert:
        raise ValueError("the CA cannot revoke itself; remove the PKI and run init instead")
    try:
        certificate.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise ValueError(
            f"certificate {serial} was not issued by the CA in {pki.directory}"
        ) from None


def _read_crl(path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList | None:
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        crl = x509.load_pem_x509_crl(pem)
    except ValueError:
        raise ValueError(f"{path} is not a PEM CRL; move it away to start a new one") from None
    # Extending another CA's CRL (say, after `init --force`) would re-sign its entries.
    public_key = ca_cert.public_key()
    if not (
        crl.issuer == ca_cert.subject
        and isinstance(public_key, ec.EllipticCurvePublicKey)
        and crl.is_signature_valid(public_key)
    ):
        raise ValueError(
            f"{path} is not signed by the CA in {path.parent}; move it away to start a new one"
        )
    return crl


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        # A CRL made by another tool may lack the number; ours then starts the count.
        return 0


def _write_crl(
    path: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    entries: list[x509.RevokedCertificate],
    number: int,
) -> None:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
        # Both extensions are required in every CRL (RFC 5280 sections 5.2.1 and 5.2.3).
        .add_extension(_authority_key_identifier(ca_cert, ca_key), critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_file(path, crl.public_bytes(serialization.Encoding.PEM), _PUBLIC_MODE)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    # Write a new file created 0o600 and rename it over the target: a key is never readable
    # by others, not even for an instant, and nobody ever reads half a file. O_EXCL also
    # refuses to follow a symlink planted at the temporary name.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _PRIVATE_MODE
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            # The umask may have narrowed the mode; certificates are meant to be world-readable.
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
