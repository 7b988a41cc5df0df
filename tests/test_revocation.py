"""Revocation: the dev CA's CRL, and the CRLs lienthong-gateway honours, at start and as
they change while it runs."""

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from compiled_gateway import CompiledGateway, refused_at_start, start_compiled
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from echo_upstream import METHODS, UNARY, start_echo
from gateway_fixtures import PURPOSE, gateway_config
from stack import tls_of
from waiting import eventually

from certs.pki import (
    CA_COMMON_NAME,
    DevPki,
    create_ca,
    crl_path,
    ensure_crl,
    init_dev_pki,
    revoke,
)
from lienthong.tls import TlsMaterial, secure_channel

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


def lists(pki: DevPki, path: Path, name: str) -> bool:
    """Whether the CRL at ``path``, signed by the dev CA, lists ``name``'s certificate."""
    crl = load_crl(path)
    ca = x509.load_pem_x509_certificate(pki.ca_certificate.read_bytes())
    assert crl.issuer == ca.subject
    assert crl.is_signature_valid(ca.public_key())
    serial = certificate(pki, name).serial_number
    return crl.get_revoked_certificate_by_serial_number(serial) is not None


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
    assert lists(pki, path, "justice")
    assert lists(pki, path, "police")
    assert not lists(pki, path, "officer-portal")


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
    assert not lists(pki, path, "justice")
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
    assert lists(pki, crl_path(pki), "justice")
    assert not lists(pki, crl_path(pki), "police")


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


# The gateway's CRLs: a caller whose certificate one lists is refused, the others served


OK = grpc.StatusCode.OK


@contextmanager
def serving(pki: DevPki, directory: Path, crls: tuple[Path, ...]) -> Iterator[CompiledGateway]:
    """lienthong-gateway on ``pki`` with ``crls``, in front of the echo upstream."""
    echo_server, echo_port, _ = start_echo(tls_of(pki, "police").read())
    config = gateway_config(pki, directory, f"127.0.0.1:{echo_port}", crls=crls)
    gateway = start_compiled(config, directory, METHODS)
    try:
        yield gateway
    finally:
        gateway.stop()
        echo_server.stop(grace=None).wait()


def status(gateway: CompiledGateway, material: TlsMaterial) -> grpc.StatusCode:
    """The status of one call presenting ``material`` (UNAUTHENTICATED if revoked)."""
    with secure_channel(gateway.address, material) as channel:
        try:
            channel.unary_unary(UNARY)(b"x", timeout=10, metadata=PURPOSE)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def revoked(gateway: CompiledGateway, pki: DevPki, name: str) -> bool:
    """Whether the gateway refuses ``name`` of ``pki`` as revoked. If not, it serves the call,
    or refuses it by the policy, which comes after revocation (police is granted nothing)."""
    code = status(gateway, tls_of(pki, name).read())
    assert code in {OK, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}, code
    return code == grpc.StatusCode.UNAUTHENTICATED


def not_reloaded(gateway: CompiledGateway) -> list[dict[str, object]]:
    """The gateway's log lines about CRLs (with the TLS files) it could not use."""
    return [
        event
        for event in gateway.events()
        if event["event"] == "files_not_reloaded" and event["files"] == "server_tls"
    ]


def test_a_crl_file_that_disappears_or_is_garbled_leaves_the_last_good_list_in_force(
    pki: DevPki, tmp_path: Path
):
    path = revoke(pki, certificate(pki, "justice"))
    good = path.read_bytes()
    with serving(pki, tmp_path, (path,)) as gateway:
        assert revoked(gateway, pki, "justice")
        assert not revoked(gateway, pki, "police")

        path.unlink()
        assert eventually(lambda: len(not_reloaded(gateway)) == 1)
        assert revoked(gateway, pki, "justice")

        path.write_bytes(good[: len(good) // 2])
        assert eventually(lambda: len(not_reloaded(gateway)) == 2)
        assert revoked(gateway, pki, "justice")

        # A good CRL again is taken up, with the revocations it adds.
        path.write_bytes(good)
        revoke(pki, certificate(pki, "police"))
        assert eventually(lambda: revoked(gateway, pki, "police"))
        assert revoked(gateway, pki, "justice")
        assert len(not_reloaded(gateway)) == 2


def test_a_crl_of_another_ca_appearing_on_reload_leaves_the_last_good_list_in_force(
    pki: DevPki, tmp_path: Path
):
    path = revoke(pki, certificate(pki, "justice"))
    with serving(pki, tmp_path, (path,)) as gateway:
        assert revoked(gateway, pki, "justice")

        rogue_crl(path, certificate(pki, "police"))
        assert eventually(lambda: len(not_reloaded(gateway)) == 1)
        assert revoked(gateway, pki, "justice")
        assert not revoked(gateway, pki, "police")
        (failure,) = not_reloaded(gateway)
        assert failure["level"] == "error"


def test_a_crl_of_a_ca_added_to_the_bundle_while_running_is_taken_up(pki: DevPki, tmp_path: Path):
    path = revoke(pki, certificate(pki, "justice"))
    with serving(pki, tmp_path, (path,)) as gateway:
        # The CA is replaced: the bundle gains the new CA, the file becomes the new CA's CRL.
        new = init_dev_pki(tmp_path / "new")
        old_ca = pki.ca_certificate.read_bytes()
        pki.ca_certificate.write_bytes(old_ca + new.ca_certificate.read_bytes())
        path.write_bytes(revoke(new, certificate(new, "police")).read_bytes())

        def of_new(name: str) -> TlsMaterial:  # trusting the gateway's (old) CA
            files = tls_of(new, name).read()
            return TlsMaterial(old_ca, files.certificate, files.private_key)

        assert eventually(
            lambda: status(gateway, of_new("police")) == grpc.StatusCode.UNAUTHENTICATED
        )
        assert status(gateway, of_new("justice")) == OK
        assert not_reloaded(gateway) == []


# Refused at start


def refused_with(pki: DevPki, directory: Path, crls: tuple[Path, ...], **changes: object) -> str:
    """What lienthong-gateway says refusing to start with ``crls`` (and ``changes``)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = gateway_config(pki, directory, "127.0.0.1:1", crls=crls)
    return refused_at_start(dataclasses.replace(config, **changes), directory, METHODS)


def test_a_crl_signed_by_another_ca_refuses_to_start(pki: DevPki, tmp_path: Path):
    path = tmp_path / "rogue.pem"
    rogue_crl(path, certificate(pki, "justice"))
    assert "rogue.pem" in refused_with(pki, tmp_path, (path,))


def test_a_crl_whose_issuer_is_not_trusted_refuses_to_start(pki: DevPki, tmp_path: Path):
    other = init_dev_pki(tmp_path / "other")
    revoke(other, certificate(other, "justice"))
    # Same CA name, so only the signature can tell: the bundle holds the first PKI's CA.
    assert "crl.pem" in refused_with(pki, tmp_path / "same-name", (crl_path(other),))
    renamed_ca, _ = create_ca("some other CA")
    bundle = tmp_path / "renamed-ca.pem"
    bundle.write_bytes(renamed_ca.public_bytes(serialization.Encoding.PEM))
    # The CA bundle of the server leg, which the CRLs are checked against.
    tls = dataclasses.replace(tls_of(pki, "gateway-server"), ca_certificate=bundle)
    assert "crl.pem" in refused_with(pki, tmp_path / "renamed", (crl_path(other),), tls=tls)


def test_a_missing_or_garbled_crl_or_ca_bundle_refuses_to_start(pki: DevPki, tmp_path: Path):
    assert "missing.pem" in refused_with(pki, tmp_path / "missing", (tmp_path / "missing.pem",))
    garbled = tmp_path / "garbled.crl"
    garbled.write_bytes(b"\x30\x03\x02\x01")
    assert "garbled.crl" in refused_with(pki, tmp_path / "garbled", (garbled,))
    tls = dataclasses.replace(
        tls_of(pki, "gateway-server"), ca_certificate=tmp_path / "missing-ca.pem"
    )
    assert "missing-ca.pem" in refused_with(pki, tmp_path / "no-ca", (ensure_crl(pki),), tls=tls)


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
    with serving(pki, tmp_path, (path,)) as gateway:
        assert revoked(gateway, pki, "justice")
        assert not revoked(gateway, pki, "police")


@needs_openssl
def test_crls_from_several_files_are_all_honoured(pki: DevPki, tmp_path: Path):
    from_openssl = openssl_crl(pki, tmp_path / "openssl-ca", ["police"])
    ours = revoke(pki, certificate(pki, "justice"))
    with serving(pki, tmp_path, (ours, from_openssl)) as gateway:
        assert revoked(gateway, pki, "justice")
        assert revoked(gateway, pki, "police")
        assert not revoked(gateway, pki, "officer-portal")
