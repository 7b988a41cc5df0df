"""Signed notes (c2sp.org/signed-note) with Ed25519, checkpoints and receipts.

A signed note is a text ending in a newline, a blank line, then one line per signature::

    lienthong.local/audit
    42
    <base64 root hash>

    — lienthong.local/audit <base64(4-byte key ID || Ed25519 signature)>

The key ID is ``SHA-256(key name || 0x0A || 0x01 || public key)[:4]``. Keys are handed to
verifiers as the text Go's ``golang.org/x/mod/sumdb/note`` reads:
``<name>+<8 hex digits key ID>+<base64(0x01 || public key)>``, so a verifier built with Go's
package (or any c2sp.org/signed-note implementation) checks our checkpoints and receipts, and
ours checks theirs.

The note texts signed here are checkpoints (c2sp.org/tlog-checkpoint: origin, tree size,
root hash) and receipts (``lienthong receipt v1``, origin, leaf index, leaf hash, exchange
id). Their first lines differ in kind, so neither ever parses as the other.

Errors::

    ValueError
    └── NoteError   a malformed note, key or text; a signature that fails; no known signature

Base64 is the standard alphabet with padding (RFC 4648 section 4), and only its canonical
form is accepted: each value has exactly one text form, so nothing signed can be re-encoded.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

# The signature type identifier byte of Ed25519 (c2sp.org/signed-note, "Signature types").
_ED25519: Final = b"\x01"
_KEY_ID_SIZE: Final = 4
_PUBLIC_KEY_SIZE: Final = 32
_HASH_SIZE: Final = 32  # SHA-256, the RFC 6962 Merkle tree's hash
# A verifier must accept at least 16 signatures; Go's note package stops at 100, and so do we,
# so that a note stuffed with signature lines cannot make us parse for long.
_MAX_SIGNATURES: Final = 100
# Go's tlog parses tree sizes as int64; a larger number would not interoperate.
_MAX_INTEGER: Final = 2**63 - 1
_SIGNATURE_PREFIX: Final = "\N{EM DASH} "
_SEPARATOR: Final = "\n\n"
_CONTROL: Final = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII controls except newline
_HEX_KEY_ID: Final = re.compile(r"[0-9a-fA-F]{8}")  # strconv.ParseUint(s, 16, 32), 8 digits
_DECIMAL: Final = re.compile(r"0|[1-9][0-9]*")  # ASCII only: int() would take "٣" or "+3"
_CHECKPOINT_LINES: Final = 3
_RECEIPT_LINES: Final = 5
RECEIPT_HEADER: Final = "lienthong receipt v1"


class NoteError(ValueError):
    """A note, key or note text that is malformed, or a note whose signatures do not verify."""


class NoteSigner:
    """Signs note texts with one named Ed25519 key."""

    name: str
    key_id: bytes

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        """Sign as ``name`` (non-empty, no spaces or '+'); NoteError if the name is invalid."""
        _check_name(name)
        self.name = name
        self._private_key = private_key
        self._public_key = private_key.public_key()
        self.key_id = _key_id(name, _ED25519 + self._public_key.public_bytes_raw())

    def verifier_key(self) -> str:
        """The public half as text: ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        encoded = _encode_base64(_ED25519 + self._public_key.public_bytes_raw())
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def sign(self, text: str) -> str:
        """Return the signed note: ``text``, a blank line and this key's signature line.

        NoteError unless ``text`` is a note text: valid UTF-8 ending in a newline, without
        control characters other than newlines.
        """
        _check_text(text)
        signature = self._private_key.sign(text.encode("utf-8"))
        encoded = _encode_base64(self.key_id + signature)
        return f"{text}\n{_SIGNATURE_PREFIX}{self.name} {encoded}\n"


class NoteVerifier:
    """Opens notes signed by one known Ed25519 key."""

    name: str
    key_id: bytes

    def __init__(self, verifier_key: str) -> None:
        """Read a verifier key ``<name>+<hex key ID>+<base64 key>``; NoteError if malformed.

        As Go's ``note.NewVerifier``: the key ID must be the one the name and key give, and
        the key must be an Ed25519 one (type byte 0x01 and 32 bytes).
        """
        name, _, rest = verifier_key.partition("+")
        hex_id, _, encoded = rest.partition("+")
        if not _HEX_KEY_ID.fullmatch(hex_id):
            raise NoteError("malformed verifier key: the key ID is not 8 hex digits")
        _check_name(name)
        key = _decode_base64(encoded, "verifier key")
        expected_id = bytes.fromhex(hex_id)
        if not key or _key_id(name, key) != expected_id:
            raise NoteError("malformed verifier key: the key ID does not match the name and key")
        if key[:1] != _ED25519:
            raise NoteError(f"unsupported verifier key algorithm {key[0]:#04x}")
        if len(key) != 1 + _PUBLIC_KEY_SIZE:
            raise NoteError("malformed verifier key: an Ed25519 key is 32 bytes")
        self.name = name
        self.key_id = expected_id
        self._public_key = Ed25519PublicKey.from_public_bytes(key[1:])

    def open(self, note: str) -> str:
        """Return the text of ``note`` once this key's signature on it verifies.

        Signatures by other keys are ignored. NoteError if the note is malformed, if any
        signature by this key fails to verify, or if this key signed nothing.
        """
        text, signature_lines = _split(note)
        message = text.encode("utf-8")
        verified = False
        for name, signature in signature_lines:
            if name != self.name or signature[:_KEY_ID_SIZE] != self.key_id:
                continue  # another key's: a witness's, or an old key's during a rotation
            try:
                self._public_key.verify(signature[_KEY_ID_SIZE:], message)
            except InvalidSignature:
                # One bad signature by a trusted key means someone forged or altered it:
                # reject the note rather than look for a good copy.
                raise NoteError(
                    f"invalid signature for key {self.name}+{self.key_id.hex()}"
                ) from None
            verified = True
        if not verified:
            raise NoteError(f"note has no signature by key {self.name}+{self.key_id.hex()}")
        return text


@dataclass(frozen=True)
class Checkpoint:
    """A Merkle tree head of a transparency log (c2sp.org/tlog-checkpoint)."""

    origin: str
    tree_size: int
    root_hash: bytes

    def __post_init__(self) -> None:
        """NoteError unless each field can be written as its checkpoint line."""
        _check_line(self.origin, "origin")
        _check_integer(self.tree_size, "tree size")
        _check_hash(self.root_hash, "root hash")


def checkpoint_text(checkpoint: Checkpoint) -> str:
    """The checkpoint's note text: origin, tree size and base64 root hash, one per line."""
    root_hash = _encode_base64(checkpoint.root_hash)
    return f"{checkpoint.origin}\n{checkpoint.tree_size}\n{root_hash}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Read a checkpoint note text; NoteError on any deviation from c2sp.org/tlog-checkpoint.

    Extension lines after the root hash are allowed (if non-empty) and dropped: monitors
    cannot audit them, and this log writes none.
    """
    lines = _lines(text)
    if len(lines) < _CHECKPOINT_LINES:
        raise NoteError("malformed checkpoint: fewer than three lines")
    origin, size, root_hash, *extensions = lines
    if not all(extensions):
        raise NoteError("malformed checkpoint: an empty extension line")
    return Checkpoint(
        origin=origin,
        tree_size=_parse_integer(size, "tree size"),
        root_hash=_decode_base64(root_hash, "root hash"),
    )


@dataclass(frozen=True)
class Receipt:
    """The log's signed word that an exchange's entry is leaf ``leaf_index`` of its tree."""

    origin: str
    leaf_index: int
    leaf_hash: bytes
    exchange_id: str

    def __post_init__(self) -> None:
        """NoteError unless each field can be written as its receipt line."""
        _check_line(self.origin, "origin")
        _check_integer(self.leaf_index, "leaf index")
        _check_hash(self.leaf_hash, "leaf hash")
        _check_line(self.exchange_id, "exchange id")


def receipt_text(receipt: Receipt) -> str:
    """The receipt's note text: header, origin, leaf index, base64 leaf hash, exchange id."""
    return (
        f"{RECEIPT_HEADER}\n{receipt.origin}\n{receipt.leaf_index}\n"
        f"{_encode_base64(receipt.leaf_hash)}\n{receipt.exchange_id}\n"
    )


def parse_receipt(text: str) -> Receipt:
    """Read a receipt note text; NoteError unless it is exactly what receipt_text writes."""
    lines = _lines(text)
    if len(lines) != _RECEIPT_LINES:
        raise NoteError("malformed receipt: not five lines")
    header, origin, leaf_index, leaf_hash, exchange_id = lines
    if header != RECEIPT_HEADER:
        raise NoteError(f"malformed receipt: the first line is not {RECEIPT_HEADER!r}")
    return Receipt(
        origin=origin,
        leaf_index=_parse_integer(leaf_index, "leaf index"),
        leaf_hash=_decode_base64(leaf_hash, "leaf hash"),
        exchange_id=exchange_id,
    )


def load_signer(name: str, private_key_pem: bytes) -> NoteSigner:
    """A signer named ``name`` with an unencrypted PEM Ed25519 private key; else NoteError."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError: the key is encrypted. The message would not say more than this one.
        raise NoteError("not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise NoteError("the note signing key must be an Ed25519 key")
    return NoteSigner(name, key)


def _key_id(name: str, encoded_key: bytes) -> bytes:
    # SHA-256(name || 0x0A || type byte || public key)[:4]; encoded_key starts with the type.
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + encoded_key).digest()
    return digest[:_KEY_ID_SIZE]


def _split(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Split a signed note into its text and its (key name, key ID || signature) pairs."""
    _check_characters(note, "note")
    # The last blank line separates text and signatures: the text may contain blank lines.
    split = note.rfind(_SEPARATOR)
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("malformed note: the signatures do not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {_MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(_SIGNATURE_PREFIX):
            raise NoteError("malformed note: a signature line does not start with an em dash")
        name, _, encoded = line.removeprefix(_SIGNATURE_PREFIX).partition(" ")
        _check_name(name)
        signature = _decode_base64(encoded, "signature")
        # Four bytes of key ID and at least one of signature, as Go's note.Open requires.
        if len(signature) <= _KEY_ID_SIZE:
            raise NoteError("malformed note: a signature too short to hold a key ID")
        signatures.append((name, signature))
    return text, signatures


def _lines(text: str) -> list[str]:
    _check_text(text)
    return text[:-1].split("\n")


def _check_text(text: str) -> None:
    _check_characters(text, "note text")
    if not text.endswith("\n"):
        raise NoteError("malformed note text: it does not end in a newline")


def _check_characters(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Only a lone surrogate gets here: a str that is not Unicode text.
        raise NoteError(f"malformed {what}: not valid UTF-8") from None
    if _CONTROL.search(value):
        raise NoteError(f"malformed {what}: a control character other than newline")


def _check_name(name: str) -> None:
    # Names are written inside signature lines and verifier keys, delimited by a space and
    # '+'; a control character would make the note itself malformed.
    _check_characters(name, "key name")
    if not name or "+" in name or any(char.isspace() for char in name):
        raise NoteError(f"invalid key name {name!r}: empty, or with a space or '+'")


def _check_line(value: str, what: str) -> None:
    _check_characters(value, what)
    if not value or "\n" in value:
        raise NoteError(f"invalid {what} {value!r}: must be one non-empty line")


def _check_integer(value: int, what: str) -> None:
    if not 0 <= value <= _MAX_INTEGER:
        raise NoteError(f"invalid {what} {value}: must be 0 to {_MAX_INTEGER}")


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != _HASH_SIZE:
        raise NoteError(f"invalid {what}: {len(value)} bytes, not {_HASH_SIZE}")


def _parse_integer(text: str, what: str) -> int:
    # The length check first: int() refuses over 4300 digits with its own error.
    if len(text) > len(str(_MAX_INTEGER)) or not _DECIMAL.fullmatch(text):
        raise NoteError(f"malformed {what} {text[:40]!r}: not a decimal without leading zeros")
    value = int(text)
    _check_integer(value, what)
    return value


def _encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_base64(text: str, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII str
        raise NoteError(f"malformed {what}: not base64") from None
    if _encode_base64(data) != text:
        raise NoteError(f"malformed {what}: not canonical base64")
    return data
