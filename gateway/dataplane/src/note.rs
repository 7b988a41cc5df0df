//! Signed notes (c2sp.org/signed-note) with Ed25519, checkpoints and receipts.
//!
//! A port of `lienthong/signed_note.py`: the data plane signs what the Python log signs, byte
//! for byte (Ed25519 is deterministic), and refuses what it refuses. A signed note is a text
//! ending in a newline, a blank line, then one line per signature:
//!
//! ```text
//! lienthong.local/audit
//! 42
//! <base64 root hash>
//!
//! — lienthong.local/audit <base64(4-byte key ID || Ed25519 signature)>
//! ```
//!
//! The key ID is `SHA-256(key name || 0x0A || 0x01 || public key)[:4]`, and verifiers get the
//! key as the text Go's `golang.org/x/mod/sumdb/note` reads:
//! `<name>+<8 hex digits key ID>+<base64(0x01 || public key)>`. The texts signed are
//! checkpoints (c2sp.org/tlog-checkpoint: origin, tree size, root hash) and receipts
//! (`lienthong receipt v1`, origin, leaf index, leaf hash, exchange id).
//!
//! Base64 is the standard alphabet with padding, and only its canonical form is accepted: each
//! value has exactly one text form, so nothing signed can be re-encoded.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::merkle::{Hash, HASH_SIZE};

/// The first line of every receipt text.
pub const RECEIPT_HEADER: &str = "lienthong receipt v1";

// The signature type identifier byte of Ed25519 (c2sp.org/signed-note, "Signature types").
const ED25519: u8 = 0x01;
const KEY_ID_SIZE: usize = 4;
const PUBLIC_KEY_SIZE: usize = 32;
// A verifier must accept at least 16 signatures; Go's note package stops at 100, and so do we,
// so that a note stuffed with signature lines cannot make us parse for long.
const MAX_SIGNATURES: usize = 100;
// Go's tlog parses tree sizes as int64; a larger number would not interoperate.
const MAX_INTEGER: u64 = i64::MAX.unsigned_abs();
const SIGNATURE_PREFIX: &str = "\u{2014} ";
const SEPARATOR: &str = "\n\n";

/// A note, key or note text that is malformed, or a note whose signatures do not verify.
///
/// Each message starts as the Python `NoteError`'s does, so logs read alike.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    /// A note, verifier key or note text that breaks the format.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A key name that is empty or holds a space or `+`.
    #[error("invalid key name {0:?}: empty, or with a space or '+'")]
    InvalidKeyName(String),
    /// A checkpoint or receipt line that is empty or holds a newline.
    #[error("invalid {what} {value:?}: must be one non-empty line")]
    InvalidLine {
        /// Which line.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// A tree size or leaf index beyond `i64::MAX`.
    #[error("invalid {what} {value}: must be 0 to {MAX_INTEGER}")]
    OutOfRange {
        /// Which number.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A decoded hash of another length than SHA-256's.
    #[error("invalid {what}: {len} bytes, not {HASH_SIZE}")]
    HashLength {
        /// Which hash.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A verifier key of another algorithm than Ed25519.
    #[error("unsupported verifier key algorithm {0:#04x}")]
    UnsupportedAlgorithm(u8),
    /// A signature by the verifier's key that does not verify: forged or altered.
    #[error("invalid signature for key {0}")]
    InvalidSignature(String),
    /// The verifier's key signed nothing in the note.
    #[error("note has no signature by key {0}")]
    NoSignature(String),
    /// A signing key that is not an unencrypted PKCS#8 PEM key.
    #[error("not an unencrypted PEM private key")]
    NotAPemKey,
    /// A PKCS#8 key of another algorithm.
    #[error("the note signing key must be an Ed25519 key")]
    NotEd25519,
}

/// Signs note texts with one named Ed25519 key.
#[derive(Debug)]
pub struct NoteSigner {
    name: String,
    key_id: [u8; KEY_ID_SIZE],
    key: SigningKey,
}

impl NoteSigner {
    /// Sign as `name` (non-empty, no spaces or `+`).
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidKeyName`] or [`NoteError::Malformed`] if the name is invalid.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        check_name(name)?;
        let key_id = key_id(name, &encoded_key(&key.verifying_key()));
        Ok(Self {
            name: name.to_owned(),
            key_id,
            key,
        })
    }

    /// A signer named `name` with an unencrypted PKCS#8 PEM Ed25519 private key.
    ///
    /// # Errors
    ///
    /// [`NoteError::NotEd25519`] for another algorithm's key, [`NoteError::NotAPemKey`] for
    /// anything else unreadable, or an invalid name as [`NoteSigner::new`].
    pub fn from_pkcs8_pem(name: &str, pem: &str) -> Result<Self, NoteError> {
        use ed25519_dalek::pkcs8::{spki, Error};
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|error| match error {
            Error::PublicKey(spki::Error::OidUnknown { .. }) => NoteError::NotEd25519,
            _ => NoteError::NotAPemKey,
        })?;
        Self::new(name, key)
    }

    /// The key's name, as it appears in signature lines.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID: `SHA-256(name || 0x0A || 0x01 || public key)[:4]`.
    #[must_use]
    pub fn key_id(&self) -> [u8; KEY_ID_SIZE] {
        self.key_id
    }

    /// The public half as text: `<name>+<hex key ID>+<base64(0x01 || public key)>`.
    #[must_use]
    pub fn verifier_key(&self) -> String {
        let encoded = STANDARD.encode(encoded_key(&self.key.verifying_key()));
        format!("{}+{}+{encoded}", self.name, hex_lower(&self.key_id))
    }

    /// The signed note: `text`, a blank line and this key's signature line.
    ///
    /// # Errors
    ///
    /// [`NoteError::Malformed`] unless `text` ends in a newline and has no control characters
    /// other than newlines.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut raw = self.key_id.to_vec();
        raw.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(raw)
        ))
    }
}

/// Opens notes signed by one known Ed25519 key.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    key_id: [u8; KEY_ID_SIZE],
    // None for 32 bytes that are no curve point: Python reads such a key, and every signature
    // by it then fails; so here.
    key: Option<VerifyingKey>,
}

impl NoteVerifier {
    /// Read a verifier key `<name>+<hex key ID>+<base64 key>`.
    ///
    /// As Go's `note.NewVerifier`: the key ID must be the one the name and key give, and the
    /// key must be an Ed25519 one (type byte 0x01 and 32 bytes).
    ///
    /// # Errors
    ///
    /// [`NoteError`] when the key is malformed in any of these ways.
    pub fn new(verifier_key: &str) -> Result<Self, NoteError> {
        let malformed = |why| NoteError::Malformed {
            what: "verifier key",
            why,
        };
        let (name, rest) = verifier_key.split_once('+').unwrap_or((verifier_key, ""));
        let (hex_id, encoded) = rest.split_once('+').unwrap_or((rest, ""));
        let expected_id =
            parse_key_id(hex_id).ok_or(malformed("the key ID is not 8 hex digits"))?;
        check_name(name)?;
        let key = decode_base64(encoded, "verifier key")?;
        if key.is_empty() || key_id(name, &key) != expected_id {
            return Err(malformed("the key ID does not match the name and key"));
        }
        if key[0] != ED25519 {
            return Err(NoteError::UnsupportedAlgorithm(key[0]));
        }
        let public: [u8; PUBLIC_KEY_SIZE] = key[1..]
            .try_into()
            .map_err(|_| malformed("an Ed25519 key is 32 bytes"))?;
        Ok(Self {
            name: name.to_owned(),
            key_id: expected_id,
            key: VerifyingKey::from_bytes(&public).ok(),
        })
    }

    /// The key's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    #[must_use]
    pub fn key_id(&self) -> [u8; KEY_ID_SIZE] {
        self.key_id
    }

    /// The text of `note` once this key's signature on it verifies.
    ///
    /// Signatures by other keys are ignored: a witness's, or an old key's during a rotation.
    ///
    /// # Errors
    ///
    /// [`NoteError`] if the note is malformed, if any signature by this key fails to verify
    /// (one bad signature by a trusted key means someone forged or altered it: the note is
    /// refused rather than a good copy looked for), or if this key signed nothing.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (text, signatures) = split(note)?;
        let mut verified = false;
        for (name, signature) in signatures {
            if name != self.name || signature[..KEY_ID_SIZE] != self.key_id {
                continue;
            }
            // The cofactorless check of RFC 8032 that Go's ed25519.Verify and OpenSSL (so
            // Python's cryptography) make; a signature of another length is simply invalid.
            let valid = match (&self.key, Signature::from_slice(&signature[KEY_ID_SIZE..])) {
                (Some(key), Ok(signature)) => key.verify(text.as_bytes(), &signature).is_ok(),
                _ => false,
            };
            if !valid {
                return Err(NoteError::InvalidSignature(self.display()));
            }
            verified = true;
        }
        if verified {
            Ok(text)
        } else {
            Err(NoteError::NoSignature(self.display()))
        }
    }

    fn display(&self) -> String {
        format!("{}+{}", self.name, hex_lower(&self.key_id))
    }
}

/// A Merkle tree head of a transparency log (c2sp.org/tlog-checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    tree_size: u64,
    root_hash: Hash,
}

impl Checkpoint {
    /// A checkpoint whose every field can be written as its line.
    ///
    /// # Errors
    ///
    /// [`NoteError`] for an empty or multi-line origin, one with control characters, or a
    /// tree size beyond `i64::MAX`.
    pub fn new(origin: &str, tree_size: u64, root_hash: Hash) -> Result<Self, NoteError> {
        check_line(origin, "origin")?;
        check_integer(tree_size, "tree size")?;
        Ok(Self {
            origin: origin.to_owned(),
            tree_size,
            root_hash,
        })
    }

    /// Read a checkpoint note text.
    ///
    /// Extension lines after the root hash are allowed (if non-empty) and dropped: monitors
    /// cannot audit them, and this log writes none.
    ///
    /// # Errors
    ///
    /// [`NoteError`] on any deviation from c2sp.org/tlog-checkpoint.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let lines = lines(text)?;
        let [origin, size, root_hash, extensions @ ..] = lines.as_slice() else {
            return Err(NoteError::Malformed {
                what: "checkpoint",
                why: "fewer than three lines",
            });
        };
        if extensions.iter().any(|line| line.is_empty()) {
            return Err(NoteError::Malformed {
                what: "checkpoint",
                why: "an empty extension line",
            });
        }
        // Python's order of checks, so that each text fails with the same kind of error.
        let tree_size = parse_integer(size, "tree size")?;
        let root_hash = decode_base64(root_hash, "root hash")?;
        check_line(origin, "origin")?;
        Self::new(origin, tree_size, to_hash(&root_hash, "root hash")?)
    }

    /// The note text: origin, tree size and base64 root hash, one per line.
    #[must_use]
    pub fn text(&self) -> String {
        let root_hash = STANDARD.encode(self.root_hash);
        format!("{}\n{}\n{root_hash}\n", self.origin, self.tree_size)
    }

    /// The log's origin line.
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of leaves.
    #[must_use]
    pub fn tree_size(&self) -> u64 {
        self.tree_size
    }

    /// The Merkle tree root.
    #[must_use]
    pub fn root_hash(&self) -> Hash {
        self.root_hash
    }
}

/// The log's signed word that an exchange's entry is leaf `leaf_index` of its tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    origin: String,
    leaf_index: u64,
    leaf_hash: Hash,
    exchange_id: String,
}

impl Receipt {
    /// A receipt whose every field can be written as its line.
    ///
    /// # Errors
    ///
    /// [`NoteError`] for an empty or multi-line origin or exchange id, one with control
    /// characters, or a leaf index beyond `i64::MAX`.
    pub fn new(
        origin: &str,
        leaf_index: u64,
        leaf_hash: Hash,
        exchange_id: &str,
    ) -> Result<Self, NoteError> {
        check_line(origin, "origin")?;
        check_integer(leaf_index, "leaf index")?;
        check_line(exchange_id, "exchange id")?;
        Ok(Self {
            origin: origin.to_owned(),
            leaf_index,
            leaf_hash,
            exchange_id: exchange_id.to_owned(),
        })
    }

    /// Read a receipt note text.
    ///
    /// # Errors
    ///
    /// [`NoteError`] unless it is exactly what [`Receipt::text`] writes.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let lines = lines(text)?;
        let [header, origin, leaf_index, leaf_hash, exchange_id] = lines.as_slice() else {
            return Err(NoteError::Malformed {
                what: "receipt",
                why: "not five lines",
            });
        };
        if *header != RECEIPT_HEADER {
            return Err(NoteError::Malformed {
                what: "receipt",
                why: "the first line is not 'lienthong receipt v1'",
            });
        }
        let leaf_index = parse_integer(leaf_index, "leaf index")?;
        let leaf_hash = decode_base64(leaf_hash, "leaf hash")?;
        check_line(origin, "origin")?;
        let leaf_hash = to_hash(&leaf_hash, "leaf hash")?;
        Self::new(origin, leaf_index, leaf_hash, exchange_id)
    }

    /// The note text: header, origin, leaf index, base64 leaf hash, exchange id.
    #[must_use]
    pub fn text(&self) -> String {
        format!(
            "{RECEIPT_HEADER}\n{}\n{}\n{}\n{}\n",
            self.origin,
            self.leaf_index,
            STANDARD.encode(self.leaf_hash),
            self.exchange_id
        )
    }

    /// The log's origin line.
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The entry's leaf index.
    #[must_use]
    pub fn leaf_index(&self) -> u64 {
        self.leaf_index
    }

    /// The entry's leaf hash.
    #[must_use]
    pub fn leaf_hash(&self) -> Hash {
        self.leaf_hash
    }

    /// The exchange the entry records.
    #[must_use]
    pub fn exchange_id(&self) -> &str {
        &self.exchange_id
    }
}

// Helpers -----------------------------------------------------------------------------------

/// `0x01 || public key`: the key as key IDs and verifier keys encode it.
fn encoded_key(key: &VerifyingKey) -> Vec<u8> {
    let mut encoded = vec![ED25519];
    encoded.extend_from_slice(key.as_bytes());
    encoded
}

/// `SHA-256(name || 0x0A || encoded key)[:4]`; the encoded key starts with its type byte.
fn key_id(name: &str, encoded_key: &[u8]) -> [u8; KEY_ID_SIZE] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update(encoded_key)
        .finalize();
    let mut id = [0; KEY_ID_SIZE];
    id.copy_from_slice(&digest[..KEY_ID_SIZE]);
    id
}

/// Eight hex digits of either case, as Go's `strconv.ParseUint(s, 16, 32)` reads them.
fn parse_key_id(text: &str) -> Option<[u8; KEY_ID_SIZE]> {
    if text.len() != 2 * KEY_ID_SIZE || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok().map(u32::to_be_bytes)
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        write!(out, "{b:02x}").expect("writing to a String");
        out
    })
}

/// A signature line's key name, and its key ID followed by the signature.
type SignatureLine<'a> = (&'a str, Vec<u8>);

/// Split a signed note into its text and its (key name, key ID || signature) pairs.
fn split(note: &str) -> Result<(&str, Vec<SignatureLine<'_>>), NoteError> {
    let malformed = |why| NoteError::Malformed { what: "note", why };
    check_characters(note, "note")?;
    // The last blank line separates text and signatures: the text may contain blank lines.
    let at = note
        .rfind(SEPARATOR)
        .ok_or(malformed("no blank line before the signatures"))?;
    let (text, block) = (&note[..=at], &note[at + SEPARATOR.len()..]);
    let block = block
        .strip_suffix('\n')
        .ok_or(malformed("the signatures do not end in a newline"))?;
    let lines: Vec<&str> = block.split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(malformed("more than 100 signatures"));
    }
    let mut signatures = Vec::with_capacity(lines.len());
    for line in lines {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(malformed("a signature line does not start with an em dash"))?;
        let (name, encoded) = rest.split_once(' ').unwrap_or((rest, ""));
        check_name(name)?;
        let signature = decode_base64(encoded, "signature")?;
        // Four bytes of key ID and at least one of signature, as Go's note.Open requires.
        if signature.len() <= KEY_ID_SIZE {
            return Err(malformed("a signature too short to hold a key ID"));
        }
        signatures.push((name, signature));
    }
    Ok((text, signatures))
}

fn lines(text: &str) -> Result<Vec<&str>, NoteError> {
    check_text(text)?;
    Ok(text[..text.len() - 1].split('\n').collect())
}

fn check_text(text: &str) -> Result<(), NoteError> {
    check_characters(text, "note text")?;
    if text.ends_with('\n') {
        Ok(())
    } else {
        Err(NoteError::Malformed {
            what: "note text",
            why: "it does not end in a newline",
        })
    }
}

/// A `&str` is valid UTF-8 already; what is left is Python's `[\x00-\x09\x0b-\x1f]`.
fn check_characters(value: &str, what: &'static str) -> Result<(), NoteError> {
    if value.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::Malformed {
            what,
            why: "a control character other than newline",
        });
    }
    Ok(())
}

/// Names are written inside signature lines and verifier keys, delimited by a space and `+`.
fn check_name(name: &str) -> Result<(), NoteError> {
    check_characters(name, "key name")?;
    if name.is_empty() || name.contains('+') || name.chars().any(is_python_space) {
        return Err(NoteError::InvalidKeyName(name.to_owned()));
    }
    Ok(())
}

/// Python's `str.isspace`: Unicode `White_Space`, and U+001C to U+001F (bidi class B or S).
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn check_line(value: &str, what: &'static str) -> Result<(), NoteError> {
    check_characters(value, what)?;
    if value.is_empty() || value.contains('\n') {
        return Err(NoteError::InvalidLine {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn check_integer(value: u64, what: &'static str) -> Result<(), NoteError> {
    if value > MAX_INTEGER {
        return Err(NoteError::OutOfRange { what, value });
    }
    Ok(())
}

/// ASCII decimal without leading zeros or sign, at most `i64::MAX`.
fn parse_integer(text: &str, what: &'static str) -> Result<u64, NoteError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || text.len() > 19 || (text.len() > 1 && text.starts_with('0')) {
        return Err(NoteError::Malformed {
            what,
            why: "not a decimal without leading zeros",
        });
    }
    // Nineteen digits fit a u64; only the range check is left.
    let value = text.parse().map_err(|_| NoteError::Malformed {
        what,
        why: "not a decimal without leading zeros",
    })?;
    check_integer(value, what)?;
    Ok(value)
}

fn decode_base64(text: &str, what: &'static str) -> Result<Vec<u8>, NoteError> {
    let data = STANDARD.decode(text).map_err(|_| NoteError::Malformed {
        what,
        why: "not base64",
    })?;
    // The engine already refuses non-zero padding bits and missing padding; compare anyway, as
    // canonical form is the property relied on.
    if STANDARD.encode(&data) != text {
        return Err(NoteError::Malformed {
            what,
            why: "not canonical base64",
        });
    }
    Ok(data)
}

fn to_hash(data: &[u8], what: &'static str) -> Result<Hash, NoteError> {
    data.try_into().map_err(|_| NoteError::HashLength {
        what,
        len: data.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go's golang.org/x/mod/sumdb/note note_test.go (TestNewVerifier, TestSign, TestOpen), as
    // tests/test_note.py copies them: our notes are Go's, byte for byte.
    const GO_PETER_SEED: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_PETER_VKEY: &str =
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGU\
                                gYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const GO_ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+\
                                vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    fn peter() -> NoteSigner {
        let raw = STANDARD.decode(GO_PETER_SEED).expect("base64");
        assert_eq!(raw[0], ED25519);
        let seed: [u8; 32] = raw[1..].try_into().expect("a 32-byte seed");
        NoteSigner::new("PeterNeumann", SigningKey::from_bytes(&seed)).expect("a valid name")
    }

    #[test]
    fn our_signer_with_gos_key_writes_gos_note_byte_for_byte() {
        let signer = peter();
        assert_eq!(hex_lower(&signer.key_id()), "c74f20a3");
        assert_eq!(signer.verifier_key(), GO_PETER_VKEY);
        assert_eq!(
            signer.sign(GO_TEXT),
            Ok(format!("{GO_TEXT}\n{GO_PETER_SIG}"))
        );
    }

    #[test]
    fn gos_notes_open_with_either_key_and_refuse_others() {
        let note = format!("{GO_TEXT}\n{GO_PETER_SIG}{GO_ENOCH_SIG}");
        let peter = NoteVerifier::new(GO_PETER_VKEY).expect("Go's key");
        let enoch = NoteVerifier::new(GO_ENOCH_VKEY).expect("Go's key");
        assert_eq!(peter.open(&note), Ok(GO_TEXT));
        assert_eq!(enoch.open(&note), Ok(GO_TEXT));
        let enoch_only = format!("{GO_TEXT}\n{GO_ENOCH_SIG}");
        assert!(matches!(
            peter.open(&enoch_only),
            Err(NoteError::NoSignature(_))
        ));
        // Go's TestOpen inserts ABCD into the signature: still base64, no longer the signature.
        let bad = format!(
            "{GO_TEXT}\n{}ABCD{}",
            &GO_PETER_SIG[..60],
            &GO_PETER_SIG[60..]
        );
        assert_eq!(
            peter.open(&bad),
            Err(NoteError::InvalidSignature("PeterNeumann+c74f20a3".into()))
        );
    }

    #[test]
    fn gos_verifier_key_manglings_are_refused() {
        // Go's TestNewVerifier: every proper substring and every one-byte increment fails.
        let key = GO_PETER_VKEY;
        for start in 0..=key.len() {
            for end in start + 1..=key.len() {
                if (start, end) != (0, key.len()) {
                    assert!(
                        NoteVerifier::new(&key[start..end]).is_err(),
                        "{start}..{end}"
                    );
                }
            }
        }
        for index in 0..key.len() {
            let mut bytes = key.as_bytes().to_vec();
            bytes[index] += 1;
            let mangled = String::from_utf8(bytes).expect("ASCII");
            assert!(NoteVerifier::new(&mangled).is_err(), "{mangled}");
        }
    }

    #[test]
    fn key_names_refuse_exactly_pythons_spaces() {
        #[derive(serde::Deserialize)]
        struct Vectors {
            note: Note,
        }
        #[derive(serde::Deserialize)]
        struct Note {
            python_space_characters: Vec<u32>,
        }
        let text = include_str!("../../../tests/vectors/audit.json");
        let vectors: Vectors = serde_json::from_str(text).expect("the vectors");
        let spaces = vectors.note.python_space_characters;
        assert!(spaces.len() > 20);
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            assert_eq!(
                is_python_space(c),
                spaces.contains(&u32::from(c)),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn a_checkpoint_round_trips_and_the_spec_example_parses() {
        let spec = "example.com/behind-the-sofa\n20852163\n\
                    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let checkpoint = Checkpoint::parse(spec).expect("the specification's example");
        assert_eq!(checkpoint.origin(), "example.com/behind-the-sofa");
        assert_eq!(checkpoint.tree_size(), 20_852_163);
        assert_eq!(checkpoint.text(), spec);
        assert!(Checkpoint::new("log", MAX_INTEGER + 1, [0; 32]).is_err());
        assert!(Checkpoint::new("log", MAX_INTEGER, [0; 32]).is_ok());
    }
}
