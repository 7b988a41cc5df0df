"""The development PKI: what `python -m certs init` writes and what each certificate says."""

import ipaddress
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.pki import (
    BOOTSTRAP_ADMINISTRATOR,
    CA_COMMON_NAME,
    SYSTEMS,
    CertificatePaths,
    DevPki,
    SystemIdentity,
    create_ca,
    init_dev_pki,
    issue_certificate,
    issue_officer_certificate,
    load_pki,
    officer_spiffe_id,
    revoke,
    write_certificate,
)
from lienthong.identity import TRUST_DOMAIN, spiffe_id_of

PROJECT = Path(__file__).resolve().parents[1]
SERVER_NAMES = [
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki") / "dev")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def fingerprint(path: Path) -> bytes:
    return load(path).fingerprint(hashes.SHA256())


def leaf(pki: DevPki, system: SystemIdentity) -> x509.Certificate:
    return load(pki.paths(system.name).certificate)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sign_with_names(names: list[x509.GeneralName]) -> x509.Certificate:
    """A leaf signed by a fresh CA with exactly the given SANs (issue_certificate won't)."""
    ca_cert, ca_key = create_ca("test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


# What init writes


def test_init_writes_a_ca_and_a_certificate_and_key_for_every_system(pki: DevPki):
    assert pki.ca_certificate == pki.directory / "ca.pem"
    assert pki.ca_private_key == pki.directory / "ca.key"
    written = {path.name for path in pki.directory.iterdir()}
    expected = {"ca.pem", "ca.key", "crl.pem", "audit-log.key", "audit-log.vkey", "officers"}
    for system in SYSTEMS:
        expected |= {f"{system.name}.pem", f"{system.name}.key"}
    assert written == expected
    officers = {path.name for path in (pki.directory / "officers").iterdir()}
    assert officers == {"admin.pem", "admin.key"}


def test_ca_is_a_critical_leaf_only_ca_named_for_lienthong(pki: DevPki):
    ca = load(pki.ca_certificate)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_COMMON_NAME
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "lienthong"
    ca.verify_directly_issued_by(ca)


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda system: system.name)
def test_every_leaf_is_signed_by_the_ca(pki: DevPki, system: SystemIdentity):
    certificate = leaf(pki, system)
    ca = load(pki.ca_certificate)
    certificate.verify_directly_issued_by(ca)
    authority = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert authority.value.key_identifier == ca_ski.value.digest


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda system: system.name)
def test_every_leaf_has_exactly_one_uri_san_its_spiffe_id(pki: DevPki, system: SystemIdentity):
    certificate = leaf(pki, system)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [system.spiffe_id]
    assert spiffe_id_of(certificate) == system.spiffe_id


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda system: system.name)
def test_leaf_ekus_and_server_names_follow_its_roles(pki: DevPki, system: SystemIdentity):
    certificate = leaf(pki, system)
    usages = set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert (ExtendedKeyUsageOID.SERVER_AUTH in usages) == system.server
    assert (ExtendedKeyUsageOID.CLIENT_AUTH in usages) == system.client
    assert len(usages) == system.server + system.client
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    others = [name for name in san if not isinstance(name, x509.UniformResourceIdentifier)]
    assert others == (SERVER_NAMES if system.server else [])


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda system: system.name)
def test_leaf_is_an_end_entity_for_signatures_only(pki: DevPki, system: SystemIdentity):
    certificate = leaf(pki, system)
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    assert not usage.value.crl_sign
    assert certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(certificate.public_key().curve, ec.SECP256R1)
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    last_segment = system.spiffe_id.rsplit("/", 1)[1]
    assert certificate.subject.rfc4514_string() == f"CN={last_segment},O=lienthong"


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda system: system.name)
def test_leaf_is_valid_from_five_minutes_ago_for_825_days(pki: DevPki, system: SystemIdentity):
    certificate = leaf(pki, system)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == timedelta(days=825, minutes=5)
    assert certificate.not_valid_before_utc < datetime.now(UTC) - timedelta(minutes=4)


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda system: system.name)
def test_certificate_file_holds_the_leaf_alone_and_key_file_its_pkcs8_key(
    pki: DevPki, system: SystemIdentity
):
    paths = pki.paths(system.name)
    assert len(x509.load_pem_x509_certificates(paths.certificate.read_bytes())) == 1
    pem = paths.private_key.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(pem, password=None)
    assert key.public_key() == leaf(pki, system).public_key()


def test_keys_are_owner_only_certificates_public_and_directory_private(pki: DevPki):
    assert mode(pki.directory) == 0o700
    assert mode(pki.ca_private_key) == 0o600
    assert mode(pki.ca_certificate) == 0o644
    for system in SYSTEMS:
        assert mode(pki.paths(system.name).private_key) == 0o600
        assert mode(pki.paths(system.name).certificate) == 0o644
    administrator = pki.officer_paths(BOOTSTRAP_ADMINISTRATOR)
    assert mode(administrator.certificate.parent) == 0o700
    assert mode(administrator.private_key) == 0o600
    assert mode(administrator.certificate) == 0o644


def test_write_certificate_makes_an_existing_readable_key_file_owner_only(tmp_path: Path):
    paths = CertificatePaths(tmp_path / "x.pem", tmp_path / "x.key")
    paths.private_key.write_bytes(b"old")
    paths.private_key.chmod(0o644)
    ca_cert, ca_key = create_ca("test CA")
    write_certificate(ca_cert, ca_key, paths)
    assert mode(paths.private_key) == 0o600
    assert load(paths.certificate) == ca_cert
    assert sorted(path.name for path in tmp_path.iterdir()) == ["x.key", "x.pem"]


# Running init again


def files_of(directory: Path) -> dict[Path, tuple[int, bytes]]:
    """Each file under ``directory`` with its inode (files are replaced, never rewritten)."""
    return {
        path: (path.stat().st_ino, path.read_bytes())
        for path in directory.rglob("*")
        if path.is_file()
    }


def test_init_again_without_force_keeps_the_ca_and_every_certificate(tmp_path: Path):
    first = init_dev_pki(tmp_path)
    before = files_of(tmp_path)
    second = init_dev_pki(tmp_path)
    assert second == first
    assert files_of(tmp_path) == before


def test_init_again_with_force_makes_a_new_ca_and_new_leaves(tmp_path: Path):
    pki = init_dev_pki(tmp_path)
    old_ca = fingerprint(pki.ca_certificate)
    old_justice = fingerprint(pki.paths("justice").certificate)
    old_administrator = fingerprint(pki.officer_paths(BOOTSTRAP_ADMINISTRATOR).certificate)
    init_dev_pki(tmp_path, force=True)
    assert fingerprint(pki.ca_certificate) != old_ca
    assert fingerprint(pki.paths("justice").certificate) != old_justice
    leaf(pki, SYSTEMS[0]).verify_directly_issued_by(load(pki.ca_certificate))
    administrator = pki.officer_paths(BOOTSTRAP_ADMINISTRATOR).certificate
    assert fingerprint(administrator) != old_administrator
    load(administrator).verify_directly_issued_by(load(pki.ca_certificate))


def test_init_again_issues_only_the_missing_leaf_from_the_same_ca(tmp_path: Path):
    pki = init_dev_pki(tmp_path)
    ca = fingerprint(pki.ca_certificate)
    justice = fingerprint(pki.paths("justice").certificate)
    pki.paths("police").certificate.unlink()
    init_dev_pki(tmp_path)
    assert fingerprint(pki.ca_certificate) == ca
    assert fingerprint(pki.paths("justice").certificate) == justice
    load(pki.paths("police").certificate).verify_directly_issued_by(load(pki.ca_certificate))


def test_load_pki_finds_an_initialised_pki(tmp_path: Path):
    initialised = init_dev_pki(tmp_path)
    assert load_pki(tmp_path) == initialised


def test_load_pki_says_how_to_initialise_a_missing_pki(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="python -m certs init"):
        load_pki(tmp_path / "nowhere")


def test_paths_refuses_names_that_leave_the_directory_or_hit_the_ca(pki: DevPki):
    for name in ("../justice", "a/b", ".hidden", "", "ca"):
        with pytest.raises(ValueError, match="system name"):
            pki.paths(name)


# Officers' certificates


def test_officer_spiffe_id_names_the_officer_under_moj_officers():
    assert officer_spiffe_id("alice") == "spiffe://lienthong.local/moj/officers/alice"
    assert officer_spiffe_id("a-1", "example.org") == "spiffe://example.org/moj/officers/a-1"
    assert officer_spiffe_id("a" * 63).endswith("/" + "a" * 63)


BAD_OFFICER_IDS = ["", "Alice", "1st", "-a", "a_b", "a.b", "a/b", "../a", "a b", "a\n", "a" * 64]


@pytest.mark.parametrize("officer_id", BAD_OFFICER_IDS)
def test_bad_officer_ids_are_refused_before_anything_is_written(pki: DevPki, officer_id: str):
    before = files_of(pki.directory)
    with pytest.raises(ValueError, match="not an officer ID"):
        officer_spiffe_id(officer_id)
    with pytest.raises(ValueError, match="not an officer ID"):
        issue_officer_certificate(pki, officer_id)
    assert files_of(pki.directory) == before


def test_init_issues_the_bootstrap_administrator_a_client_only_certificate(pki: DevPki):
    paths = pki.officer_paths(BOOTSTRAP_ADMINISTRATOR)
    assert paths == CertificatePaths(
        pki.directory / "officers" / "admin.pem", pki.directory / "officers" / "admin.key"
    )
    certificate = load(paths.certificate)
    assert spiffe_id_of(certificate) == "spiffe://lienthong.local/moj/officers/admin"
    usages = list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(officer_spiffe_id("admin"))]
    assert certificate.subject.rfc4514_string() == "CN=admin,O=lienthong"
    certificate.verify_directly_issued_by(load(pki.ca_certificate))
    key = serialization.load_pem_private_key(paths.private_key.read_bytes(), password=None)
    assert key.public_key() == certificate.public_key()


def test_issue_officer_certificate_writes_a_new_officer_next_to_the_administrator(
    tmp_path: Path,
):
    pki = init_dev_pki(tmp_path)
    paths = issue_officer_certificate(pki, "nguyen-van-a")
    assert paths == pki.officer_paths("nguyen-van-a")
    assert paths.certificate == tmp_path / "officers" / "nguyen-van-a.pem"
    certificate = load(paths.certificate)
    assert spiffe_id_of(certificate) == "spiffe://lienthong.local/moj/officers/nguyen-van-a"
    usages = list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == [ExtendedKeyUsageOID.CLIENT_AUTH]
    certificate.verify_directly_issued_by(load(pki.ca_certificate))
    assert mode(paths.private_key) == 0o600
    assert mode(paths.certificate) == 0o644


def test_issue_officer_certificate_again_returns_the_same_files_untouched(tmp_path: Path):
    pki = init_dev_pki(tmp_path)
    first = issue_officer_certificate(pki, "alice")
    before = files_of(tmp_path)
    assert issue_officer_certificate(pki, "alice") == first
    assert files_of(tmp_path) == before


def test_issue_officer_certificate_replaces_one_the_ca_no_longer_vouches_for(tmp_path: Path):
    """A revoked certificate, another CA's, or one without its key is reissued."""
    pki = init_dev_pki(tmp_path / "dev")
    paths = issue_officer_certificate(pki, "alice")
    ca = load(pki.ca_certificate)

    revoked = load(paths.certificate)
    revoke(pki, revoked)
    issue_officer_certificate(pki, "alice")
    assert load(paths.certificate).serial_number != revoked.serial_number
    load(paths.certificate).verify_directly_issued_by(ca)

    other = init_dev_pki(tmp_path / "other")
    foreign = other.officer_paths(BOOTSTRAP_ADMINISTRATOR)
    shutil.copy(foreign.certificate, paths.certificate)
    shutil.copy(foreign.private_key, paths.private_key)
    issue_officer_certificate(pki, "alice")
    assert spiffe_id_of(load(paths.certificate)).endswith("/officers/alice")
    load(paths.certificate).verify_directly_issued_by(ca)

    kept = fingerprint(paths.certificate)
    paths.private_key.unlink()
    issue_officer_certificate(pki, "alice")
    assert fingerprint(paths.certificate) != kept
    key = serialization.load_pem_private_key(paths.private_key.read_bytes(), password=None)
    assert key.public_key() == load(paths.certificate).public_key()


def test_issue_officer_certificate_replaces_an_expired_one(tmp_path: Path):
    pki = init_dev_pki(tmp_path)
    paths = pki.officer_paths("alice")
    now = datetime.now(UTC)
    ca_cert = load(pki.ca_certificate)
    ca_key = serialization.load_pem_private_key(pki.ca_private_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    expired = issue_certificate(
        ca_cert,
        ca_key,
        spiffe_id=officer_spiffe_id("alice"),
        server=False,
        client=True,
        not_before=now - timedelta(days=2),
        not_after=now - timedelta(days=1),
    )
    write_certificate(*expired, paths)
    issue_officer_certificate(pki, "alice")
    assert load(paths.certificate).not_valid_after_utc > now


def test_spiffe_id_of_rejects_a_certificate_with_two_uri_sans():
    certificate = sign_with_names(
        [
            x509.UniformResourceIdentifier("spiffe://lienthong.local/moj/civil-registry"),
            x509.UniformResourceIdentifier("spiffe://lienthong.local/mps/population"),
        ]
    )
    with pytest.raises(ValueError, match="exactly one URI SAN"):
        spiffe_id_of(certificate)


def test_spiffe_id_of_rejects_a_certificate_with_no_uri_san():
    with pytest.raises(ValueError, match="exactly one URI SAN"):
        spiffe_id_of(sign_with_names([x509.DNSName("localhost")]))
    with pytest.raises(ValueError, match="no subjectAltName"):
        spiffe_id_of(sign_with_names([]))


@pytest.mark.parametrize(
    "uri",
    [
        "https://lienthong.local/gateway",
        "spiffe://example.org/gateway",
        f"spiffe://{TRUST_DOMAIN}",
        f"spiffe://{TRUST_DOMAIN}/",
        f"spiffe://{TRUST_DOMAIN}:443/gateway",
        f"spiffe://{TRUST_DOMAIN}/gateway/",
        f"spiffe://{TRUST_DOMAIN}/a//b",
        f"spiffe://{TRUST_DOMAIN}/a/../b",
        f"spiffe://{TRUST_DOMAIN}/gateway?x=1",
        f"spiffe://{TRUST_DOMAIN}/gate%20way",
    ],
)
def test_spiffe_id_of_rejects_uris_outside_our_trust_domain_or_without_a_clean_path(uri: str):
    with pytest.raises(ValueError, match="SPIFFE ID"):
        spiffe_id_of(sign_with_names([x509.UniformResourceIdentifier(uri)]))


# Certificates that tests of other components need


def test_issue_certificate_builds_expired_and_not_yet_valid_certificates():
    ca_cert, ca_key = create_ca("test CA")
    now = datetime.now(UTC)
    expired, _ = issue_certificate(
        ca_cert,
        ca_key,
        spiffe_id="spiffe://lienthong.local/moj/civil-registry",
        server=False,
        client=True,
        not_before=now - timedelta(days=2),
        not_after=now - timedelta(days=1),
    )
    assert expired.not_valid_after_utc < now
    future, _ = issue_certificate(
        ca_cert,
        ca_key,
        spiffe_id="spiffe://lienthong.local/moj/civil-registry",
        server=False,
        client=True,
        not_before=now + timedelta(days=1),
    )
    assert future.not_valid_before_utc > now
    future.verify_directly_issued_by(ca_cert)


def test_issue_certificate_builds_a_certificate_unfit_for_signatures():
    ca_cert, ca_key = create_ca("test CA")
    certificate, _ = issue_certificate(
        ca_cert,
        ca_key,
        spiffe_id="spiffe://lienthong.local/gateway",
        server=True,
        client=False,
        key_usage_digital_signature=False,
    )
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert not usage.value.digital_signature


def test_issue_certificate_refuses_naive_times_bad_spiffe_ids_and_no_role():
    ca_cert, ca_key = create_ca("test CA")
    spiffe_id = "spiffe://lienthong.local/gateway"
    with pytest.raises(ValueError, match="timezone-aware"):
        issue_certificate(
            ca_cert,
            ca_key,
            spiffe_id=spiffe_id,
            server=True,
            client=False,
            not_after=datetime(2030, 1, 1),  # noqa: DTZ001 -- the naive time is the point
        )
    with pytest.raises(ValueError, match="SPIFFE ID"):
        issue_certificate(
            ca_cert, ca_key, spiffe_id="spiffe://other.org/x", server=True, client=False
        )
    with pytest.raises(ValueError, match="server use, client use"):
        issue_certificate(ca_cert, ca_key, spiffe_id=spiffe_id, server=False, client=False)


# The command line and OpenSSL


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certs", *arguments],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_init_lists_files_written_and_spiffe_ids_then_show_lists_certificates(
    tmp_path: Path,
):
    first = run("init", "--dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert f"wrote {tmp_path / 'ca.key'}" in first.stdout
    assert f"wrote {tmp_path / 'officers' / 'admin.pem'}" in first.stdout
    for system in SYSTEMS:
        assert system.spiffe_id in first.stdout
    assert "spiffe://lienthong.local/moj/officers/admin" in first.stdout
    again = run("init", "--dir", str(tmp_path))
    assert f"kept  {tmp_path / 'justice.pem'}" in again.stdout
    assert f"kept  {tmp_path / 'officers' / 'admin.key'}" in again.stdout
    assert "wrote" not in again.stdout
    shown = run("show", "--dir", str(tmp_path))
    assert shown.returncode == 0, shown.stderr
    assert "CN=civil-registry,O=lienthong" in shown.stdout
    assert "spiffe://lienthong.local/mps/population" in shown.stdout
    assert "expires:" in shown.stdout


def test_cli_show_of_a_missing_pki_fails_with_a_hint(tmp_path: Path):
    shown = run("show", "--dir", str(tmp_path / "nowhere"))
    assert shown.returncode == 1
    assert "python -m certs init" in shown.stderr


def test_cli_officer_issues_a_certificate_and_prints_its_two_paths(tmp_path: Path):
    assert run("init", "--dir", str(tmp_path)).returncode == 0
    issued = run("officer", "alice", "--dir", str(tmp_path))
    assert issued.returncode == 0, issued.stderr
    certificate, key = tmp_path / "officers" / "alice.pem", tmp_path / "officers" / "alice.key"
    assert issued.stdout == f"{certificate}\n{key}\n"
    assert spiffe_id_of(load(certificate)) == "spiffe://lienthong.local/moj/officers/alice"
    before = files_of(tmp_path)
    again = run("officer", "alice", "--dir", str(tmp_path))
    assert again.stdout == issued.stdout
    assert files_of(tmp_path) == before


def test_cli_officer_refuses_a_bad_id_and_a_missing_pki(tmp_path: Path):
    assert run("init", "--dir", str(tmp_path)).returncode == 0
    bad = run("officer", "Alice", "--dir", str(tmp_path))
    assert bad.returncode == 1
    assert "not an officer ID" in bad.stderr
    assert not (tmp_path / "officers" / "Alice.pem").exists()
    missing = run("officer", "alice", "--dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert "python -m certs init" in missing.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_the_administrator_for_client_use_only(pki: DevPki):
    openssl = shutil.which("openssl")
    assert openssl is not None
    ca = str(pki.ca_certificate)
    administrator = str(pki.officer_paths(BOOTSTRAP_ADMINISTRATOR).certificate)
    outcomes = {}
    for purpose in ("sslclient", "sslserver"):
        verified = subprocess.run(
            [openssl, "verify", "-x509_strict", "-purpose", purpose, "-CAfile", ca, administrator],
            capture_output=True,
            text=True,
            check=False,
        )
        outcomes[purpose] = verified.returncode
    assert outcomes == {"sslclient": 0, "sslserver": 2}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_justice_and_shows_its_spiffe_uri(pki: DevPki):
    openssl = shutil.which("openssl")
    assert openssl is not None
    ca, justice = str(pki.ca_certificate), str(pki.paths("justice").certificate)
    for purpose in ("sslserver", "sslclient"):
        verified = subprocess.run(
            [openssl, "verify", "-x509_strict", "-purpose", purpose, "-CAfile", ca, justice],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.strip() == f"{justice}: OK"
    shown = subprocess.run(
        [openssl, "x509", "-in", justice, "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "URI:spiffe://lienthong.local/moj/civil-registry" in shown.stdout


def test_rotate_gives_a_system_a_new_key_and_certificate_with_the_same_identity(tmp_path: Path):
    """`certs rotate` keeps the SPIFFE ID and uses; the old certificate goes on the CRL."""
    pki = init_dev_pki(tmp_path)
    paths = pki.paths("gateway-server")
    old = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
    old_key = paths.private_key.read_bytes()

    rotated = run("rotate", "gateway-server", "--revoke-old", "--dir", str(tmp_path))

    assert rotated.returncode == 0, rotated.stderr
    new = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
    assert new.serial_number != old.serial_number
    assert paths.private_key.read_bytes() != old_key
    assert spiffe_id_of(new) == spiffe_id_of(old)
    usages = new.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    key = serialization.load_pem_private_key(paths.private_key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == new.public_key().public_numbers()
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(old.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(new.serial_number) is None


def test_rotate_an_officer_keeps_them_an_officer(tmp_path: Path):
    """`certs rotate officers/ID`: the same officer identity, client use only."""
    init_dev_pki(tmp_path)
    before = (tmp_path / "officers" / "admin.pem").read_bytes()

    rotated = run("rotate", "officers/admin", "--dir", str(tmp_path))

    assert rotated.returncode == 0, rotated.stderr
    new = x509.load_pem_x509_certificate((tmp_path / "officers" / "admin.pem").read_bytes())
    assert new.public_bytes(serialization.Encoding.PEM) != before
    assert spiffe_id_of(new) == f"spiffe://{TRUST_DOMAIN}/moj/officers/admin"
    assert run("rotate", "nobody", "--dir", str(tmp_path)).returncode == 1
