"""Keys and certificates made with the `openssl` command, as an attacker would make them.

Shared by the hostile-certificate, data-plane and metrics tests.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lienthong.tls import TlsMaterial

CLIENT_EXTENSIONS = """basicConstraints = critical,CA:FALSE
keyUsage = critical,{key_usage}
extendedKeyUsage = {extended_key_usage}
subjectAltName = URI:{spiffe_id}
"""
CA_CONFIG = """[ca]
default_ca = this_ca
[this_ca]
certificate = {certificate}
private_key = {private_key}
database = {directory}/index.txt
serial = {directory}/serial
new_certs_dir = {directory}/issued
default_md = {digest}
policy = any_name
email_in_dn = no
unique_subject = no
[any_name]
organizationName = optional
commonName = supplied
"""


@dataclass(frozen=True)
class Made:
    """A certificate and its private key (PEM files) that openssl made."""

    certificate: Path
    private_key: Path

    def material(self, ca_certificate: Path) -> TlsMaterial:
        """These as a client's TLS material, trusting ``ca_certificate``."""
        return TlsMaterial(
            ca_certificate.read_bytes(),
            self.certificate.read_bytes(),
            self.private_key.read_bytes(),
        )


class OpenSsl:
    """Makes keys and certificates with the `openssl` command, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def run(self, *arguments: str) -> None:
        done = subprocess.run(
            ["openssl", *arguments], cwd=self.directory, capture_output=True, text=True,
            check=False, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, f"openssl {' '.join(arguments)}:\n{done.stderr}"

    def ca(self, name: str) -> Made:
        """A self-signed CA of its own (named like ours, to hide nothing but the key)."""
        made = Made(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        self.run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(made.private_key), "-out", str(made.certificate),
            "-days", "30", "-subj", "/O=lienthong/CN=lienthong development CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return made

    def self_signed(self, name: str, spiffe_id: str) -> Made:
        """A client certificate signed by its own key."""
        made = Made(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        self.run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(made.private_key), "-out", str(made.certificate),
            "-days", "30", "-subj", f"/O=lienthong/CN={name}",
            "-addext", f"subjectAltName=URI:{spiffe_id}",
            "-addext", "keyUsage=critical,digitalSignature",
            "-addext", "extendedKeyUsage=clientAuth",
        )  # fmt: skip
        return made

    def issue(
        self,
        name: str,
        ca: Made,
        *,
        spiffe_id: str,
        valid_from: dt.timedelta = dt.timedelta(minutes=-5),
        valid_until: dt.timedelta = dt.timedelta(days=30),
        key_usage: str = "digitalSignature",
        extended_key_usage: str = "clientAuth",
        key: tuple[str, ...] = ("ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        digest: str = "sha256",
    ) -> Made:
        """A client certificate signed by ``ca`` with `openssl ca`, valid relative to now;
        its key made by `openssl req -newkey` with ``key`` (e.g. ``("rsa:1024",)``), its
        signature with ``digest``."""
        made = Made(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        request = self.directory / f"{name}.csr"
        self.run(
            "req", "-new", "-newkey", *key,
            "-nodes", "-keyout", str(made.private_key), "-out", str(request),
            "-subj", f"/O=lienthong/CN={name}",
        )  # fmt: skip
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            CLIENT_EXTENSIONS.format(
                key_usage=key_usage, extended_key_usage=extended_key_usage, spiffe_id=spiffe_id
            ),
            encoding="utf-8",
        )
        now = dt.datetime.now(dt.UTC)
        self.run(
            "ca", "-config", str(self._ca_config(ca, digest)), "-batch", "-notext", "-rand_serial",
            "-startdate", f"{now + valid_from:%Y%m%d%H%M%SZ}",
            "-enddate", f"{now + valid_until:%Y%m%d%H%M%SZ}",
            "-extfile", str(extensions), "-in", str(request), "-out", str(made.certificate),
        )  # fmt: skip
        return made

    def _ca_config(self, ca: Made, digest: str) -> Path:
        """`openssl ca`'s configuration and database for ``ca`` signing with ``digest``,
        made on first use."""
        directory = self.directory / f"ca-{ca.certificate.stem}-{digest}"
        config = directory / "ca.cnf"
        if not config.exists():
            (directory / "issued").mkdir(parents=True)
            (directory / "index.txt").touch()
            config.write_text(
                CA_CONFIG.format(
                    certificate=ca.certificate,
                    private_key=ca.private_key,
                    directory=directory,
                    digest=digest,
                ),
                encoding="utf-8",
            )
        return config
