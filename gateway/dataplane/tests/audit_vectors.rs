//! The audit core against `tests/vectors/audit.json`, which `tools/audit_vectors.py` writes
//! from the Python implementation: every value must come out the same here, byte for byte.

use std::collections::HashMap;
use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use lienthong_dataplane::entry::AuditEntry;
use lienthong_dataplane::merkle::{self, Frontier, Hash, NodeId, Nodes};
use lienthong_dataplane::note::{Checkpoint, NoteError, NoteSigner, NoteVerifier, Receipt};
use serde::Deserialize;
use serde_json::Value;

const VECTORS: &str = include_str!("../../../tests/vectors/audit.json");

#[derive(Deserialize)]
struct Vectors {
    merkle: MerkleVectors,
    note: NoteVectors,
    entry: EntryVectors,
}

#[derive(Deserialize)]
struct MerkleVectors {
    leaf_data: String,
    empty_root: String,
    leaf_hashes: Vec<Value>,
    node_hashes: Vec<Value>,
    parents_completed: Vec<Parents>,
    subtree_nodes: Vec<Subtree>,
    trees: Vec<Tree>,
    inclusion: Vec<Inclusion>,
    consistency: Vec<Consistency>,
    huge_node_lists: Vec<HugeNodes>,
    refused_subtree_ranges: Vec<(u64, u64)>,
    refused_inclusion_arguments: Vec<(u64, u64)>,
    refused_consistency_arguments: Vec<(u64, u64)>,
    verify_inclusion: Vec<InclusionVerdict>,
    verify_consistency: Vec<ConsistencyVerdict>,
}

#[derive(Deserialize)]
struct Parents {
    index: u64,
    parents: Vec<NodeId>,
}

#[derive(Deserialize)]
struct Subtree {
    start: u64,
    end: u64,
    nodes: Vec<NodeId>,
}

#[derive(Deserialize)]
struct Tree {
    size: u64,
    root: String,
    nodes: Vec<NodeId>,
}

#[derive(Deserialize)]
struct Inclusion {
    index: u64,
    size: u64,
    nodes: Vec<NodeId>,
    proof: Vec<String>,
}

#[derive(Deserialize)]
struct Consistency {
    first: u64,
    second: u64,
    nodes: Vec<NodeId>,
    proof: Vec<String>,
}

#[derive(Deserialize)]
struct HugeNodes {
    index: u64,
    size: u64,
    inclusion_nodes: Vec<NodeId>,
    consistency_nodes: Vec<NodeId>,
    root_nodes: Vec<NodeId>,
}

#[derive(Deserialize)]
struct InclusionVerdict {
    why: String,
    leaf: String,
    index: u64,
    size: u64,
    proof: Vec<String>,
    root: String,
    valid: bool,
}

#[derive(Deserialize)]
struct ConsistencyVerdict {
    why: String,
    first: u64,
    second: u64,
    first_root: String,
    second_root: String,
    proof: Vec<String>,
    valid: bool,
}

#[derive(Deserialize)]
struct NoteVectors {
    key: TestKey,
    witness: TestKey,
    checkpoints: Vec<CheckpointVector>,
    checkpoints_with_extensions: Vec<CheckpointVector>,
    receipts: Vec<ReceiptVector>,
    texts: Vec<Signed>,
    opens: Vec<Opens>,
    refused_notes: Vec<RefusedNote>,
    verifier_keys: Vec<ReadKey>,
    refused_verifier_keys: Vec<Refused>,
    refused_key_names: Vec<Refused>,
    refused_texts: Vec<Refused>,
    refused_checkpoints: Vec<Refused>,
    refused_receipts: Vec<Refused>,
    refused_signing_keys: Vec<Refused>,
    unbuildable_checkpoints: Vec<Unbuildable>,
    unbuildable_exchange_ids: Vec<String>,
}

#[derive(Deserialize)]
struct TestKey {
    about: String,
    name: String,
    seed: String,
    public_key: String,
    pkcs8_pem: String,
    key_id: String,
    verifier_key: String,
}

#[derive(Deserialize)]
struct CheckpointVector {
    origin: String,
    tree_size: u64,
    root_hash: String,
    text: String,
    note: Option<String>,
}

#[derive(Deserialize)]
struct ReceiptVector {
    origin: String,
    leaf_index: u64,
    leaf_hash: String,
    exchange_id: String,
    text: String,
    note: String,
}

#[derive(Deserialize)]
struct Signed {
    text: String,
    note: String,
}

#[derive(Deserialize)]
struct Opens {
    why: String,
    verifier: String,
    note: String,
    text: String,
}

#[derive(Deserialize)]
struct RefusedNote {
    why: String,
    note: String,
    reason: String,
    verifier_key: Option<String>,
}

#[derive(Deserialize)]
struct ReadKey {
    verifier_key: String,
    name: String,
    key_id: String,
}

/// Anything refused: its text under one of these names, and the kind of Python's error.
#[derive(Deserialize)]
struct Refused {
    #[serde(alias = "verifier_key", alias = "name", alias = "text", alias = "pem")]
    value: String,
    reason: String,
}

#[derive(Deserialize)]
struct Unbuildable {
    origin: String,
    tree_size: u64,
}

#[derive(Deserialize)]
struct EntryVectors {
    entries: Vec<EntryVector>,
    refused: Vec<Bytes>,
    accepted_by_python_only: Vec<Bytes>,
}

#[derive(Deserialize)]
struct EntryVector {
    why: String,
    entry: AuditEntry,
    encoded: String,
    leaf_hash: String,
}

#[derive(Deserialize)]
struct Bytes {
    why: String,
    bytes: String,
}

fn vectors() -> &'static Vectors {
    static PARSED: OnceLock<Vectors> = OnceLock::new();
    PARSED.get_or_init(|| serde_json::from_str(VECTORS).expect("tests/vectors/audit.json"))
}

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).expect("hex")
}

fn hash(text: &str) -> Hash {
    unhex(text).try_into().expect("a 32-byte hash")
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

fn unhexes(texts: &[String]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| unhex(t)).collect()
}

/// Every node stored for the vectors' tree of 1000 leaves, `leaf-0` to `leaf-999`.
fn stored() -> &'static Nodes {
    static NODES: OnceLock<Nodes> = OnceLock::new();
    NODES.get_or_init(|| {
        let vectors = vectors();
        let largest = vectors.merkle.trees.iter().map(|t| t.size).max();
        let mut frontier = Frontier::new();
        let mut nodes = Nodes::new();
        for index in 0..largest.expect("trees") {
            let data = vectors
                .merkle
                .leaf_data
                .replace("{index}", &index.to_string());
            nodes.extend(
                frontier
                    .append(merkle::leaf_hash(data.as_bytes()))
                    .expect("room"),
            );
        }
        nodes
    })
}

/// The stored nodes `ids` and no other: a proof computed from them read nothing else.
fn only(ids: &[NodeId]) -> Nodes {
    ids.iter().map(|id| (*id, stored()[id])).collect()
}

/// The kind of a refusal, as the vectors name Python's: the start of the message, which the
/// Rust messages share.
fn reason(error: &NoteError) -> &'static str {
    const REASONS: [&str; 8] = [
        "malformed",
        "invalid signature",
        "note has no signature",
        "invalid key name",
        "unsupported verifier key algorithm",
        "invalid",
        "not an unencrypted PEM private key",
        "the note signing key must be an Ed25519 key",
    ];
    let message = error.to_string();
    REASONS
        .into_iter()
        .find(|r| message.starts_with(r))
        .unwrap_or_else(|| panic!("an unexpected message: {message}"))
}

fn signer(key: &TestKey) -> NoteSigner {
    let seed: [u8; 32] = unhex(&key.seed).try_into().expect("a 32-byte seed");
    NoteSigner::new(&key.name, SigningKey::from_bytes(&seed)).expect("a valid name")
}

// --- Merkle tree ------------------------------------------------------------------------------

#[test]
fn hashes_and_node_arithmetic_are_pythons() {
    let tree = &vectors().merkle;
    assert_eq!(hex::encode(merkle::EMPTY_ROOT), tree.empty_root);
    for case in &tree.leaf_hashes {
        let data = unhex(case["data"].as_str().expect("data"));
        assert_eq!(hex::encode(merkle::leaf_hash(&data)), case["hash"]);
    }
    for case in &tree.node_hashes {
        let left = unhex(case["left"].as_str().expect("left"));
        let right = unhex(case["right"].as_str().expect("right"));
        assert_eq!(hex::encode(merkle::node_hash(&left, &right)), case["hash"]);
    }
    for case in &tree.parents_completed {
        assert_eq!(
            merkle::parents_completed(case.index),
            case.parents,
            "{}",
            case.index
        );
    }
    for case in &tree.subtree_nodes {
        assert_eq!(
            merkle::subtree_nodes(case.start, case.end),
            Ok(case.nodes.clone())
        );
    }
    for &(start, end) in &tree.refused_subtree_ranges {
        assert!(
            merkle::subtree_nodes(start, end).is_err(),
            "[{start}, {end})"
        );
    }
    for &(index, size) in &tree.refused_inclusion_arguments {
        assert!(
            merkle::inclusion_nodes(index, size).is_err(),
            "{index} in {size}"
        );
        assert!(merkle::inclusion_proof(index, size, stored()).is_err());
    }
    for &(first, second) in &tree.refused_consistency_arguments {
        assert!(
            merkle::consistency_nodes(first, second).is_err(),
            "{first} to {second}"
        );
        assert!(merkle::consistency_proof(first, second, stored()).is_err());
    }
    assert!(tree.parents_completed.len() > 20 && tree.refused_subtree_ranges.len() > 5);
}

#[test]
fn roots_of_every_size_are_pythons_from_the_root_nodes_only() {
    let trees = &vectors().merkle.trees;
    assert!(trees.len() > 40);
    for tree in trees {
        assert_eq!(
            merkle::root_nodes(tree.size),
            tree.nodes,
            "size {}",
            tree.size
        );
        let nodes = only(&tree.nodes);
        let root = merkle::root_hash(tree.size, &nodes).expect("the root nodes");
        assert_eq!(hex::encode(root), tree.root, "size {}", tree.size);
        let frontier = Frontier::from_nodes(tree.size, &nodes).expect("the root nodes");
        assert_eq!(hex::encode(frontier.root()), tree.root);
        assert_eq!(frontier.size(), tree.size);
    }
}

#[test]
fn inclusion_proofs_are_pythons_from_the_nodes_asked_for_only() {
    let vectors = &vectors().merkle;
    let roots: HashMap<u64, &str> = vectors.trees.iter().map(|t| (t.size, &*t.root)).collect();
    assert!(vectors.inclusion.len() > 100);
    for case in &vectors.inclusion {
        let nodes = merkle::inclusion_nodes(case.index, case.size).expect("in range");
        assert_eq!(nodes, case.nodes, "{} in {}", case.index, case.size);
        let proof = merkle::inclusion_proof(case.index, case.size, &only(&nodes));
        assert_eq!(hexes(&proof.expect("the nodes")), case.proof);
        let data = vectors
            .leaf_data
            .replace("{index}", &case.index.to_string());
        let leaf = merkle::leaf_hash(data.as_bytes());
        let root = unhex(roots[&case.size]);
        let proof = unhexes(&case.proof);
        assert!(merkle::verify_inclusion(
            &leaf, case.index, case.size, &proof, &root
        ));
    }
}

#[test]
fn consistency_proofs_are_pythons_from_the_nodes_asked_for_only() {
    let vectors = &vectors().merkle;
    let roots: HashMap<u64, &str> = vectors.trees.iter().map(|t| (t.size, &*t.root)).collect();
    assert!(vectors.consistency.len() > 100);
    for case in &vectors.consistency {
        let (first, second) = (case.first, case.second);
        let nodes = merkle::consistency_nodes(first, second).expect("in range");
        assert_eq!(nodes, case.nodes, "{first} to {second}");
        let proof = merkle::consistency_proof(first, second, &only(&nodes));
        assert_eq!(hexes(&proof.expect("the nodes")), case.proof);
        // Not every first size has its root in the vectors: Python's proof must verify with
        // the root computed here, which is Python's where the vectors hold it.
        let old = merkle::root_hash(first, stored()).expect("the nodes");
        assert!(roots
            .get(&first)
            .is_none_or(|root| *root == hex::encode(old)));
        let new = unhex(roots[&second]);
        let proof = unhexes(&case.proof);
        assert!(merkle::verify_consistency(
            first, second, &old, &new, &proof
        ));
    }
}

#[test]
fn node_lists_of_huge_trees_are_pythons() {
    for case in &vectors().merkle.huge_node_lists {
        let (index, size) = (case.index, case.size);
        assert_eq!(
            merkle::inclusion_nodes(index, size),
            Ok(case.inclusion_nodes.clone())
        );
        let first = index.max(1);
        assert_eq!(
            merkle::consistency_nodes(first, size),
            Ok(case.consistency_nodes.clone())
        );
        assert_eq!(merkle::root_nodes(size), case.root_nodes);
    }
}

#[test]
fn altered_proofs_get_pythons_verdict() {
    let vectors = &vectors().merkle;
    for case in &vectors.verify_inclusion {
        let (leaf, root, proof) = (unhex(&case.leaf), unhex(&case.root), unhexes(&case.proof));
        let valid = merkle::verify_inclusion(&leaf, case.index, case.size, &proof, &root);
        assert_eq!(valid, case.valid, "inclusion: {}", case.why);
    }
    for case in &vectors.verify_consistency {
        let (old, new) = (unhex(&case.first_root), unhex(&case.second_root));
        let proof = unhexes(&case.proof);
        let valid = merkle::verify_consistency(case.first, case.second, &old, &new, &proof);
        assert_eq!(valid, case.valid, "consistency: {}", case.why);
    }
    let verdicts = vectors.verify_inclusion.iter().map(|c| c.valid);
    assert!(verdicts.clone().any(|v| v) && verdicts.clone().any(|v| !v));
}

// --- Signed notes -----------------------------------------------------------------------------

#[test]
fn the_test_keys_give_pythons_key_ids_and_verifier_keys() {
    let notes = &vectors().note;
    for key in [&notes.key, &notes.witness] {
        assert!(key.about.contains("TEST"));
        let signer = signer(key);
        assert_eq!(hex::encode(signer.key_id()), key.key_id);
        assert_eq!(signer.verifier_key(), key.verifier_key);
        let from_pem = NoteSigner::from_pkcs8_pem(&key.name, &key.pkcs8_pem).expect("PKCS#8");
        assert_eq!(from_pem.verifier_key(), key.verifier_key);
        let seed: [u8; 32] = unhex(&key.seed).try_into().expect("32 bytes");
        let public = SigningKey::from_bytes(&seed).verifying_key();
        assert_eq!(hex::encode(public.as_bytes()), key.public_key);
    }
}

#[test]
fn checkpoints_are_written_signed_and_read_as_python_does() {
    let notes = &vectors().note;
    let (signer, verifier) = (
        signer(&notes.key),
        NoteVerifier::new(&notes.key.verifier_key),
    );
    let verifier = verifier.expect("the key");
    for case in &notes.checkpoints {
        let checkpoint = Checkpoint::new(&case.origin, case.tree_size, hash(&case.root_hash));
        let checkpoint = checkpoint.expect("a valid checkpoint");
        assert_eq!(checkpoint.text(), case.text);
        let note = case.note.as_deref().expect("a note");
        assert_eq!(
            signer.sign(&case.text).as_deref(),
            Ok(note),
            "{}",
            case.origin
        );
        assert_eq!(verifier.open(note), Ok(case.text.as_str()));
        assert_eq!(Checkpoint::parse(&case.text), Ok(checkpoint));
    }
    for case in &notes.checkpoints_with_extensions {
        let checkpoint = Checkpoint::parse(&case.text).expect("a checkpoint");
        assert_eq!(checkpoint.origin(), case.origin);
        assert_eq!(checkpoint.tree_size(), case.tree_size);
        assert_eq!(hex::encode(checkpoint.root_hash()), case.root_hash);
    }
    for case in &notes.refused_checkpoints {
        let error = Checkpoint::parse(&case.value).expect_err(&case.value);
        assert_eq!(reason(&error), case.reason, "{:?}: {error}", case.value);
    }
    for case in &notes.unbuildable_checkpoints {
        assert!(Checkpoint::new(&case.origin, case.tree_size, [0; 32]).is_err());
    }
}

#[test]
fn receipts_are_written_signed_and_read_as_python_does() {
    let notes = &vectors().note;
    let (signer, verifier) = (
        signer(&notes.key),
        NoteVerifier::new(&notes.key.verifier_key),
    );
    let verifier = verifier.expect("the key");
    for case in &notes.receipts {
        let leaf_hash = hash(&case.leaf_hash);
        let receipt = Receipt::new(&case.origin, case.leaf_index, leaf_hash, &case.exchange_id);
        let receipt = receipt.expect("a valid receipt");
        assert_eq!(receipt.text(), case.text);
        assert_eq!(signer.sign(&case.text).as_deref(), Ok(case.note.as_str()));
        assert_eq!(verifier.open(&case.note), Ok(case.text.as_str()));
        assert_eq!(Receipt::parse(&case.text), Ok(receipt));
    }
    for case in &notes.refused_receipts {
        let error = Receipt::parse(&case.value).expect_err(&case.value);
        assert_eq!(reason(&error), case.reason, "{:?}: {error}", case.value);
    }
    for exchange_id in &notes.unbuildable_exchange_ids {
        assert!(Receipt::new("example.com/log", 1, [0; 32], exchange_id).is_err());
    }
}

#[test]
fn other_texts_are_signed_as_python_signs_them() {
    let notes = &vectors().note;
    let signer = signer(&notes.key);
    for case in &notes.texts {
        assert_eq!(signer.sign(&case.text).as_deref(), Ok(case.note.as_str()));
    }
    for case in &notes.refused_texts {
        let error = signer.sign(&case.value).expect_err(&case.value);
        assert_eq!(reason(&error), case.reason, "{:?}", case.value);
    }
}

#[test]
fn notes_open_and_are_refused_as_python_opens_and_refuses_them() {
    let notes = &vectors().note;
    let verifier = NoteVerifier::new(&notes.key.verifier_key).expect("the key");
    let witness = NoteVerifier::new(&notes.witness.verifier_key).expect("the witness key");
    for case in &notes.opens {
        let by = if case.verifier == "witness" {
            &witness
        } else {
            &verifier
        };
        assert_eq!(by.open(&case.note), Ok(case.text.as_str()), "{}", case.why);
    }
    assert!(notes.refused_notes.len() > 30);
    for case in &notes.refused_notes {
        let other = case.verifier_key.as_deref().map(NoteVerifier::new);
        let by = match &other {
            Some(made) => made.as_ref().expect("a readable key"),
            None => &verifier,
        };
        let error = by.open(&case.note).expect_err(&case.why);
        assert_eq!(reason(&error), case.reason, "{}: {error}", case.why);
    }
}

#[test]
fn verifier_keys_names_and_signing_keys_are_read_and_refused_as_python_does() {
    let notes = &vectors().note;
    for case in &notes.verifier_keys {
        let verifier = NoteVerifier::new(&case.verifier_key).expect(&case.verifier_key);
        assert_eq!(verifier.name(), case.name);
        assert_eq!(hex::encode(verifier.key_id()), case.key_id);
    }
    for case in &notes.refused_verifier_keys {
        let error = NoteVerifier::new(&case.value).expect_err(&case.value);
        assert_eq!(reason(&error), case.reason, "{:?}: {error}", case.value);
    }
    let key = SigningKey::from_bytes(&[7; 32]);
    for case in &notes.refused_key_names {
        let error = NoteSigner::new(&case.value, key.clone()).expect_err(&case.value);
        assert_eq!(reason(&error), case.reason, "{:?}: {error}", case.value);
    }
    for case in &notes.refused_signing_keys {
        let error = NoteSigner::from_pkcs8_pem("a/b", &case.value).expect_err(&case.value);
        assert_eq!(reason(&error), case.reason, "{:?}", case.value);
    }
}

// --- Entries ----------------------------------------------------------------------------------

#[test]
fn entries_encode_to_pythons_bytes_and_decode_back() {
    let entries = &vectors().entry.entries;
    assert!(entries.len() > 10);
    for case in entries {
        let encoded = unhex(&case.encoded);
        assert_eq!(
            String::from_utf8_lossy(&case.entry.encode()),
            String::from_utf8_lossy(&encoded),
            "{}",
            case.why
        );
        assert_eq!(case.entry.encode(), encoded, "{}", case.why);
        assert_eq!(hex::encode(merkle::leaf_hash(&encoded)), case.leaf_hash);
        assert_eq!(AuditEntry::decode(&encoded).as_ref(), Ok(&case.entry));
    }
}

#[test]
fn bytes_python_refuses_are_refused() {
    for case in &vectors().entry.refused {
        assert!(
            AuditEntry::decode(&unhex(&case.bytes)).is_err(),
            "{}",
            case.why
        );
    }
}

#[test]
fn bytes_python_accepts_without_checking_types_are_refused() {
    // The one known difference: Python's decode takes any JSON value a canonical encoding
    // round-trips (a float version, a number for a string, an unknown kind); Rust's types
    // do not.
    for case in &vectors().entry.accepted_by_python_only {
        assert!(
            AuditEntry::decode(&unhex(&case.bytes)).is_err(),
            "{}",
            case.why
        );
    }
}
