"""Command line of the development PKI.

Usage: ``python -m certs init [--dir certs/dev] [--force]``,
``python -m certs show [--dir certs/dev]``, ``python -m certs revoke NAME [--dir certs/dev]``
(which adds ``{dir}/{NAME}.pem`` to the CA's CRL and prints the CRL's path) and
``python -m certs officer OFFICER_ID [--dir certs/dev]`` (which issues a civil-status
officer's client certificate, unless a usable one exists, and prints its two paths) and
``python -m certs rotate NAME [--revoke-old] [--dir certs/dev]`` (a new key and certificate
for a system, or for an officer as ``officers/ID``; the gateway takes them without restart).
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from certs.pki import (
    BOOTSTRAP_ADMINISTRATOR,
    SYSTEMS,
    init_dev_pki,
    issue_officer_certificate,
    load_pki,
    officer_spiffe_id,
    revoke,
    rotate_certificate,
)
from lienthong.identity import spiffe_id_of

DEFAULT_DIRECTORY = Path("certs/dev")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    arguments = _parser().parse_args(argv)
    try:
        if arguments.command == "init":
            _init(arguments.dir, force=arguments.force)
        elif arguments.command == "revoke":
            _revoke(arguments.dir, arguments.name)
        elif arguments.command == "officer":
            _officer(arguments.dir, arguments.officer_id)
        elif arguments.command == "rotate":
            _rotate(arguments.dir, arguments.name, revoke_old=arguments.revoke_old)
        else:
            _show(arguments.dir)
    except (OSError, ValueError, TypeError) as error:
        sys.stderr.write(f"certs: {error}\n")
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m certs", description="Development PKI of lienthong (never for production)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create the CA and every system's certificate")
    init.add_argument("--force", action="store_true", help="recreate everything, CA included")
    show = commands.add_parser("show", help="list each certificate's subject, SPIFFE ID, expiry")
    revoke_ = commands.add_parser(
        "revoke", help="add a system's certificate to the CA's CRL and print the CRL's path"
    )
    revoke_.add_argument("name", help="the system whose certificate {dir}/{name}.pem is revoked")
    officer = commands.add_parser(
        "officer", help="issue a civil-status officer's client certificate and print its paths"
    )
    officer.add_argument(
        "officer_id", help="the officer's ID: a-z first, then up to 62 of a-z, 0-9 and -"
    )
    rotate = commands.add_parser(
        "rotate", help="a new key and certificate for a system or officers/ID, same identity"
    )
    rotate.add_argument("name", help="a system (e.g. gateway-server) or officers/OFFICER_ID")
    rotate.add_argument(
        "--revoke-old", action="store_true", help="put the replaced certificate on the CRL"
    )
    for command in (init, show, revoke_, officer, rotate):
        command.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_DIRECTORY,
            help=f"directory of the PKI (default: {DEFAULT_DIRECTORY})",
        )
    return parser


def _init(directory: Path, *, force: bool) -> None:
    before = {path: _version(path) for path in directory.rglob("*")} if directory.is_dir() else {}
    pki = init_dev_pki(directory, force=force)
    files = [pki.ca_certificate, pki.ca_private_key]
    administrator = pki.officer_paths(BOOTSTRAP_ADMINISTRATOR)
    for paths in [*(pki.paths(system.name) for system in SYSTEMS), administrator]:
        files += [paths.certificate, paths.private_key]
    for path in files:
        # Files are replaced, never rewritten in place, so a new inode means it was written.
        state = "wrote" if _version(path) != before.get(path) else "kept "
        _say(f"{state} {path}")
    _say("")
    for system in SYSTEMS:
        _say(f"{system.name:<16} {system.spiffe_id}")
    _say(f"{BOOTSTRAP_ADMINISTRATOR:<16} {officer_spiffe_id(BOOTSTRAP_ADMINISTRATOR)}")


def _show(directory: Path) -> None:
    pki = load_pki(directory)
    _describe("ca", x509.load_pem_x509_certificate(pki.ca_certificate.read_bytes()), ca=True)
    for system in SYSTEMS:
        pem = pki.paths(system.name).certificate.read_bytes()
        _describe(system.name, x509.load_pem_x509_certificate(pem), ca=False)


def _revoke(directory: Path, name: str) -> None:
    pki = load_pki(directory)
    certificate = x509.load_pem_x509_certificate(pki.paths(name).certificate.read_bytes())
    _say(str(revoke(pki, certificate)))


def _officer(directory: Path, officer_id: str) -> None:
    paths = issue_officer_certificate(load_pki(directory), officer_id)
    _say(str(paths.certificate))
    _say(str(paths.private_key))


def _rotate(directory: Path, name: str, *, revoke_old: bool) -> None:
    pki = load_pki(directory)
    officer = name.removeprefix("officers/")
    paths = pki.officer_paths(officer) if officer != name else pki.paths(name)
    certificate = rotate_certificate(pki, paths, revoke_old=revoke_old)
    _say(f"{paths.certificate} serial {certificate.serial_number:x}")
    _say(str(paths.private_key))


def _describe(name: str, certificate: x509.Certificate, *, ca: bool) -> None:
    if ca:
        spiffe_id = "(none: the CA)"
    else:
        try:
            spiffe_id = spiffe_id_of(certificate)
        except ValueError as error:
            spiffe_id = f"INVALID: {error}"
    _say(name)
    _say(f"  subject:   {certificate.subject.rfc4514_string()}")
    _say(f"  spiffe id: {spiffe_id}")
    _say(f"  expires:   {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")


def _version(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns


def _say(line: str) -> None:
    sys.stdout.write(f"{line}\n")


if __name__ == "__main__":
    sys.exit(main())
