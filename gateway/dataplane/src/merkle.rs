//! RFC 9162 (Certificate Transparency 2.0) section 2.1 Merkle trees, over stored subtrees.
//!
//! A port of `gateway/audit/merkle.py`, so that the data plane proves exactly what the Python
//! audit service proves. The hashing is the RFC's: `MTH({}) = SHA-256()`, a leaf is
//! `SHA-256(0x00 || d)` and an interior node `SHA-256(0x01 || left || right)`, split at the
//! largest power of two smaller than the number of leaves.
//!
//! The log stores the tree as complete aligned subtrees: node `(level, index)` is the hash of
//! the `2^level` leaves starting at leaf `index << level`, written once that subtree is
//! complete and never changed after. Every range the RFC's recursion visits is a run of such
//! nodes, one per set bit of its width, so a proof needs O(log n) of them. Each computation is
//! therefore split in two: `*_nodes` says which nodes to fetch (in one query), and the function
//! of the same stem computes from a map holding at least those nodes. [`Frontier`] keeps the
//! right edge of a growing tree so that appending reads nothing.
//!
//! Generation returns a [`MerkleError`] where Python raises `ValueError` (an argument out of
//! range, a range the recursion never produces) or `KeyError` (a node missing from the map).
//! Sizes and indices are `u64`, so the negative arguments Python refuses cannot be written, and
//! hashes are `[u8; 32]` where they are stored. The two `verify_*` functions take byte slices,
//! as proofs arrive from outside, and never fail or panic: whatever is malformed is `false`.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use thiserror::Error;

/// The length of every hash here: SHA-256.
pub const HASH_SIZE: usize = 32;

/// A SHA-256 hash: a leaf, a node or a root.
pub type Hash = [u8; HASH_SIZE];

/// A stored node: `(level, index)`, covering leaves `[index << level, (index + 1) << level)`.
pub type NodeId = (u32, u64);

/// Stored nodes by id: what a proof or root is computed from.
pub type Nodes = HashMap<NodeId, Hash>;

/// `MTH({})`: the root of the empty tree, the hash of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

// Domain separation prefixes (RFC 9162 2.1.1): a leaf can never be taken for a node.
const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Why a tree computation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    /// `end <= start`: no leaves.
    #[error("[{start}, {end}) is not a non-empty range of leaves")]
    EmptyRange { start: u64, end: u64 },
    /// `start` is not aligned to the largest power of two within the width.
    #[error("[{start}, {end}) is not a range of the RFC's recursion")]
    NotARecursionRange { start: u64, end: u64 },
    /// An inclusion proof of a leaf the tree does not have.
    #[error("leaf index {index} is not in a tree of size {size}")]
    LeafNotInTree { index: u64, size: u64 },
    /// A consistency proof outside `0 < first <= second`.
    #[error("no consistency proof from size {first} to size {second}")]
    NoConsistencyProof { first: u64, second: u64 },
    /// A node the computation needs was not given (Python's `KeyError`).
    #[error("node {0:?} is needed and was not given")]
    MissingNode(NodeId),
    /// Appending to a tree of `u64::MAX` leaves.
    #[error("the tree is full")]
    Full,
}

/// `MTH({d0}) = SHA-256(0x00 || d0)`: the leaf hash of `entry`.
#[must_use]
pub fn leaf_hash(entry: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([LEAF_PREFIX])
        .chain_update(entry)
        .finalize()
        .into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
#[must_use]
pub fn node_hash(left: &[u8], right: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([NODE_PREFIX])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

// Node arithmetic ---------------------------------------------------------------------------

/// The nodes completed by appending leaf `index`, bottom-up, without the leaf itself.
///
/// Leaf 3 completes `(1, 1)` (leaves 2..3) and `(2, 0)` (leaves 0..3); leaf 4 none.
#[must_use]
pub fn parents_completed(index: u64) -> Vec<NodeId> {
    // A node is complete when its last leaf arrives: while the new leaf is a right child.
    // Leaf u64::MAX completes (64, 0), which a plain shift by 64 would not give.
    (1..=index.trailing_ones())
        .map(|level| (level, index.checked_shr(level).unwrap_or(0)))
        .collect()
}

/// The stored nodes, left to right, whose hashes give `MTH(D[start:end])`.
///
/// `start` must be a multiple of the largest power of two not above `end - start`: true of
/// every range the RFC's recursion produces from a whole tree, and what makes each set bit of
/// the width one complete aligned node.
///
/// # Errors
///
/// [`MerkleError::EmptyRange`] or [`MerkleError::NotARecursionRange`].
pub fn subtree_nodes(start: u64, end: u64) -> Result<Vec<NodeId>, MerkleError> {
    if end <= start {
        return Err(MerkleError::EmptyRange { start, end });
    }
    let width = end - start;
    let top = width.ilog2();
    if !start.is_multiple_of(1u64 << top) {
        return Err(MerkleError::NotARecursionRange { start, end });
    }
    let mut nodes = Vec::new();
    let mut position = start;
    for level in (0..=top).rev() {
        if (width >> level) & 1 == 1 {
            nodes.push((level, position >> level));
            position += 1u64 << level;
        }
    }
    Ok(nodes)
}

/// `MTH(D[start:end])` from the stored nodes of [`subtree_nodes`]`(start, end)`.
///
/// # Errors
///
/// As [`subtree_nodes`], or [`MerkleError::MissingNode`].
pub fn subtree_hash(start: u64, end: u64, nodes: &Nodes) -> Result<Hash, MerkleError> {
    let ids = subtree_nodes(start, end)?;
    // The RFC splits off the largest complete left subtree first, so the right edge is folded
    // innermost: MTH = H(n0, H(n1, ... H(n_{r-1}, n_r))).
    let mut value: Option<Hash> = None;
    for &id in ids.iter().rev() {
        let node = stored(nodes, id)?;
        value = Some(value.map_or(node, |right| node_hash(&node, &right)));
    }
    value.ok_or(MerkleError::EmptyRange { start, end })
}

/// The stored nodes, left to right, whose hashes give the root of the tree of `size`.
#[must_use]
pub fn root_nodes(size: u64) -> Vec<NodeId> {
    // [0, size) is a range of the recursion unless empty, and the empty tree has no nodes.
    subtree_nodes(0, size).unwrap_or_default()
}

/// `MTH(D[0:size])` from the stored nodes of [`root_nodes`]`(size)`.
///
/// # Errors
///
/// [`MerkleError::MissingNode`].
pub fn root_hash(size: u64, nodes: &Nodes) -> Result<Hash, MerkleError> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    subtree_hash(0, size, nodes)
}

// Inclusion proofs (RFC 9162 2.1.3) ---------------------------------------------------------

/// Every stored node [`inclusion_proof`] needs, each once.
///
/// # Errors
///
/// [`MerkleError::LeafNotInTree`] unless `index < size`.
pub fn inclusion_nodes(index: u64, size: u64) -> Result<Vec<NodeId>, MerkleError> {
    nodes_of(&inclusion_ranges(index, size)?)
}

/// `PATH(index, D[0:size])`, from the leaf's sibling upwards (RFC 9162 2.1.3.1).
///
/// # Errors
///
/// As [`inclusion_nodes`], or [`MerkleError::MissingNode`].
pub fn inclusion_proof(index: u64, size: u64, nodes: &Nodes) -> Result<Vec<Hash>, MerkleError> {
    hashes_of(&inclusion_ranges(index, size)?, nodes)
}

fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, MerkleError> {
    if index >= size {
        return Err(MerkleError::LeafNotInTree { index, size });
    }
    let mut ranges = Vec::new();
    path(index, 0, size, &mut ranges);
    Ok(ranges)
}

/// The leaf ranges whose MTH make up `PATH(m, D[start:end])`, in the RFC's order:
///
/// ```text
/// PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])      for m < k
/// PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])  for m >= k
/// ```
///
/// and `PATH(0, {d0}) = {}`. The depth is at most 64.
fn path(m: u64, start: u64, end: u64, out: &mut Vec<(u64, u64)>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, start, start + k, out);
        out.push((start + k, end));
    } else {
        path(m - k, start + k, end, out);
        out.push((start, start + k));
    }
}

// Consistency proofs (RFC 9162 2.1.4) -------------------------------------------------------

/// Every stored node [`consistency_proof`] needs, each once.
///
/// # Errors
///
/// [`MerkleError::NoConsistencyProof`] unless `0 < first <= second`.
pub fn consistency_nodes(first: u64, second: u64) -> Result<Vec<NodeId>, MerkleError> {
    nodes_of(&consistency_ranges(first, second)?)
}

/// `PROOF(first, D[0:second])` in the RFC's order (RFC 9162 2.1.4.1); empty if equal.
///
/// # Errors
///
/// As [`consistency_nodes`], or [`MerkleError::MissingNode`].
pub fn consistency_proof(first: u64, second: u64, nodes: &Nodes) -> Result<Vec<Hash>, MerkleError> {
    hashes_of(&consistency_ranges(first, second)?, nodes)
}

fn consistency_ranges(first: u64, second: u64) -> Result<Vec<(u64, u64)>, MerkleError> {
    if first == 0 || first > second {
        return Err(MerkleError::NoConsistencyProof { first, second });
    }
    // PROOF(m, D[n]) = SUBPROOF(m, D[n], true)
    let mut ranges = Vec::new();
    subproof(first, 0, second, true, &mut ranges);
    Ok(ranges)
}

/// The leaf ranges whose MTH make up `SUBPROOF(m, D[start:end], b)`, in the RFC's order:
///
/// ```text
/// SUBPROOF(m, D[m], true)  = {}
/// SUBPROOF(m, D[m], false) = {MTH(D[m])}
/// SUBPROOF(m, D[n], b)     = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])          for m <= k
/// SUBPROOF(m, D[n], b)     = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])  for m > k
/// ```
///
/// for `0 < m <= n`, which each step keeps. The depth is at most 64.
fn subproof(m: u64, start: u64, end: u64, b: bool, out: &mut Vec<(u64, u64)>) {
    let n = end - start;
    if m == n {
        if !b {
            out.push((start, end));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, start, start + k, b, out);
        out.push((start + k, end));
    } else {
        subproof(m - k, start + k, end, false, out);
        out.push((start, start + k));
    }
}

// Verification ------------------------------------------------------------------------------

/// Whether `proof` shows the leaf HASH `leaf` at `index` in the tree `root`.
///
/// RFC 9162 2.1.3.2, step by step. `root` must be the root signed for `size`: the algorithm
/// checks the shape of the path, and a few other sizes share that shape.
#[must_use]
pub fn verify_inclusion<P: AsRef<[u8]>>(
    leaf: &[u8],
    index: u64,
    size: u64,
    proof: &[P],
    root: &[u8],
) -> bool {
    if !(is_hash(leaf) && is_hash(root) && proof.iter().all(|p| is_hash(p.as_ref()))) {
        return false;
    }
    // 1. If leaf_index is greater than or equal to tree_size, fail.
    if index >= size {
        return false;
    }
    // 2. Set fn to leaf_index and sn to tree_size - 1. 3. Set r to hash.
    let (mut fn_, mut sn) = (index, size - 1);
    let Some(mut r) = to_hash(leaf) else {
        return false;
    };
    // 4. For each value p in the inclusion_path array:
    for p in proof {
        let p = p.as_ref();
        // a. If sn is 0, stop the iteration and fail.
        if sn == 0 {
            return false;
        }
        // b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn_ & 1 == 1 || fn_ == sn {
            // i. Set r to HASH(0x01 || p || r).
            r = node_hash(p, &r);
            // ii. If LSB(fn) is not set, right-shift fn and sn equally until either LSB(fn) is
            // set or fn is 0.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            // Otherwise: i. Set r to HASH(0x01 || r || p).
            r = node_hash(&r, p);
        }
        // c. Finally, right-shift both fn and sn one time.
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. Proven if sn is 0 and r equals the root hash.
    sn == 0 && r[..] == *root
}

/// Whether `proof` shows the tree `second_root` extends the tree `first_root`.
///
/// RFC 9162 2.1.4.2, step by step, for `0 < first < second` (the RFC's precondition). For
/// `first == second` the RFC's proof is empty (2.1.4.1: `SUBPROOF(m, D[m], true) = {}`), so
/// only an empty proof between equal roots is accepted. `first == 0` is outside the RFC's
/// definition, as [`consistency_proof`] refuses it: `false`.
#[must_use]
pub fn verify_consistency<P: AsRef<[u8]>>(
    first: u64,
    second: u64,
    first_root: &[u8],
    second_root: &[u8],
    proof: &[P],
) -> bool {
    if !(is_hash(first_root) && is_hash(second_root) && proof.iter().all(|p| is_hash(p.as_ref()))) {
        return false;
    }
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    // 1. If consistency_path is an empty array, fail.
    if proof.is_empty() {
        return false;
    }
    // 2. If first is an exact power of 2, prepend first_hash to the consistency_path array.
    let mut path: Vec<&[u8]> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(first_root);
    }
    path.extend(proof.iter().map(AsRef::as_ref));
    // 3. Set fn to first - 1 and sn to second - 1.
    let (mut fn_, mut sn) = (first - 1, second - 1);
    // 4. If LSB(fn) is set, right-shift both fn and sn equally until LSB(fn) is not set.
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. Set both fr and sr to the first value in the consistency_path array.
    let Some(mut fr) = to_hash(path[0]) else {
        return false;
    };
    let mut sr = fr;
    // 6. For each subsequent value c in the consistency_path array:
    for c in &path[1..] {
        // a. If sn is 0, stop the iteration and fail.
        if sn == 0 {
            return false;
        }
        // b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn_ & 1 == 1 || fn_ == sn {
            // i. Set fr to HASH(0x01 || c || fr). ii. Set sr to HASH(0x01 || c || sr).
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            // iii. If LSB(fn) is not set, right-shift fn and sn equally until either LSB(fn)
            // is set or fn is 0.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            // Otherwise: i. Set sr to HASH(0x01 || sr || c).
            sr = node_hash(&sr, c);
        }
        // c. Finally, right-shift both fn and sn one time.
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7. Proven if fr equals first_hash, sr equals second_hash and sn is 0.
    fr[..] == *first_root && sr[..] == *second_root && sn == 0
}

// Appending ---------------------------------------------------------------------------------

/// The right edge of a growing tree: the nodes of [`root_nodes`] of its size.
///
/// It is all an append needs, so a writer appends without reading the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    // Left to right, largest first: the last one is the next leaf's left neighbour.
    edge: Vec<(NodeId, Hash)>,
    size: u64,
}

impl Frontier {
    /// The empty tree's frontier.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild the edge of the tree of `size` from the stored nodes of [`root_nodes`].
    ///
    /// # Errors
    ///
    /// [`MerkleError::MissingNode`].
    pub fn from_nodes(size: u64, nodes: &Nodes) -> Result<Self, MerkleError> {
        let edge = root_nodes(size)
            .into_iter()
            .map(|id| Ok((id, stored(nodes, id)?)))
            .collect::<Result<_, MerkleError>>()?;
        Ok(Self { edge, size })
    }

    /// The number of leaves in the tree.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append the leaf HASH `leaf`; return the leaf node and every parent it completes.
    ///
    /// These are the nodes to store: `((0, index), leaf)` first, then bottom-up.
    ///
    /// # Errors
    ///
    /// [`MerkleError::Full`] when the size would overflow `u64`.
    pub fn append(&mut self, leaf: Hash) -> Result<Vec<(NodeId, Hash)>, MerkleError> {
        let index = self.size;
        let next = index.checked_add(1).ok_or(MerkleError::Full)?;
        let parents = parents_completed(index);
        // The edge holds one node per set bit of the size, so at least one per parent.
        let keep = self.edge.len().saturating_sub(parents.len());
        let mut completed = vec![((0, index), leaf)];
        let (mut top, mut value) = ((0, index), leaf);
        // Each completed parent's left child is the smallest node left on the edge.
        for (parent, (_, left)) in parents.into_iter().zip(self.edge[keep..].iter().rev()) {
            (top, value) = (parent, node_hash(left, &value));
            completed.push((top, value));
        }
        self.edge.truncate(keep);
        self.edge.push((top, value));
        self.size = next;
        Ok(completed)
    }

    /// `MTH` of the tree so far.
    #[must_use]
    pub fn root(&self) -> Hash {
        let Some(((_, last), rest)) = self.edge.split_last() else {
            return EMPTY_ROOT;
        };
        rest.iter()
            .rev()
            .fold(*last, |value, (_, left)| node_hash(left, &value))
    }
}

// Helpers -----------------------------------------------------------------------------------

/// `k`, the largest power of two smaller than `n` (for `n >= 2`).
fn split(n: u64) -> u64 {
    1 << (n - 1).ilog2()
}

fn nodes_of(ranges: &[(u64, u64)]) -> Result<Vec<NodeId>, MerkleError> {
    // Keep the first occurrence's order while dropping repeats, as Python's dict.fromkeys.
    let mut seen = HashSet::new();
    let mut nodes = Vec::new();
    for &(start, end) in ranges {
        for id in subtree_nodes(start, end)? {
            if seen.insert(id) {
                nodes.push(id);
            }
        }
    }
    Ok(nodes)
}

fn hashes_of(ranges: &[(u64, u64)], nodes: &Nodes) -> Result<Vec<Hash>, MerkleError> {
    ranges
        .iter()
        .map(|&(start, end)| subtree_hash(start, end, nodes))
        .collect()
}

fn stored(nodes: &Nodes, id: NodeId) -> Result<Hash, MerkleError> {
    nodes.get(&id).copied().ok_or(MerkleError::MissingNode(id))
}

fn is_hash(value: &[u8]) -> bool {
    value.len() == HASH_SIZE
}

fn to_hash(value: &[u8]) -> Option<Hash> {
    value.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The RFC 6962 reference test data of transparency-dev/merkle, as tests/test_merkle.py
    // copies it: testonly/constants.go (leaf inputs, node hashes and roots) and
    // proof/verify_test.go (inclusion and consistency proofs, leaves numbered from 0 here).
    const CT_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    const CT_NODES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
    ];
    const CT_INCLUSION: [(u64, u64, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    const CT_CONSISTENCY: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn at(n: u64) -> usize {
        usize::try_from(n).expect("a small tree")
    }

    fn count(n: usize) -> u64 {
        u64::try_from(n).expect("a small tree")
    }

    fn unhex(text: &str) -> Vec<u8> {
        hex::decode(text).expect("hex")
    }

    fn hexes(hashes: &[Hash]) -> Vec<String> {
        hashes.iter().map(hex::encode).collect()
    }

    /// The stored nodes of a tree: everything `Frontier::append` returned.
    fn build(leaves: &[Vec<u8>]) -> (Frontier, Nodes) {
        let mut frontier = Frontier::new();
        let mut nodes = Nodes::new();
        for leaf in leaves {
            nodes.extend(frontier.append(leaf_hash(leaf)).expect("room"));
        }
        (frontier, nodes)
    }

    fn ct_tree(size: usize) -> Nodes {
        let leaves: Vec<Vec<u8>> = CT_LEAVES[..size].iter().map(|l| unhex(l)).collect();
        build(&leaves).1
    }

    fn flip(value: &[u8], bit: usize) -> Vec<u8> {
        let mut changed = value.to_vec();
        changed[bit / 8] ^= 1 << (bit % 8);
        changed
    }

    // An independent reference: RFC 9162 2.1.1's MTH over the list, read literally.
    fn reference_mth(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaf_hash(&leaves[0]),
            n => {
                // The largest power of two smaller than n.
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&reference_mth(&leaves[..k]), &reference_mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn hashes_are_the_rfcs() {
        assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest(b"")));
        let expected: Hash = Sha256::digest(b"\x00abc").into();
        assert_eq!(leaf_hash(b"abc"), expected);
        let (left, right) = (leaf_hash(b"l"), leaf_hash(b"r"));
        let joined = [&[1u8][..], &left, &right].concat();
        assert_eq!(
            node_hash(&left, &right),
            <[u8; 32]>::from(Sha256::digest(joined))
        );
        assert_ne!(node_hash(&left, &right), node_hash(&right, &left));
    }

    #[test]
    fn ct_vectors_roots_for_every_size() {
        let mut frontier = Frontier::new();
        assert_eq!(hex::encode(frontier.root()), CT_ROOTS[0]);
        for size in 1..=CT_LEAVES.len() {
            frontier
                .append(leaf_hash(&unhex(CT_LEAVES[size - 1])))
                .expect("room");
            assert_eq!(hex::encode(frontier.root()), CT_ROOTS[size]);
            let nodes = ct_tree(size);
            let root = root_hash(count(size), &nodes).expect("the root nodes");
            assert_eq!(hex::encode(root), CT_ROOTS[size]);
        }
        let leaves: Vec<Vec<u8>> = CT_LEAVES.iter().map(|l| unhex(l)).collect();
        assert_eq!(hex::encode(reference_mth(&leaves)), CT_ROOTS[8]);
    }

    #[test]
    fn ct_vectors_node_hashes() {
        let mut expected = HashMap::new();
        for (level, row) in CT_NODES.iter().enumerate() {
            for (index, value) in row.iter().enumerate() {
                expected.insert(
                    (u32::try_from(level).expect("small"), count(index)),
                    (*value).to_string(),
                );
            }
        }
        let stored: HashMap<NodeId, String> = ct_tree(8)
            .into_iter()
            .map(|(id, value)| (id, hex::encode(value)))
            .collect();
        assert_eq!(stored, expected);
    }

    #[test]
    fn ct_vectors_inclusion() {
        for (index, size, proof) in CT_INCLUSION {
            let nodes = ct_tree(at(size));
            let computed = inclusion_proof(index, size, &nodes).expect("the nodes");
            assert_eq!(hexes(&computed), proof, "{index} in {size}");
            let leaf = leaf_hash(&unhex(CT_LEAVES[at(index)]));
            let root = unhex(CT_ROOTS[at(size)]);
            let hashes: Vec<Vec<u8>> = proof.iter().map(|h| unhex(h)).collect();
            assert!(verify_inclusion(&leaf, index, size, &hashes, &root));
        }
    }

    #[test]
    fn ct_vectors_consistency() {
        for (first, second, proof) in CT_CONSISTENCY {
            let nodes = ct_tree(at(second));
            let computed = consistency_proof(first, second, &nodes).expect("the nodes");
            assert_eq!(hexes(&computed), proof, "{first} to {second}");
            let first_root = unhex(CT_ROOTS[at(first)]);
            let second_root = unhex(CT_ROOTS[at(second)]);
            let hashes: Vec<Vec<u8>> = proof.iter().map(|h| unhex(h)).collect();
            assert!(verify_consistency(
                first,
                second,
                &first_root,
                &second_root,
                &hashes
            ));
        }
    }

    #[test]
    fn every_proof_of_small_trees_verifies_and_no_altered_one_does() {
        let leaves: Vec<Vec<u8>> = (0..34).map(|i| format!("leaf-{i}").into_bytes()).collect();
        let (_, nodes) = build(&leaves);
        let roots: Vec<Hash> = (0..=leaves.len())
            .map(|size| reference_mth(&leaves[..size]))
            .collect();
        for size in 1..=count(leaves.len()) {
            let root = roots[at(size)];
            assert_eq!(root_hash(size, &nodes), Ok(root));
            for index in 0..size {
                let leaf = leaf_hash(&leaves[at(index)]);
                let proof = inclusion_proof(index, size, &nodes).expect("the nodes");
                assert!(verify_inclusion(&leaf, index, size, &proof, &root));
                assert!(!verify_inclusion(
                    &flip(&leaf, 5),
                    index,
                    size,
                    &proof,
                    &root
                ));
                for position in 0..proof.len() {
                    let mut altered: Vec<Vec<u8>> = proof.iter().map(|h| h.to_vec()).collect();
                    altered[position] = flip(&altered[position], 77);
                    assert!(!verify_inclusion(&leaf, index, size, &altered, &root));
                    altered.remove(position);
                    assert!(!verify_inclusion(&leaf, index, size, &altered, &root));
                }
            }
            for first in 1..size {
                let first_root = roots[at(first)];
                let proof = consistency_proof(first, size, &nodes).expect("the nodes");
                assert!(verify_consistency(first, size, &first_root, &root, &proof));
                assert!(!verify_consistency(first, size, &root, &first_root, &proof));
                for position in 0..proof.len() {
                    let mut altered: Vec<Vec<u8>> = proof.iter().map(|h| h.to_vec()).collect();
                    altered[position] = flip(&altered[position], 200);
                    assert!(!verify_consistency(
                        first,
                        size,
                        &first_root,
                        &root,
                        &altered
                    ));
                    altered.remove(position);
                    assert!(!verify_consistency(
                        first,
                        size,
                        &first_root,
                        &root,
                        &altered
                    ));
                }
            }
        }
    }

    #[test]
    fn out_of_range_arguments_are_errors() {
        assert_eq!(
            inclusion_nodes(5, 5),
            Err(MerkleError::LeafNotInTree { index: 5, size: 5 })
        );
        assert!(inclusion_nodes(0, 0).is_err());
        assert!(inclusion_proof(5, 5, &Nodes::new()).is_err());
        for (first, second) in [(0, 5), (6, 5), (0, 0)] {
            assert_eq!(
                consistency_nodes(first, second),
                Err(MerkleError::NoConsistencyProof { first, second })
            );
        }
        assert_eq!(consistency_proof(5, 5, &Nodes::new()), Ok(vec![]));
        assert_eq!(
            subtree_nodes(3, 3),
            Err(MerkleError::EmptyRange { start: 3, end: 3 })
        );
        assert_eq!(
            subtree_nodes(2, 6),
            Err(MerkleError::NotARecursionRange { start: 2, end: 6 })
        );
        assert_eq!(root_nodes(0), vec![]);
        assert_eq!(root_hash(0, &Nodes::new()), Ok(EMPTY_ROOT));
    }

    #[test]
    fn a_missing_stored_node_is_an_error_naming_it() {
        let leaves: Vec<Vec<u8>> = (0..7).map(|i| format!("leaf-{i}").into_bytes()).collect();
        let (_, mut nodes) = build(&leaves);
        nodes.remove(&(0, 3));
        let error = inclusion_proof(2, 7, &nodes).expect_err("a node is missing");
        assert_eq!(error, MerkleError::MissingNode((0, 3)));
        assert_eq!(error.to_string(), "node (0, 3) is needed and was not given");
        assert!(Frontier::from_nodes(7, &Nodes::new()).is_err());
    }

    #[test]
    fn a_rebuilt_frontier_continues_like_the_original() {
        let leaves: Vec<Vec<u8>> = (0..40).map(|i| format!("leaf-{i}").into_bytes()).collect();
        for size in 0..30 {
            let (mut original, nodes) = build(&leaves[..size]);
            let ids = root_nodes(count(size));
            let only: Nodes = ids.iter().map(|id| (*id, nodes[id])).collect();
            let mut rebuilt = Frontier::from_nodes(count(size), &only).expect("the root nodes");
            assert_eq!(rebuilt, original);
            for leaf in &leaves[size..] {
                let hash = leaf_hash(leaf);
                assert_eq!(rebuilt.append(hash), original.append(hash));
                assert_eq!(rebuilt.root(), original.root());
            }
            assert_eq!(rebuilt.root(), reference_mth(&leaves));
            assert_eq!(rebuilt.size(), count(leaves.len()));
        }
    }

    #[test]
    fn a_full_tree_refuses_another_leaf() {
        let mut frontier = Frontier {
            edge: Vec::new(),
            size: u64::MAX,
        };
        assert_eq!(frontier.append([0; 32]), Err(MerkleError::Full));
        assert_eq!(parents_completed(u64::MAX).last(), Some(&(64, 0)));
    }

    #[test]
    fn malformed_verification_input_is_false() {
        let leaves: Vec<Vec<u8>> = (0..5).map(|i| format!("leaf-{i}").into_bytes()).collect();
        let (frontier, nodes) = build(&leaves);
        let root = frontier.root();
        let leaf = leaf_hash(&leaves[2]);
        let proof = inclusion_proof(2, 5, &nodes).expect("the nodes");
        assert!(verify_inclusion(&leaf, 2, 5, &proof, &root));
        assert!(!verify_inclusion(&leaf[..31], 2, 5, &proof, &root));
        assert!(!verify_inclusion(
            &leaf,
            2,
            5,
            &proof,
            &[root.as_slice(), &[0]].concat()
        ));
        let mut short: Vec<Vec<u8>> = proof.iter().map(|h| h.to_vec()).collect();
        short[1].pop();
        assert!(!verify_inclusion(&leaf, 2, 5, &short, &root));
        assert!(!verify_inclusion(&leaf, 2, u64::MAX, &proof, &root));
        assert!(!verify_inclusion(&leaf, u64::MAX, u64::MAX, &proof, &root));
        let empty: [[u8; 32]; 0] = [];
        assert!(!verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &empty));
        assert!(verify_consistency(5, 5, &root, &root, &empty));
        assert!(!verify_consistency(5, 5, &root, &root, &[root]));
        assert!(!verify_consistency(1, u64::MAX, &leaf, &root, &proof));
    }
}
