"""Signed notes, checkpoints and receipts: c2sp.org/signed-note and tlog-checkpoint, as Go reads.

The interoperability vectors are copied from Go's golang.org/x/mod/sumdb/note
(``note_test.go`` in github.com/golang/mod, commit 02c991387e35f9e4c0a9b7ce137717055f8d716d:
TestNewVerifier, TestSign, TestOpen). The checkpoint text is the example of
c2sp.org/tlog-checkpoint (github.com/C2SP/C2SP ``tlog-checkpoint.md``).
"""

import base64
import hashlib
import re
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.pki import (
    AUDIT_KEY_STEM,
    DevPki,
    audit_key_paths,
    ensure_audit_key,
    init_dev_pki,
)
from lienthong.signed_note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    Receipt,
    checkpoint_text,
    load_signer,
    parse_checkpoint,
    parse_receipt,
    receipt_text,
)

# From golang.org/x/mod/sumdb/note note_test.go (see the module docstring).
GO_PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
    "RZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox3"
    "3WWd1RvMc+QQ=\n"
)
# From c2sp.org/tlog-checkpoint's example.
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

TEXT = "lienthong.local/audit\n7\n" + base64.b64encode(bytes(range(32))).decode() + "\n"
HASH = hashlib.sha256(b"leaf").digest()
HASH64 = base64.b64encode(HASH).decode()


def go_private_key(skey: str) -> Ed25519PrivateKey:
    """The key of a Go note signer key: PRIVATE+KEY+<name>+<id>+base64(0x01 || seed)."""
    *_, encoded = skey.split("+", 4)
    raw = base64.b64decode(encoded)
    assert raw[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner("lienthong.local/audit", Ed25519PrivateKey.generate())


@pytest.fixture
def verifier(signer: NoteSigner) -> NoteVerifier:
    return NoteVerifier(signer.verifier_key())


def signature_line(note: str) -> str:
    """The last signature line of a note, with its newline."""
    return note[note.rindex("\n\n") + 2 :]


# Signing and opening


def test_a_signed_note_opens_to_its_text(signer, verifier):
    note = signer.sign(TEXT)
    assert note.startswith(TEXT + "\n— lienthong.local/audit ")
    assert verifier.open(note) == TEXT


def test_a_text_with_blank_lines_round_trips(signer, verifier):
    """The last blank line separates text and signatures, so the text may hold blank ones."""
    text = "first\n\n— looks like a signature line\n\n"
    assert verifier.open(signer.sign(text)) == text


def test_signature_is_key_id_then_ed25519_signature_of_the_text():
    key = Ed25519PrivateKey.generate()
    signer = NoteSigner("lienthong.local/audit", key)
    encoded = signature_line(signer.sign(TEXT))[:-1].split(" ")[2]
    raw = base64.b64decode(encoded, validate=True)
    assert raw[:4] == signer.key_id
    key.public_key().verify(raw[4:], TEXT.encode())  # the text with its final newline


def test_key_id_is_the_first_four_bytes_of_sha256_of_name_newline_type_and_key():
    key = Ed25519PrivateKey.generate()
    signer = NoteSigner("example.com/log", key)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    expected = hashlib.sha256(b"example.com/log" + b"\x0a" + b"\x01" + public).digest()[:4]
    assert signer.key_id == expected
    assert len(signer.key_id) == 4


def test_verifier_key_is_name_hex_key_id_and_base64_of_type_and_key(signer):
    text = signer.verifier_key()
    name, key_id, encoded = text.split("+", 2)
    assert name == "lienthong.local/audit"
    assert re.fullmatch(r"[0-9a-f]{8}", key_id)
    assert bytes.fromhex(key_id) == signer.key_id
    raw = base64.b64decode(encoded, validate=True)
    assert len(raw) == 33
    assert raw[0] == 0x01
    verifier = NoteVerifier(text)
    assert (verifier.name, verifier.key_id) == (signer.name, signer.key_id)


def test_sign_refuses_what_is_not_a_note_text(signer):
    for text in ["no final newline", "", "bell\x07\n", "tab\there\n", "surrogate \udc80\n"]:
        with pytest.raises(NoteError):
            signer.sign(text)


@pytest.mark.parametrize("name", ["", "has space", "a+b", "tab\tname", "nbsp\u00a0name", "x\n"])
def test_a_key_name_must_be_non_empty_without_spaces_or_plus(name):
    with pytest.raises(NoteError, match="key name"):
        NoteSigner(name, Ed25519PrivateKey.generate())


# Tampering


def test_a_note_with_any_character_of_its_text_altered_is_rejected(signer, verifier):
    note = signer.sign(TEXT)
    for index, char in enumerate(TEXT):
        if char == "\n":
            continue  # changing a newline is caught as malformed in other tests
        altered = note[:index] + ("B" if char != "B" else "C") + note[index + 1 :]
        with pytest.raises(NoteError):
            verifier.open(altered)


def test_a_note_with_any_byte_of_its_signature_altered_is_rejected(signer, verifier):
    note = signer.sign(TEXT)
    prefix, encoded = note[:-1].rsplit(" ", 1)
    raw = base64.b64decode(encoded)
    for index in range(len(raw)):
        altered = bytearray(raw)
        altered[index] ^= 0x01
        forged = f"{prefix} {base64.b64encode(bytes(altered)).decode()}\n"
        # A changed key ID makes the signature another key's: then none of ours is left.
        with pytest.raises(NoteError):
            verifier.open(forged)


def test_a_signature_of_another_text_is_rejected(signer, verifier):
    forged = "lienthong.local/audit\n8\n" + TEXT.split("\n", 2)[2] + "\n"
    forged += signature_line(signer.sign(TEXT))
    with pytest.raises(NoteError, match="invalid signature"):
        verifier.open(forged)


# Other keys' signatures


def test_a_note_signed_by_another_key_too_opens(signer, verifier):
    other = NoteSigner("witness.example/w1", Ed25519PrivateKey.generate())
    cosigned = signer.sign(TEXT) + signature_line(other.sign(TEXT))
    assert verifier.open(cosigned) == TEXT
    assert NoteVerifier(other.verifier_key()).open(cosigned) == TEXT
    other_first = other.sign(TEXT) + signature_line(signer.sign(TEXT))
    assert verifier.open(other_first) == TEXT


def test_an_unknown_keys_bad_signature_is_ignored(signer, verifier):
    """Unknown keys' signatures are not verified: a stranger's garbage cannot veto a note."""
    garbage = "— witness.example/w1 " + base64.b64encode(b"\x00" * 68).decode() + "\n"
    assert verifier.open(signer.sign(TEXT) + garbage) == TEXT


def test_a_note_signed_only_by_other_keys_is_rejected(verifier):
    other = NoteSigner("witness.example/w1", Ed25519PrivateKey.generate())
    with pytest.raises(NoteError, match="no signature by key"):
        verifier.open(other.sign(TEXT))


def test_a_key_with_our_name_but_another_key_id_is_ignored(signer, verifier):
    impostor = NoteSigner(signer.name, Ed25519PrivateKey.generate())
    assert impostor.key_id != signer.key_id
    with pytest.raises(NoteError, match="no signature by key"):
        verifier.open(impostor.sign(TEXT))
    assert verifier.open(signer.sign(TEXT) + signature_line(impostor.sign(TEXT))) == TEXT


def test_a_bad_copy_of_our_signature_rejects_the_note_even_beside_a_good_one(signer, verifier):
    note = signer.sign(TEXT)
    line = signature_line(note)
    bad = line[:30] + ("A" if line[30] != "A" else "B") + line[31:]
    with pytest.raises(NoteError, match="invalid signature"):
        verifier.open(note + bad)


# Malformed notes


def malformed_notes(signer: NoteSigner) -> dict[str, str]:
    note = signer.sign(TEXT)
    line = signature_line(note)
    encoded = line[:-1].rsplit(" ", 1)[1]
    return {
        "text only": TEXT,
        "text and blank line": TEXT + "\n",
        "no blank line": TEXT + line,
        "no final newline": note[:-1],
        "control character": "\x01" + note,
        "escape": note.replace("audit\n7", "audit\x1b7"),
        "carriage return": note.replace("\n\n", "\r\n\n"),
        "lone surrogate": "\udc80" + note,
        "bad base64": note.replace(encoded, encoded[:-2] + "!="),
        "base64 without padding": note.replace(encoded, encoded.rstrip("=")),
        "base64 not canonical": note.replace(encoded, encoded[:-2] + "B="),
        "name with a space": note.replace("— lienthong.local/audit", "— lienthong local/audit"),
        "name with a plus": note.replace("— lienthong.local/audit", "— lienthong+local/audit"),
        "no name": note.replace("— lienthong.local/audit ", "—  "),
        "no signature": note.replace(" " + encoded, ""),
        "signature too short": note.replace(encoded, base64.b64encode(signer.key_id).decode()),
        "hyphen for em dash": note.replace("— ", "- "),
        "line after signatures": note + "Unexpected line.\n",
        "blank line after signatures": note + "\n",
        "too many signatures": note + line * 100,
    }


MALFORMED_NOTE_CASES = list(malformed_notes(NoteSigner("n", Ed25519PrivateKey.generate())))


@pytest.mark.parametrize("case", MALFORMED_NOTE_CASES)
def test_malformed_notes_are_rejected(signer, verifier, case):
    note = malformed_notes(signer)[case]
    with pytest.raises(NoteError):
        verifier.open(note)


def test_up_to_one_hundred_signatures_are_read(signer, verifier):
    """c2sp.org/signed-note: verifiers MUST accept at least 16 signatures."""
    note = signer.sign(TEXT)
    assert verifier.open(note + signature_line(note) * 99) == TEXT


# Verifier keys


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "+++",
        "name",
        "name+c74f20a3",
        "PeterNeumann+C74F20A+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+0xc74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW ",
        " PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_verifier_keys_are_rejected(vkey):
    with pytest.raises(NoteError):
        NoteVerifier(vkey)


def test_a_verifier_key_whose_id_does_not_match_is_rejected(signer):
    name, key_id, encoded = signer.verifier_key().split("+", 2)
    wrong = f"{int(key_id, 16) ^ 1:08x}"
    with pytest.raises(NoteError, match="key ID does not match"):
        NoteVerifier(f"{name}+{wrong}+{encoded}")
    with pytest.raises(NoteError, match="key ID does not match"):
        NoteVerifier(f"other.example/log+{key_id}+{encoded}")


def test_an_upper_case_key_id_is_read_as_go_reads_it():
    """Go parses the key ID with strconv.ParseUint(hash, 16, 32), which takes either case."""
    name, key_id, encoded = GO_PETER_VKEY.split("+", 2)
    verifier = NoteVerifier(f"{name}+{key_id.upper()}+{encoded}")
    assert verifier.key_id == bytes.fromhex("c74f20a3")


# Interoperability with Go's golang.org/x/mod/sumdb/note


def test_go_verifier_key_is_read():
    verifier = NoteVerifier(GO_PETER_VKEY)
    assert verifier.name == "PeterNeumann"
    assert verifier.key_id == bytes.fromhex("c74f20a3")


def test_go_signed_note_opens():
    assert NoteVerifier(GO_PETER_VKEY).open(GO_TEXT + "\n" + GO_PETER_SIG) == GO_TEXT


def test_our_signer_with_gos_key_writes_gos_note_byte_for_byte():
    """Ed25519 is deterministic, so the same key and text give Go's exact signed note."""
    signer = NoteSigner("PeterNeumann", go_private_key(GO_PETER_SKEY))
    assert signer.key_id == bytes.fromhex("c74f20a3")
    assert signer.verifier_key() == GO_PETER_VKEY
    assert signer.sign(GO_TEXT) == GO_TEXT + "\n" + GO_PETER_SIG


def test_go_note_signed_by_two_keys_opens_with_either():
    note = GO_TEXT + "\n" + GO_PETER_SIG + GO_ENOCH_SIG
    assert NoteVerifier(GO_PETER_VKEY).open(note) == GO_TEXT
    assert NoteVerifier(GO_ENOCH_VKEY).open(note) == GO_TEXT


def test_go_note_signed_only_by_another_key_is_rejected():
    with pytest.raises(NoteError, match="no signature by key"):
        NoteVerifier(GO_PETER_VKEY).open(GO_TEXT + "\n" + GO_ENOCH_SIG)


def test_go_invalid_signature_is_rejected():
    """Go's TestOpen inserts ABCD into the signature: still base64, no longer the signature."""
    bad = GO_PETER_SIG[:60] + "ABCD" + GO_PETER_SIG[60:]
    with pytest.raises(NoteError, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        NoteVerifier(GO_PETER_VKEY).open(GO_TEXT + "\n" + bad)


@pytest.mark.parametrize(
    "message",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + GO_PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + GO_PETER_SIG,
        GO_TEXT
        + "\n"
        + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
        "RZb6KE6RyyBwJnAM=",
        GO_TEXT + "\n" + GO_PETER_SIG + "Unexpected line.\n",
    ],
)
def test_go_malformed_notes_are_rejected(message):
    """Go's TestOpen badMsgs (all but "\\xff" + text, which a Python str cannot hold)."""
    with pytest.raises(NoteError, match="malformed"):
        NoteVerifier(GO_PETER_VKEY).open(message)


def test_go_misnamed_or_rekeyed_signatures_are_not_ours():
    verifier = NoteVerifier(GO_PETER_VKEY)
    misnamed = GO_PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    other_id = GO_PETER_SIG.replace("x08g", "xxxx")
    for signature in [misnamed, other_id]:
        with pytest.raises(NoteError, match="no signature by key"):
            verifier.open(GO_TEXT + "\n" + signature)


def test_go_verifier_key_manglings_are_rejected():
    """Go's TestNewVerifier: every proper substring and every one-byte increment fails."""
    key = GO_PETER_VKEY
    for start in range(len(key) + 1):
        for end in range(start + 1, len(key) + 1):
            if (start, end) != (0, len(key)):
                with pytest.raises(NoteError):
                    NoteVerifier(key[start:end])
    for index in range(len(key)):
        with pytest.raises(NoteError):
            NoteVerifier(key[:index] + chr(ord(key[index]) + 1) + key[index + 1 :])


@pytest.mark.parametrize(
    ("vkey", "reason"),
    [
        # Wrong length key, with adjusted key hash. Go rejects it for its length; its base64
        # ends in non-zero padding bits ("EY=="), which we refuse before looking further.
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "not canonical base64",
        ),
        # Unknown algorithm, with adjusted key hash.
        (
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "unsupported verifier key algorithm 0x65",
        ),
    ],
)
def test_go_bad_verifier_keys_with_matching_ids_are_rejected(vkey, reason):
    with pytest.raises(NoteError, match=reason):
        NoteVerifier(vkey)


def test_a_verifier_key_of_the_wrong_length_is_rejected(signer):
    name, _, encoded = signer.verifier_key().split("+", 2)
    for key in [base64.b64decode(encoded)[:-1], base64.b64decode(encoded) + b"\x00"]:
        key_id = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex()
        with pytest.raises(NoteError, match="32 bytes"):
            NoteVerifier(f"{name}+{key_id}+{base64.b64encode(key).decode()}")


# Checkpoints


def test_checkpoint_text_is_origin_size_and_base64_root_hash():
    checkpoint = Checkpoint("lienthong.local/audit", 42, HASH)
    assert checkpoint_text(checkpoint) == f"lienthong.local/audit\n42\n{HASH64}\n"
    assert parse_checkpoint(checkpoint_text(checkpoint)) == checkpoint


def test_an_empty_tree_has_size_zero():
    checkpoint = Checkpoint("lienthong.local/audit", 0, hashlib.sha256(b"").digest())
    assert checkpoint_text(checkpoint).split("\n")[1] == "0"
    assert parse_checkpoint(checkpoint_text(checkpoint)) == checkpoint


def test_the_specifications_example_checkpoint_parses():
    checkpoint = parse_checkpoint(SPEC_CHECKPOINT)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.tree_size == 20852163
    assert checkpoint.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert checkpoint_text(checkpoint) == SPEC_CHECKPOINT


def test_checkpoint_extension_lines_are_allowed_and_dropped():
    checkpoint = parse_checkpoint(SPEC_CHECKPOINT + "extension one\nextension two\n")
    assert checkpoint == parse_checkpoint(SPEC_CHECKPOINT)


def test_an_origin_need_not_be_a_key_name():
    """Clients MUST NOT assume the origin has the recommended form (c2sp.org/tlog-checkpoint)."""
    text = f"a log with spaces+plus\n1\n{HASH64}\n"
    assert parse_checkpoint(text).origin == "a log with spaces+plus"


def test_a_signed_checkpoint_opens_and_parses(signer, verifier):
    checkpoint = Checkpoint(signer.name, 1234, HASH)
    note = signer.sign(checkpoint_text(checkpoint))
    assert parse_checkpoint(verifier.open(note)) == checkpoint


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("example.com/log\n", id="one line"),
        pytest.param("example.com/log\n5\n", id="two lines"),
        pytest.param(f"example.com/log\n5\n{HASH64}", id="no final newline"),
        pytest.param(f"\n5\n{HASH64}\n", id="empty origin"),
        pytest.param(f"example.com/log\n05\n{HASH64}\n", id="leading zero"),
        pytest.param(f"example.com/log\n00\n{HASH64}\n", id="zero with leading zero"),
        pytest.param(f"example.com/log\n-1\n{HASH64}\n", id="negative"),
        pytest.param(f"example.com/log\n+5\n{HASH64}\n", id="plus sign"),
        pytest.param(f"example.com/log\n 5\n{HASH64}\n", id="space"),
        pytest.param(f"example.com/log\n5 \n{HASH64}\n", id="trailing space"),
        pytest.param(f"example.com/log\n1_000\n{HASH64}\n", id="underscore"),
        pytest.param(f"example.com/log\n\u0665\n{HASH64}\n", id="arabic-indic digit"),
        pytest.param(f"example.com/log\n0x10\n{HASH64}\n", id="hexadecimal"),
        pytest.param(f"example.com/log\n\n{HASH64}\n", id="empty size"),
        pytest.param(f"example.com/log\n{2**63}\n{HASH64}\n", id="size beyond int64"),
        pytest.param(f"example.com/log\n{'9' * 5000}\n{HASH64}\n", id="huge size"),
        pytest.param("example.com/log\n5\nnot base64!\n", id="bad base64"),
        pytest.param(f"example.com/log\n5\n{HASH64.rstrip('=')}\n", id="missing padding"),
        pytest.param(f"example.com/log\n5\n{HASH64[:-2]}B=\n", id="non-canonical base64"),
        pytest.param(f"example.com/log\n5\n {HASH64}\n", id="space before hash"),
        pytest.param(
            f"example.com/log\n5\n{base64.b64encode(HASH[:31]).decode()}\n", id="31-byte hash"
        ),
        pytest.param(
            f"example.com/log\n5\n{base64.b64encode(HASH + b'x').decode()}\n", id="33-byte hash"
        ),
        pytest.param("example.com/log\n5\n\n", id="empty hash"),
        pytest.param(f"example.com/log\n5\n{HASH64}\n\n", id="empty extension line"),
        pytest.param(f"example.com/log\n5\n{HASH64}\next\n\nmore\n", id="empty line between"),
        pytest.param(f"example.com/log\r\n5\n{HASH64}\n", id="carriage return"),
        pytest.param(f"example.com/log\x00\n5\n{HASH64}\n", id="nul"),
    ],
)
def test_malformed_checkpoints_are_rejected(text):
    with pytest.raises(NoteError):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    ("origin", "size", "root_hash"),
    [
        ("", 1, HASH),
        ("two\nlines", 1, HASH),
        ("control\x07", 1, HASH),
        ("example.com/log", -1, HASH),
        ("example.com/log", 2**63, HASH),
        ("example.com/log", 1, HASH[:31]),
        ("example.com/log", 1, b""),
    ],
)
def test_a_checkpoint_that_cannot_be_written_cannot_be_made(origin, size, root_hash):
    with pytest.raises(NoteError):
        Checkpoint(origin, size, root_hash)


# Receipts


def test_receipt_text_is_header_origin_index_hash_and_exchange_id():
    receipt = Receipt("lienthong.local/audit", 17, HASH, "0f6a7c52-1bd9-4f0e-9d1c-0c8c1b5e7a11")
    text = receipt_text(receipt)
    assert text == (
        f"lienthong receipt v1\nlienthong.local/audit\n17\n{HASH64}\n"
        "0f6a7c52-1bd9-4f0e-9d1c-0c8c1b5e7a11\n"
    )
    assert parse_receipt(text) == receipt


def test_a_signed_receipt_opens_and_parses(signer, verifier):
    receipt = Receipt(signer.name, 0, HASH, "exchange-1")
    assert parse_receipt(verifier.open(signer.sign(receipt_text(receipt)))) == receipt


def test_receipts_and_checkpoints_never_parse_as_each_other():
    receipt = receipt_text(Receipt("lienthong.local/audit", 3, HASH, "5"))
    checkpoint = checkpoint_text(Checkpoint("lienthong receipt v1", 3, HASH))
    with pytest.raises(NoteError):
        parse_checkpoint(receipt)
    with pytest.raises(NoteError):
        parse_receipt(checkpoint)


GOOD_RECEIPT = f"lienthong receipt v1\nexample.com/log\n3\n{HASH64}\nexchange-1\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(GOOD_RECEIPT[:-1], id="no final newline"),
        pytest.param(GOOD_RECEIPT.replace("v1", "v2"), id="other version"),
        pytest.param(GOOD_RECEIPT.replace("\nexchange-1\n", "\n"), id="four lines"),
        pytest.param(GOOD_RECEIPT + "extra\n", id="six lines"),
        pytest.param(GOOD_RECEIPT.replace("example.com/log", ""), id="empty origin"),
        pytest.param(GOOD_RECEIPT.replace("\n3\n", "\n03\n"), id="leading zero"),
        pytest.param(GOOD_RECEIPT.replace("\n3\n", "\n-3\n"), id="negative index"),
        pytest.param(GOOD_RECEIPT.replace(HASH64, HASH64[:-2] + "B="), id="non-canonical"),
        pytest.param(
            GOOD_RECEIPT.replace(HASH64, base64.b64encode(HASH[:16]).decode()), id="short hash"
        ),
        pytest.param(GOOD_RECEIPT.replace("exchange-1", ""), id="empty exchange id"),
        pytest.param(GOOD_RECEIPT.replace("exchange-1", "ex\tchange"), id="tab"),
    ],
)
def test_malformed_receipts_are_rejected(text):
    with pytest.raises(NoteError):
        parse_receipt(text)


# Keys on disk


def test_load_signer_reads_a_pem_pkcs8_ed25519_key():
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    loaded = load_signer("lienthong.local/audit", pem)
    assert loaded.verifier_key() == NoteSigner("lienthong.local/audit", key).verifier_key()


def test_load_signer_refuses_other_keys_and_garbage():
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(NoteError, match="Ed25519"):
        load_signer("lienthong.local/audit", ec_pem)
    with pytest.raises(NoteError, match="PEM"):
        load_signer("lienthong.local/audit", b"not a key")


@pytest.fixture
def fresh_pki(tmp_path) -> DevPki:
    return init_dev_pki(tmp_path / "dev")


def test_ensure_audit_key_writes_a_private_key_and_its_verifier_key(fresh_pki):
    private_path = ensure_audit_key(fresh_pki)
    assert (private_path, private_path.with_suffix(".vkey")) == audit_key_paths(fresh_pki)
    assert private_path == fresh_pki.directory / f"{AUDIT_KEY_STEM}.key"
    _, verifier_path = audit_key_paths(fresh_pki)
    assert verifier_path.name == "audit-log.vkey"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(verifier_path.stat().st_mode) == 0o644
    pem = private_path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    signer = load_signer("lienthong.local/audit", pem)
    vkey = verifier_path.read_text().strip()
    assert vkey == signer.verifier_key()
    assert NoteVerifier(vkey).open(signer.sign(TEXT)) == TEXT


def test_ensure_audit_key_keeps_an_existing_key(fresh_pki):
    private_path = ensure_audit_key(fresh_pki)
    first = private_path.read_bytes()
    assert ensure_audit_key(fresh_pki) == private_path
    assert private_path.read_bytes() == first


def test_ensure_audit_key_rewrites_a_missing_or_stale_verifier_key(fresh_pki):
    private_path = ensure_audit_key(fresh_pki)
    _, verifier_path = audit_key_paths(fresh_pki)
    expected = verifier_path.read_text()
    verifier_path.unlink()
    ensure_audit_key(fresh_pki)
    assert verifier_path.read_text() == expected
    ensure_audit_key(fresh_pki, name="other.example/audit")
    renamed = verifier_path.read_text().strip()
    assert renamed.startswith("other.example/audit+")
    assert renamed == load_signer("other.example/audit", private_path.read_bytes()).verifier_key()
