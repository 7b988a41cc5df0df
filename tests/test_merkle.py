"""The audit log's Merkle tree against RFC 9162 section 2.1 and the published CT vectors.

The reference below is written from the RFC's recursive definitions (MTH, PATH, PROOF and
SUBPROOF over the list of entries) and shares nothing with the module: every tree size up to
300, every leaf and every pair of sizes is compared with it.
"""

from __future__ import annotations

import functools
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import merkle
from gateway.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    NodeId,
    consistency_nodes,
    consistency_proof,
    inclusion_nodes,
    inclusion_proof,
    leaf_hash,
    node_hash,
    parents_completed,
    root_hash,
    root_nodes,
    subtree_hash,
    subtree_nodes,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300
ENTRIES: tuple[bytes, ...] = tuple(b"leaf-%d" % i for i in range(MAX_SIZE))

# --- Independent reference: RFC 9162 2.1.1, 2.1.3.1 and 2.1.4.1, read literally -----------


def ref_sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_leaf(entry: bytes) -> bytes:
    return ref_sha256(b"\x00" + entry)


def ref_k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@functools.cache
def ref_mth(d: tuple[bytes, ...]) -> bytes:
    n = len(d)
    if n == 0:
        return ref_sha256(b"")
    if n == 1:
        return ref_sha256(b"\x00" + d[0])
    k = ref_k(n)
    return ref_sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: tuple[bytes, ...], b: bool) -> list[bytes]:  # noqa: FBT001
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = ref_k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]  # noqa: FBT003


def ref_proof(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    return ref_subproof(m, d, True)  # noqa: FBT003


def ref_path_shape(m: int, n: int) -> list[str]:
    """Which side each PATH element sits on: what a verifier's hashing depends on."""
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return [*ref_path_shape(m, k), "right"]
    return [*ref_path_shape(m - k, n - k), "left"]


def ref_proof_shape(m: int, n: int, b: bool = True) -> list[str]:  # noqa: FBT001, FBT002
    """The role of each PROOF element: the seed MTH(D[m]), a left or a right sibling."""
    if m == n:
        return [] if b else ["seed"]
    k = ref_k(n)
    if m <= k:
        return [*ref_proof_shape(m, k, b), "right"]
    return [*ref_proof_shape(m - k, n - k, False), "left"]  # noqa: FBT003


def ref_complete_nodes(size: int) -> set[NodeId]:
    """Every aligned subtree whose leaves all exist in a tree of ``size``."""
    return {(level, index) for level in range(size.bit_length()) for index in range(size >> level)}


@functools.cache
def stored_nodes(size: int) -> dict[NodeId, bytes]:
    """What the log stores at ``size``: every node Frontier.append returned so far."""
    frontier = Frontier()
    nodes: dict[NodeId, bytes] = {}
    for entry in ENTRIES[:size]:
        nodes.update(frontier.append(ref_leaf(entry)))
    return nodes


def only(size: int, ids: list[NodeId]) -> dict[NodeId, bytes]:
    """The stored nodes ``ids`` and nothing else; KeyError if one is not stored at ``size``."""
    nodes = stored_nodes(size)
    return {node_id: nodes[node_id] for node_id in ids}


def flip(value: bytes, bit: int) -> bytes:
    changed = bytearray(value)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


# --- Hashing and node arithmetic ------------------------------------------------------------


def test_hashes_are_the_rfcs():
    """MTH({}) is SHA-256 of nothing, leaves carry 0x00 and interior nodes 0x01."""
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"abc") == ref_leaf(b"abc")
    left, right = ref_leaf(b"l"), ref_leaf(b"r")
    assert node_hash(left, right) == ref_sha256(b"\x01" + left + right)
    assert node_hash(left, right) != node_hash(right, left)


@pytest.mark.parametrize(
    ("index", "parents"),
    [
        (0, []),
        (1, [(1, 0)]),
        (2, []),
        (3, [(1, 1), (2, 0)]),
        (6, []),
        (7, [(1, 3), (2, 1), (3, 0)]),
        (11, [(1, 5), (2, 2)]),
    ],
)
def test_parents_completed_examples(index, parents):
    assert parents_completed(index) == parents


@pytest.mark.parametrize("size", range(MAX_SIZE + 1))
def test_parents_completed_are_the_nodes_the_new_leaf_completes(size):
    """Appending leaf ``size`` completes exactly the nodes complete at size+1 and not before."""
    new = ref_complete_nodes(size + 1) - ref_complete_nodes(size)
    assert [(0, size), *parents_completed(size)] == sorted(new)


@pytest.mark.parametrize(
    ("start", "end", "nodes"),
    [
        (0, 1, [(0, 0)]),
        (0, 7, [(2, 0), (1, 2), (0, 6)]),
        (0, 8, [(3, 0)]),
        (8, 11, [(1, 4), (0, 10)]),
        (12, 13, [(0, 12)]),
        (256, 300, [(5, 8), (3, 36), (2, 74)]),
    ],
)
def test_subtree_nodes_examples(start, end, nodes):
    assert subtree_nodes(start, end) == nodes


@pytest.mark.parametrize(
    ("start", "end"), [(0, 0), (3, 3), (5, 4), (-1, 1), (1, 3), (2, 6), (4, 12), (5, 7)]
)
def test_subtree_nodes_refuses_ranges_the_recursion_never_produces(start, end):
    with pytest.raises(ValueError, match="range"):
        subtree_nodes(start, end)


def test_stored_nodes_are_the_complete_subtrees_with_their_mth():
    """Every node Frontier.append returns is the MTH of its leaves, stored once complete."""
    for size in range(MAX_SIZE + 1):
        assert set(stored_nodes(size)) == ref_complete_nodes(size)
    for (level, index), value in stored_nodes(MAX_SIZE).items():
        start = index << level
        assert value == ref_mth(ENTRIES[start : start + (1 << level)])


# --- Exhaustive comparison with the reference, sizes 0..300 ----------------------------------


@pytest.mark.parametrize("size", range(MAX_SIZE + 1))
def test_root_hash_is_the_mth(size):
    """root_hash, from only the root_nodes, and Frontier.root both give MTH(D[0:size])."""
    expected = ref_mth(ENTRIES[:size])
    assert root_hash(size, only(size, root_nodes(size))) == expected
    assert Frontier(size, stored_nodes(size)).root() == expected
    if size:
        assert subtree_hash(0, size, stored_nodes(size)) == expected


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_every_inclusion_proof_is_the_rfcs_path_and_verifies(size):
    """For every leaf: PATH(m, D[n]) computed from only the nodes asked for, and accepted."""
    tree = ENTRIES[:size]
    root = ref_mth(tree)
    for index in range(size):
        ids = inclusion_nodes(index, size)
        assert len(ids) == len(set(ids)) <= 2 * size.bit_length()
        proof = inclusion_proof(index, size, only(size, ids))
        assert proof == ref_path(index, tree)
        assert verify_inclusion(ref_leaf(tree[index]), index, size, proof, root)


@pytest.mark.parametrize("second", range(1, MAX_SIZE + 1))
def test_every_consistency_proof_is_the_rfcs_proof_and_verifies(second):
    """For every first <= second: PROOF(m, D[n]) from only the nodes asked for, and accepted."""
    tree = ENTRIES[:second]
    second_root = ref_mth(tree)
    for first in range(1, second + 1):
        ids = consistency_nodes(first, second)
        assert len(ids) == len(set(ids)) <= 2 * second.bit_length()
        proof = consistency_proof(first, second, only(second, ids))
        assert proof == ref_proof(first, tree)
        assert verify_consistency(first, second, ref_mth(tree[:first]), second_root, proof)


@given(
    size=st.integers(1, 2**62),
    data=st.data(),
)
def test_proofs_of_huge_trees_read_few_complete_nodes(size, data):
    """Node lists stay O(log n), unique, and only name subtrees complete at that size."""
    index = data.draw(st.integers(0, size - 1), label="index")
    first = data.draw(st.integers(1, size), label="first")
    for ids in (inclusion_nodes(index, size), consistency_nodes(first, size), root_nodes(size)):
        assert len(ids) == len(set(ids)) <= 2 * size.bit_length()
        assert all((i + 1) << level <= size for level, i in ids)


# --- Published vectors: transparency-dev/merkle (the RFC 6962 reference test data) ---------
# Copied as data from the files testonly/constants.go (leaf inputs, node hashes and roots)
# and proof/verify_test.go (inclusion and consistency proofs).

CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_NODES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
# (leaf index, tree size, proof); verify_test.go numbers leaves from 1, these from 0.
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# Each is a first size, a second size and the proof between them.
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def ct_nodes(size: int) -> dict[NodeId, bytes]:
    frontier = Frontier()
    nodes: dict[NodeId, bytes] = {}
    for entry in CT_LEAVES[:size]:
        nodes.update(frontier.append(leaf_hash(entry)))
    return nodes


def test_ct_vectors_roots_for_every_size():
    """The well-known roots of the 8 reference leaves, sizes 0..8 (size 8: 5dc9da79...)."""
    frontier = Frontier()
    assert frontier.root().hex() == CT_ROOTS[0]
    for size in range(1, len(CT_LEAVES) + 1):
        frontier.append(leaf_hash(CT_LEAVES[size - 1]))
        assert frontier.root().hex() == CT_ROOTS[size]
        assert root_hash(size, ct_nodes(size)).hex() == CT_ROOTS[size]
    assert ref_mth(tuple(CT_LEAVES)).hex() == CT_ROOTS[8]  # the reference agrees too


def test_ct_vectors_node_hashes():
    """Every stored node of the 8-leaf tree is the published (level, index) hash."""
    expected = {
        (level, index): value
        for level, row in enumerate(CT_NODES)
        for index, value in enumerate(row)
    }
    assert {node_id: value.hex() for node_id, value in ct_nodes(8).items()} == expected


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_ct_vectors_inclusion(index, size, proof):
    nodes = ct_nodes(size)
    assert [h.hex() for h in inclusion_proof(index, size, nodes)] == proof
    leaf = leaf_hash(CT_LEAVES[index])
    root = bytes.fromhex(CT_ROOTS[size])
    assert verify_inclusion(leaf, index, size, [bytes.fromhex(h) for h in proof], root)


@pytest.mark.parametrize(("first", "second", "proof"), CT_CONSISTENCY)
def test_ct_vectors_consistency(first, second, proof):
    nodes = ct_nodes(second)
    assert [h.hex() for h in consistency_proof(first, second, nodes)] == proof
    first_root, second_root = bytes.fromhex(CT_ROOTS[first]), bytes.fromhex(CT_ROOTS[second])
    hashes = [bytes.fromhex(h) for h in proof]
    assert verify_consistency(first, second, first_root, second_root, hashes)


# --- Tampering -------------------------------------------------------------------------------

sizes = st.integers(2, MAX_SIZE)
tampering = settings(max_examples=150, deadline=None)


@tampering
@given(size=sizes, data=st.data())
def test_tampered_inclusion_proofs_fail(size, data):
    """A flipped bit anywhere, a node missing or added, another index: never accepted."""
    tree = ENTRIES[:size]
    index = data.draw(st.integers(0, size - 1), label="index")
    leaf, root = ref_leaf(tree[index]), ref_mth(tree)
    proof = inclusion_proof(index, size, stored_nodes(size))
    assert verify_inclusion(leaf, index, size, proof, root)

    bit = data.draw(st.integers(0, 255), label="bit")
    assert not verify_inclusion(flip(leaf, bit), index, size, proof, root)
    assert not verify_inclusion(leaf, index, size, proof, flip(root, bit))
    for position in range(len(proof)):
        flipped = [*proof[:position], flip(proof[position], bit), *proof[position + 1 :]]
        assert not verify_inclusion(leaf, index, size, flipped, root)
        missing = proof[:position] + proof[position + 1 :]
        assert not verify_inclusion(leaf, index, size, missing, root)
    extra = data.draw(st.sampled_from([root, leaf, proof[0], b"\x00" * 32]), label="extra")
    for position in range(len(proof) + 1):
        longer = [*proof[:position], extra, *proof[position:]]
        assert not verify_inclusion(leaf, index, size, longer, root)
    for other in range(size):
        if other != index:
            assert not verify_inclusion(leaf, other, size, proof, root)


@tampering
@given(size=sizes, data=st.data())
def test_inclusion_proofs_fail_at_a_size_of_another_shape(size, data):
    """Another size fails unless its PATH has the very same shape (see the pinned case)."""
    tree = ENTRIES[:size]
    index = data.draw(st.integers(0, size - 1), label="index")
    leaf, root = ref_leaf(tree[index]), ref_mth(tree)
    proof = inclusion_proof(index, size, stored_nodes(size))
    others = [size * 2, size // 2, size - 1, size + 1, data.draw(st.integers(1, 2 * size + 2))]
    for other in others:
        if other == size:
            continue
        same_shape = index < other and ref_path_shape(index, other) == ref_path_shape(index, size)
        assert verify_inclusion(leaf, index, other, proof, root) == same_shape


def test_inclusion_verification_binds_the_size_only_through_the_root():
    """Pinned RFC behaviour: leaf 0's path in a tree of 4 has the shape of one in a tree of 3.

    RFC 9162 2.1.3.2 hashes by the path's shape, so the size-4 proof passes when size 3 is
    claimed with the size-4 root; the signed checkpoint is what ties a root to its size.
    """
    tree = ENTRIES[:4]
    proof = ref_path(0, tree)
    assert verify_inclusion(ref_leaf(tree[0]), 0, 3, proof, ref_mth(tree))
    assert not verify_inclusion(ref_leaf(tree[0]), 0, 3, proof, ref_mth(tree[:3]))


@tampering
@given(second=sizes, data=st.data())
def test_tampered_consistency_proofs_fail(second, data):
    """A flipped bit anywhere, a node missing or added, swapped roots: never accepted."""
    first = data.draw(st.integers(1, second - 1), label="first")
    tree = ENTRIES[:second]
    first_root, second_root = ref_mth(tree[:first]), ref_mth(tree)
    proof = consistency_proof(first, second, stored_nodes(second))
    assert verify_consistency(first, second, first_root, second_root, proof)

    bit = data.draw(st.integers(0, 255), label="bit")
    assert not verify_consistency(first, second, flip(first_root, bit), second_root, proof)
    assert not verify_consistency(first, second, first_root, flip(second_root, bit), proof)
    assert not verify_consistency(first, second, second_root, first_root, proof)
    assert not verify_consistency(first, second, first_root, second_root, [])
    for position in range(len(proof)):
        flipped = [*proof[:position], flip(proof[position], bit), *proof[position + 1 :]]
        assert not verify_consistency(first, second, first_root, second_root, flipped)
        missing = proof[:position] + proof[position + 1 :]
        assert not verify_consistency(first, second, first_root, second_root, missing)
    extras = [first_root, second_root, proof[0], b"\x00" * 32]
    extra = data.draw(st.sampled_from(extras), label="extra")
    for position in range(len(proof) + 1):
        longer = [*proof[:position], extra, *proof[position:]]
        assert not verify_consistency(first, second, first_root, second_root, longer)


@tampering
@given(second=sizes, data=st.data())
def test_consistency_proofs_fail_between_sizes_of_another_shape(second, data):
    """Other sizes fail unless their PROOF has the very same shape (as for inclusion)."""
    first = data.draw(st.integers(1, second - 1), label="first")
    tree = ENTRIES[:second]
    first_root, second_root = ref_mth(tree[:first]), ref_mth(tree)
    proof = consistency_proof(first, second, stored_nodes(second))
    shape = ref_proof_shape(first, second)
    drawn_first = data.draw(st.integers(1, second), label="other first")
    drawn_second = data.draw(st.integers(first, 2 * second + 2), label="other second")
    pairs = [
        *((f, second) for f in (first - 1, first + 1, first ^ 2, drawn_first)),
        *((first, s) for s in (second * 2, second // 2, second - 1, second + 1, drawn_second)),
    ]
    for other_first, other_second in pairs:
        if (other_first, other_second) == (first, second):
            continue
        accepted = verify_consistency(other_first, other_second, first_root, second_root, proof)
        same_shape = 0 < other_first < other_second and (
            ref_proof_shape(other_first, other_second) == shape
        )
        assert accepted == same_shape


def test_consistency_of_a_size_with_itself():
    """PROOF(m, D[m]) is empty: accepted between equal roots only, and only when empty."""
    root = ref_mth(ENTRIES[:5])
    assert consistency_proof(5, 5, {}) == []
    assert consistency_nodes(5, 5) == []
    assert verify_consistency(5, 5, root, root, [])
    assert not verify_consistency(5, 5, root, flip(root, 0), [])
    assert not verify_consistency(5, 5, root, root, [root])


# --- Malformed input: verification says False, generation raises ValueError -----------------

GOOD_LEAF = ref_leaf(ENTRIES[2])
GOOD_PROOF = ref_path(2, ENTRIES[:5])
GOOD_ROOT = ref_mth(ENTRIES[:5])


@pytest.mark.parametrize(
    ("leaf", "index", "size", "proof", "root"),
    [
        (GOOD_LEAF[:31], 2, 5, GOOD_PROOF, GOOD_ROOT),
        (GOOD_LEAF + b"\x00", 2, 5, GOOD_PROOF, GOOD_ROOT),
        (GOOD_LEAF, 2, 5, GOOD_PROOF, GOOD_ROOT[:31]),
        (GOOD_LEAF, 2, 5, [*GOOD_PROOF[:-1], GOOD_PROOF[-1][:31]], GOOD_ROOT),
        (GOOD_LEAF, 2, 5, [*GOOD_PROOF[:-1], b""], GOOD_ROOT),
        (GOOD_LEAF.hex(), 2, 5, GOOD_PROOF, GOOD_ROOT),
        (None, 2, 5, GOOD_PROOF, GOOD_ROOT),
        (GOOD_LEAF, 2, 5, None, GOOD_ROOT),
        (GOOD_LEAF, 2, 5, b"".join(GOOD_PROOF), GOOD_ROOT),
        (GOOD_LEAF, 2, 5, [None, *GOOD_PROOF], GOOD_ROOT),
        (GOOD_LEAF, -1, 5, GOOD_PROOF, GOOD_ROOT),
        (GOOD_LEAF, 5, 5, GOOD_PROOF, GOOD_ROOT),
        (GOOD_LEAF, 2, 0, GOOD_PROOF, GOOD_ROOT),
        (GOOD_LEAF, 2, -5, GOOD_PROOF, GOOD_ROOT),
        (GOOD_LEAF, 2.0, 5, GOOD_PROOF, GOOD_ROOT),
        (GOOD_LEAF, "2", 5, GOOD_PROOF, GOOD_ROOT),
        (GOOD_LEAF, 2, None, GOOD_PROOF, GOOD_ROOT),
        (GOOD_LEAF, 2, 2**200, GOOD_PROOF, GOOD_ROOT),
    ],
)
def test_malformed_inclusion_input_is_refused(leaf, index, size, proof, root):
    assert verify_inclusion(GOOD_LEAF, 2, 5, GOOD_PROOF, GOOD_ROOT)
    assert verify_inclusion(leaf, index, size, proof, root) is False


def test_inclusion_in_a_one_leaf_tree():
    """A single leaf is its own root, with an empty path; index 1 or a non-empty path fail."""
    leaf = ref_leaf(b"only")
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(leaf, 1, 1, [], leaf)
    assert not verify_inclusion(leaf, 0, 1, [leaf], leaf)
    assert not verify_inclusion(leaf, 0, 0, [], leaf)


GOOD_FIRST_ROOT = ref_mth(ENTRIES[:3])
GOOD_CONSISTENCY = ref_proof(3, ENTRIES[:5])


@pytest.mark.parametrize(
    ("first", "second", "first_root", "second_root", "proof"),
    [
        (0, 5, EMPTY_ROOT, GOOD_ROOT, []),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, []),
        (6, 5, GOOD_FIRST_ROOT, GOOD_ROOT, GOOD_CONSISTENCY),
        (-3, 5, GOOD_FIRST_ROOT, GOOD_ROOT, GOOD_CONSISTENCY),
        (3, -5, GOOD_FIRST_ROOT, GOOD_ROOT, GOOD_CONSISTENCY),
        (3.0, 5, GOOD_FIRST_ROOT, GOOD_ROOT, GOOD_CONSISTENCY),
        (3, None, GOOD_FIRST_ROOT, GOOD_ROOT, GOOD_CONSISTENCY),
        (True, 5, GOOD_FIRST_ROOT, GOOD_ROOT, GOOD_CONSISTENCY),
        (3, 5, GOOD_FIRST_ROOT[:31], GOOD_ROOT, GOOD_CONSISTENCY),
        (3, 5, GOOD_FIRST_ROOT, GOOD_ROOT + b"\x00", GOOD_CONSISTENCY),
        (3, 5, GOOD_FIRST_ROOT, GOOD_ROOT, [*GOOD_CONSISTENCY[:-1], GOOD_CONSISTENCY[-1][1:]]),
        (3, 5, GOOD_FIRST_ROOT, GOOD_ROOT, None),
        (3, 5, GOOD_FIRST_ROOT, GOOD_ROOT, b"".join(GOOD_CONSISTENCY)),
        (3, 5, GOOD_FIRST_ROOT, GOOD_ROOT, "".join(h.hex() for h in GOOD_CONSISTENCY)),
        (3, 5, GOOD_FIRST_ROOT, GOOD_ROOT, [*GOOD_CONSISTENCY, 7]),
        (5, 5, GOOD_ROOT, GOOD_ROOT, b""),
        (3, 2**200, GOOD_FIRST_ROOT, GOOD_ROOT, GOOD_CONSISTENCY),
    ],
)
def test_malformed_consistency_input_is_refused(first, second, first_root, second_root, proof):
    assert verify_consistency(3, 5, GOOD_FIRST_ROOT, GOOD_ROOT, GOOD_CONSISTENCY)
    assert verify_consistency(first, second, first_root, second_root, proof) is False


@settings(max_examples=300, deadline=None)
@given(
    a=st.integers(-(2**70), 2**70),
    b=st.integers(-(2**70), 2**70),
    x=st.binary(min_size=30, max_size=34),
    y=st.binary(min_size=30, max_size=34),
    proof=st.lists(st.binary(min_size=31, max_size=33), max_size=70),
)
def test_verification_of_garbage_returns_a_bool_and_never_raises(a, b, x, y, proof):
    assert verify_inclusion(x, a, b, proof, y) in {True, False}
    assert verify_consistency(a, b, x, y, proof) in {True, False}


@pytest.mark.parametrize(
    "call",
    [
        lambda: inclusion_nodes(5, 5),
        lambda: inclusion_nodes(-1, 5),
        lambda: inclusion_nodes(0, 0),
        lambda: inclusion_proof(5, 5, {}),
        lambda: consistency_nodes(0, 5),
        lambda: consistency_nodes(6, 5),
        lambda: consistency_nodes(-1, 5),
        lambda: consistency_proof(0, 0, {}),
        lambda: consistency_proof(0, 5, {}),
        lambda: consistency_proof(6, 5, {}),
        lambda: root_nodes(-1),
        lambda: root_hash(-1, {}),
        lambda: parents_completed(-1),
        lambda: Frontier(-1),
        lambda: Frontier().append(b"\x00" * 31),
        lambda: Frontier(1, {(0, 0): b"short"}),
    ],
)
def test_out_of_range_arguments_raise_value_error(call):
    with pytest.raises(ValueError):  # noqa: PT011 - each call's message differs
        call()


def test_a_missing_stored_node_is_a_key_error():
    """A proof asked of nodes that were not fetched fails loudly, naming the node."""
    nodes = only(7, inclusion_nodes(2, 7))
    del nodes[(0, 3)]
    with pytest.raises(KeyError, match=r"\(0, 3\)"):
        inclusion_proof(2, 7, nodes)
    with pytest.raises(KeyError):
        Frontier(7, {})


# --- Frontier ---------------------------------------------------------------------------------


def test_empty_frontier():
    frontier = Frontier()
    assert frontier.size == 0
    assert frontier.root() == EMPTY_ROOT
    assert Frontier(0, {}).root() == EMPTY_ROOT


def test_append_returns_the_leaf_then_each_completed_parent():
    frontier = Frontier(3, stored_nodes(3))
    leaf = ref_leaf(ENTRIES[3])
    assert frontier.append(leaf) == [
        ((0, 3), leaf),
        ((1, 1), ref_mth(ENTRIES[2:4])),
        ((2, 0), ref_mth(ENTRIES[:4])),
    ]
    assert frontier.size == 4
    assert frontier.root() == ref_mth(ENTRIES[:4])


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, MAX_SIZE - 64), more=st.integers(1, 64))
def test_a_rebuilt_frontier_continues_like_the_original(size, more):
    """Rebuilt at ``size`` from only the root nodes, it appends the very same nodes."""
    original = Frontier()
    for entry in ENTRIES[:size]:
        original.append(ref_leaf(entry))
    rebuilt = Frontier(size, only(size, root_nodes(size)))
    assert rebuilt.size == original.size == size
    assert rebuilt.root() == original.root()
    for entry in ENTRIES[size : size + more]:
        assert rebuilt.append(ref_leaf(entry)) == original.append(ref_leaf(entry))
        assert rebuilt.root() == original.root()
    assert rebuilt.size == size + more
    assert rebuilt.root() == ref_mth(ENTRIES[: size + more])


def test_module_exports_the_agreed_names():
    """Other modules depend on these names."""
    for name in (
        "NodeId",
        "EMPTY_ROOT",
        "leaf_hash",
        "node_hash",
        "parents_completed",
        "subtree_nodes",
        "subtree_hash",
        "root_nodes",
        "root_hash",
        "inclusion_nodes",
        "inclusion_proof",
        "consistency_nodes",
        "consistency_proof",
        "verify_inclusion",
        "verify_consistency",
        "Frontier",
    ):
        assert hasattr(merkle, name), name
