"""Revocation: the dev CA's CRL, the gateway's CrlSet, and client key-usage checks."""

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from fakes import FakeClock
from structlog.testing import capture_logs

from certs.pki import (
    CA_COMMON_NAME,
    DevPki,
    create_ca,
    crl_path,
    ensure_crl,
    init_dev_pki,
    issue_certificate,
    revoke,
)
from gateway.revocation import CrlSet, RevocationError, check_client_certificate

PROJECT = Path(__file__).resolve().parents[1]
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    """A fresh development PKI per test: revocations must not leak between tests."""
    return init_dev_pki(tmp_path / "dev")


def certificate(pki: DevPki, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem(pki, name))


def pem(pki: DevPki, name: str) -> bytes:
    return pki.paths(name).certificate.read_bytes()


def load_crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def rogue_crl(path: Path, revoked: x509.Certificate) -> None:
    """Write a CRL listing ``revoked``, signed by another CA that has the dev CA's very name."""
    rogue_ca, rogue_key = create_ca(CA_COMMON_NAME)
    now = datetime.now(UTC)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(revoked.serial_number)
        .revocation_date(now)
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(rogue_ca.subject)
        .last_update(now)
        .next_update(now + timedelta(days=1))
        .add_extension(x509.CRLNumber(99), critical=False)
        .add_revoked_certificate(entry)
        .sign(rogue_key, hashes.SHA256())
    )
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


# The dev CA's CRL


def test_a_revoked_certificate_is_reported_revoked_and_an_unrevoked_one_is_not(pki: DevPki):
    path = revoke(pki, certificate(pki, "justice"))
    crls = CrlSet([path], pki.ca_certificate)
    assert crls.is_revoked(pem(pki, "justice"))
    assert not crls.is_revoked(pem(pki, "police"))
    # A second answer comes from the cache and must be the same.
    assert crls.is_revoked(pem(pki, "justice"))


def test_the_crl_lists_the_serial_and_is_signed_by_the_ca_as_rfc_5280_requires(pki: DevPki):
    justice = certificate(pki, "justice")
    path = revoke(pki, justice)
    assert path == crl_path(pki) == pki.directory / "crl.pem"
    crl = load_crl(path)
    ca = x509.load_pem_x509_certificate(pki.ca_certificate.read_bytes())
    assert crl.issuer == ca.subject
    assert crl.is_signature_valid(ca.public_key())
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)
    entry = crl.get_revoked_certificate_by_serial_number(justice.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert crl_number(crl) == 2  # init_dev_pki wrote the empty CRL number 1
    authority = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert authority.key_identifier == ski.digest
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)
    assert abs(crl.last_update_utc - datetime.now(UTC)) < timedelta(minutes=1)


def test_revoking_a_second_certificate_keeps_the_first_and_increments_the_crl_number(
    pki: DevPki,
):
    justice, police = certificate(pki, "justice"), certificate(pki, "police")
    revoke(pki, justice)
    path = revoke(pki, police, reason=x509.ReasonFlags.superseded)
    crl = load_crl(path)
    assert {entry.serial_number for entry in crl} == {justice.serial_number, police.serial_number}
    assert crl_number(crl) == 3
    crls = CrlSet([path], pki.ca_certificate)
    assert crls.is_revoked(pem(pki, "justice"))
    assert crls.is_revoked(pem(pki, "police"))
    assert not crls.is_revoked(pem(pki, "officer-portal"))


def test_revoking_a_certificate_again_keeps_one_entry_and_still_renews_the_crl(pki: DevPki):
    justice = certificate(pki, "justice")
    revoke(pki, justice)
    crl = load_crl(revoke(pki, justice))
    assert [entry.serial_number for entry in crl] == [justice.serial_number]
    assert crl_number(crl) == 3


def test_revoke_refuses_a_certificate_the_ca_did_not_issue_and_the_ca_itself(
    pki: DevPki, tmp_path: Path
):
    other = init_dev_pki(tmp_path / "other")
    before = crl_path(pki).read_bytes()
    with pytest.raises(ValueError, match="not issued by the CA"):
        revoke(pki, certificate(other, "justice"))
    ca = x509.load_pem_x509_certificate(pki.ca_certificate.read_bytes())
    with pytest.raises(ValueError, match="cannot revoke itself"):
        revoke(pki, ca)
    assert crl_path(pki).read_bytes() == before


def test_revoke_refuses_to_extend_a_crl_of_another_ca(pki: DevPki):
    rogue_crl(crl_path(pki), certificate(pki, "police"))
    with pytest.raises(ValueError, match="not signed by the CA"):
        revoke(pki, certificate(pki, "justice"))


def test_ensure_crl_creates_an_empty_crl_once_and_keeps_revocations(pki: DevPki):
    crl_path(pki).unlink()
    path = ensure_crl(pki)
    crl = load_crl(path)
    assert len(crl) == 0
    assert crl_number(crl) == 1
    assert not CrlSet([path], pki.ca_certificate).is_revoked(pem(pki, "justice"))
    revoke(pki, certificate(pki, "justice"))
    assert ensure_crl(pki) == path
    assert len(load_crl(path)) == 1
    assert crl_number(load_crl(path)) == 2


@needs_openssl
def test_openssl_verifies_the_crl_and_refuses_the_revoked_certificate(pki: DevPki):
    assert OPENSSL is not None
    path = revoke(pki, certificate(pki, "justice"))
    ca = str(pki.ca_certificate)
    checked = subprocess.run(
        [OPENSSL, "crl", "-in", str(path), "-CAfile", ca, "-noout"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "verify OK" in checked.stdout + checked.stderr
    verify = [OPENSSL, "verify", "-crl_check", "-CRLfile", str(path), "-CAfile", ca]
    refused = subprocess.run(
        [*verify, str(pki.paths("justice").certificate)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = subprocess.run(
        [*verify, str(pki.paths("police").certificate)], capture_output=True, text=True, check=False
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_cli_revoke_prints_the_crl_path_and_the_certificate_is_then_revoked(pki: DevPki):
    revoked = subprocess.run(
        [sys.executable, "-m", "certs", "revoke", "justice", "--dir", str(pki.directory)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"{crl_path(pki)}\n"
    crls = CrlSet([crl_path(pki)], pki.ca_certificate)
    assert crls.is_revoked(pem(pki, "justice"))
    assert not crls.is_revoked(pem(pki, "police"))


@pytest.mark.parametrize("name", ["ca", "nobody", "../justice"])
def test_cli_revoke_of_an_unknown_or_forbidden_name_fails_and_writes_no_crl(pki: DevPki, name: str):
    before = crl_path(pki).read_bytes()
    refused = subprocess.run(
        [sys.executable, "-m", "certs", "revoke", name, "--dir", str(pki.directory)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("certs: ")
    assert crl_path(pki).read_bytes() == before


# Reloading while the gateway runs


def test_a_revocation_takes_effect_once_the_check_interval_has_passed(pki: DevPki):
    clock = FakeClock()
    crls = CrlSet([ensure_crl(pki)], pki.ca_certificate, check_interval=0.25, clock=clock)
    justice = pem(pki, "justice")
    assert not crls.is_revoked(justice)

    revoke(pki, certificate(pki, "justice"))
    # Within the interval the files are not looked at: no stat on every call.
    assert not crls.is_revoked(justice)
    clock.advance(0.2)
    assert not crls.is_revoked(justice)

    clock.advance(0.05)
    assert crls.is_revoked(justice)
    assert not crls.is_revoked(pem(pki, "police"))


def test_a_crl_of_another_ca_appearing_on_reload_leaves_the_last_good_list_in_force(
    pki: DevPki,
):
    clock = FakeClock()
    path = revoke(pki, certificate(pki, "justice"))
    crls = CrlSet([path], pki.ca_certificate, clock=clock)
    assert crls.is_revoked(pem(pki, "justice"))

    rogue_crl(path, certificate(pki, "police"))
    clock.advance(1)
    with capture_logs() as events:
        assert crls.is_revoked(pem(pki, "justice"))
        assert not crls.is_revoked(pem(pki, "police"))
    failures = [event for event in events if event["event"] == "crl_reload_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"
    assert "signature does not verify" in failures[0]["error"]


def test_a_crl_file_that_disappears_or_is_garbled_leaves_the_last_good_list_in_force(
    pki: DevPki,
):
    clock = FakeClock()
    path = revoke(pki, certificate(pki, "justice"))
    good = path.read_bytes()
    crls = CrlSet([path], pki.ca_certificate, clock=clock)

    path.unlink()
    clock.advance(1)
    with capture_logs() as events:
        assert crls.is_revoked(pem(pki, "justice"))
    assert [event["event"] for event in events] == ["crl_reload_failed"]

    path.write_bytes(good[: len(good) // 2])
    clock.advance(1)
    with capture_logs() as events:
        assert crls.is_revoked(pem(pki, "justice"))
    assert [event["event"] for event in events] == ["crl_reload_failed"]

    # A good CRL again is taken up, with the revocations it adds.
    path.write_bytes(good)
    revoke(pki, certificate(pki, "police"))
    clock.advance(1)
    assert crls.is_revoked(pem(pki, "justice"))
    assert crls.is_revoked(pem(pki, "police"))


def test_a_crl_of_a_ca_added_to_the_bundle_while_running_is_taken_up(pki: DevPki, tmp_path: Path):
    clock = FakeClock()
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca_certificate.read_bytes())
    path = revoke(pki, certificate(pki, "justice"))
    crls = CrlSet([path], bundle, clock=clock)

    # The CA is replaced: the bundle gains the new CA and the file becomes the new CA's CRL.
    new = init_dev_pki(tmp_path / "new")
    bundle.write_bytes(pki.ca_certificate.read_bytes() + new.ca_certificate.read_bytes())
    path.write_bytes(revoke(new, certificate(new, "police")).read_bytes())
    clock.advance(1)
    with capture_logs() as events:
        assert crls.is_revoked(pem(new, "police"))
        assert not crls.is_revoked(pem(new, "justice"))
    assert [event["event"] for event in events] == ["crl_reloaded"]


def test_answers_stay_right_when_the_cache_is_smaller_than_the_callers(pki: DevPki):
    crls = CrlSet([revoke(pki, certificate(pki, "justice"))], pki.ca_certificate, cache_size=1)
    for _ in range(3):
        assert crls.is_revoked(pem(pki, "justice"))
        assert not crls.is_revoked(pem(pki, "police"))
    assert len(crls._cache) == 1


# Refused at start


def test_a_crl_signed_by_another_ca_refuses_to_start(pki: DevPki, tmp_path: Path):
    path = tmp_path / "rogue.pem"
    rogue_crl(path, certificate(pki, "justice"))
    with pytest.raises(RevocationError, match="signature does not verify"):
        CrlSet([path], pki.ca_certificate)


def test_a_crl_whose_issuer_is_not_trusted_refuses_to_start(pki: DevPki, tmp_path: Path):
    other = init_dev_pki(tmp_path / "other")
    revoke(other, certificate(other, "justice"))
    # Same CA name, so only the signature can tell: the bundle holds the first PKI's CA.
    with pytest.raises(RevocationError, match="signature does not verify"):
        CrlSet([crl_path(other)], pki.ca_certificate)
    renamed_ca, _ = create_ca("some other CA")
    bundle = tmp_path / "renamed-ca.pem"
    bundle.write_bytes(renamed_ca.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(RevocationError, match="not a trusted CA"):
        CrlSet([crl_path(other)], bundle)


def test_a_missing_or_garbled_crl_or_ca_bundle_refuses_to_start(pki: DevPki, tmp_path: Path):
    with pytest.raises(RevocationError, match="cannot read CRL"):
        CrlSet([tmp_path / "missing.pem"], pki.ca_certificate)
    garbled = tmp_path / "garbled.crl"
    garbled.write_bytes(b"\x30\x03\x02\x01")
    with pytest.raises(RevocationError, match="not a CRL"):
        CrlSet([garbled], pki.ca_certificate)
    with pytest.raises(RevocationError, match="cannot read CA certificates"):
        CrlSet([ensure_crl(pki)], tmp_path / "missing-ca.pem")
    with pytest.raises(ValueError, match="at least one CRL"):
        CrlSet([], pki.ca_certificate)


# CRLs made by OpenSSL


def openssl_crl(pki: DevPki, directory: Path, revoked: list[str]) -> Path:
    """Revoke ``revoked`` with ``openssl ca`` using the dev CA and return its PEM CRL."""
    assert OPENSSL is not None
    directory.mkdir()
    (directory / "index.txt").write_text("")
    (directory / "serial").write_text("1000\n")
    (directory / "crlnumber").write_text("01\n")
    config = directory / "openssl.cnf"
    config.write_text(
        f"""\
[ca]
default_ca = dev_ca

[dev_ca]
database = {directory}/index.txt
serial = {directory}/serial
crlnumber = {directory}/crlnumber
new_certs_dir = {directory}
certificate = {pki.ca_certificate}
private_key = {pki.ca_private_key}
default_md = sha256
default_crl_days = 7
crl_extensions = crl_extensions

[crl_extensions]
authorityKeyIdentifier = keyid:always
"""
    )
    for name in revoked:
        subprocess.run(
            [OPENSSL, "ca", "-config", str(config), "-revoke", str(pki.paths(name).certificate)],
            capture_output=True,
            check=True,
        )
    crl = directory / "crl.pem"
    subprocess.run(
        [OPENSSL, "ca", "-config", str(config), "-gencrl", "-out", str(crl)],
        capture_output=True,
        check=True,
    )
    return crl


@needs_openssl
@pytest.mark.parametrize("encoding", ["PEM", "DER"])
def test_a_crl_made_by_openssl_is_honoured(pki: DevPki, tmp_path: Path, encoding: str):
    assert OPENSSL is not None
    path = openssl_crl(pki, tmp_path / "openssl-ca", ["justice"])
    if encoding == "DER":
        der = tmp_path / "crl.der"
        subprocess.run(
            [OPENSSL, "crl", "-in", str(path), "-outform", "DER", "-out", str(der)],
            capture_output=True,
            check=True,
        )
        assert not der.read_bytes().startswith(b"-----")
        path = der
    crls = CrlSet([path], pki.ca_certificate)
    assert crls.is_revoked(pem(pki, "justice"))
    assert not crls.is_revoked(pem(pki, "police"))


@needs_openssl
def test_crls_from_several_files_are_all_honoured(pki: DevPki, tmp_path: Path):
    from_openssl = openssl_crl(pki, tmp_path / "openssl-ca", ["police"])
    ours = revoke(pki, certificate(pki, "justice"))
    crls = CrlSet([ours, from_openssl], pki.ca_certificate)
    assert crls.is_revoked(pem(pki, "justice"))
    assert crls.is_revoked(pem(pki, "police"))
    assert not crls.is_revoked(pem(pki, "officer-portal"))


# Key usage of client certificates


def test_a_normal_client_certificate_may_authenticate_a_client(pki: DevPki):
    assert check_client_certificate(pem(pki, "justice")) is None
    assert check_client_certificate(pem(pki, "officer-portal")) is None


def test_a_server_only_certificate_may_not_authenticate_a_client(pki: DevPki):
    reason = check_client_certificate(pem(pki, "gateway-server"))
    assert reason is not None
    assert "clientAuth" in reason


def test_a_key_agreement_only_certificate_may_not_authenticate_a_client():
    ca_cert, ca_key = create_ca("test CA")
    unfit, _ = issue_certificate(
        ca_cert,
        ca_key,
        spiffe_id="spiffe://lienthong.local/moj/civil-registry",
        server=False,
        client=True,
        key_usage_digital_signature=False,
    )
    reason = check_client_certificate(unfit.public_bytes(serialization.Encoding.PEM))
    assert reason is not None
    assert "digitalSignature" in reason


def test_a_ca_certificate_may_not_authenticate_a_client(pki: DevPki):
    reason = check_client_certificate(pki.ca_certificate.read_bytes())
    assert reason is not None
    assert "CA certificate" in reason
