"""RFC 9162 (Certificate Transparency 2.0) section 2.1 Merkle trees, over stored subtrees.

The hashing is the RFC's: ``MTH({}) = SHA-256()``, a leaf is ``SHA-256(0x00 || d)`` and an
interior node ``SHA-256(0x01 || left || right)``, split at the largest power of two smaller
than the number of leaves.

The log stores the tree as complete aligned subtrees: node ``(level, index)`` is the hash of
the ``2**level`` leaves starting at leaf ``index * 2**level``, written once that subtree is
complete and never changed after. Every range the RFC's recursion visits is a run of such
nodes, one per set bit of its width, so a proof needs O(log n) of them. Each computation is
therefore split in two: ``*_nodes`` says which nodes to fetch (in one query), and the function
of the same stem computes from a mapping holding at least those nodes. :class:`Frontier`
keeps the right edge of a growing tree so that appending reads nothing.

Errors::

    ValueError   an argument out of range (index >= size, size < 0, first == 0, ...), a
                 range the RFC's recursion never produces, or a hash that is not 32 bytes
    KeyError     a node the computation needs is missing from the mapping given

The two ``verify_*`` functions never raise: whatever is malformed makes them return False.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

NodeId = tuple[int, int]
"""A stored node: ``(level, index)``, covering leaves ``[index << level, (index + 1) << level)``."""

HASH_SIZE = 32
"""The length of every hash here: SHA-256."""

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""``MTH({})``: the root of the empty tree, the hash of the empty string."""

# Domain separation prefixes (RFC 9162 2.1.1): a leaf can never be taken for a node.
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(entry: bytes) -> bytes:
    """``MTH({d0}) = SHA-256(0x00 || d0)``: the leaf hash of ``entry``."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


# Node arithmetic ----------------------------------------------------------------------------


def parents_completed(index: int) -> list[NodeId]:
    """The nodes completed by appending leaf ``index``, bottom-up, without the leaf itself.

    Leaf 3 completes ``(1, 1)`` (leaves 2..3) and ``(2, 0)`` (leaves 0..3); leaf 4 none.
    """
    if index < 0:
        raise ValueError(f"leaf index {index} is negative")
    parents: list[NodeId] = []
    level, position = 0, index
    # A node is complete when its last leaf arrives: while the new leaf is a right child.
    while position & 1:
        level += 1
        position >>= 1
        parents.append((level, position))
    return parents


def subtree_nodes(start: int, end: int) -> list[NodeId]:
    """The stored nodes, left to right, whose hashes give ``MTH(D[start:end])``.

    ``start`` must be a multiple of the largest power of two not above ``end - start``: true
    of every range the RFC's recursion produces from a whole tree, and what makes each set
    bit of the width one complete aligned node.
    """
    if start < 0 or end <= start:
        raise ValueError(f"[{start}, {end}) is not a non-empty range of leaves")
    width = end - start
    top = width.bit_length() - 1
    if start % (1 << top):
        raise ValueError(f"[{start}, {end}) is not a range of the RFC's recursion")
    nodes: list[NodeId] = []
    position = start
    for level in range(top, -1, -1):
        if (width >> level) & 1:
            nodes.append((level, position >> level))
            position += 1 << level
    return nodes


def subtree_hash(start: int, end: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    """``MTH(D[start:end])`` from the stored nodes of :func:`subtree_nodes` ``(start, end)``."""
    ids = subtree_nodes(start, end)
    # The RFC splits off the largest complete left subtree first, so the right edge is folded
    # innermost: MTH = H(n0, H(n1, ... H(n_{r-1}, n_r))).
    value = _stored(nodes, ids[-1])
    for node_id in reversed(ids[:-1]):
        value = node_hash(_stored(nodes, node_id), value)
    return value


def root_nodes(size: int) -> list[NodeId]:
    """The stored nodes, left to right, whose hashes give the root of the tree of ``size``."""
    _check_size(size)
    return subtree_nodes(0, size) if size else []


def root_hash(size: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    """``MTH(D[0:size])`` from the stored nodes of :func:`root_nodes` ``(size)``."""
    _check_size(size)
    return subtree_hash(0, size, nodes) if size else EMPTY_ROOT


# Inclusion proofs (RFC 9162 2.1.3) ----------------------------------------------------------


def inclusion_nodes(index: int, size: int) -> list[NodeId]:
    """Every stored node :func:`inclusion_proof` needs, each once."""
    return _nodes_of(_inclusion_ranges(index, size))


def inclusion_proof(index: int, size: int, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """``PATH(index, D[0:size])``, from the leaf's sibling upwards (RFC 9162 2.1.3.1)."""
    return [subtree_hash(start, end, nodes) for start, end in _inclusion_ranges(index, size)]


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTH make up ``PATH(index, D[0:size])``, in the RFC's order."""
    _check_size(size)
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])    if m < k
    #               = PATH(m - k, D[k:n]) : MTH(D[0:k]) if m >= k
    # Walked top-down, so the outermost sibling comes first and the list is reversed.
    ranges: list[tuple[int, int]] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
    ranges.reverse()
    return ranges


# Consistency proofs (RFC 9162 2.1.4) --------------------------------------------------------


def consistency_nodes(first: int, second: int) -> list[NodeId]:
    """Every stored node :func:`consistency_proof` needs, each once."""
    return _nodes_of(_consistency_ranges(first, second))


def consistency_proof(first: int, second: int, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """``PROOF(first, D[0:second])`` in the RFC's order (RFC 9162 2.1.4.1); empty if equal."""
    return [subtree_hash(start, end, nodes) for start, end in _consistency_ranges(first, second)]


def _consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTH make up ``PROOF(first, D[0:second])``, in the RFC's order."""
    _check_size(second)
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    # PROOF(m, D[n]) = SUBPROOF(m, D[n], true), with
    #   SUBPROOF(m, D[m], true)  = {}
    #   SUBPROOF(m, D[m], false) = {MTH(D[m])}
    #   SUBPROOF(m, D[n], b)     = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])         if m <= k
    #                            = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]) if m > k
    # Walked top-down, so the outermost commitment comes first and the list is reversed.
    ranges: list[tuple[int, int]] = []
    start, end, m, known = 0, second, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            known = False
    if not known:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


# Verification -------------------------------------------------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows the leaf HASH ``leaf`` at ``index`` in the tree ``root``.

    RFC 9162 2.1.3.2, step by step. ``root`` must be the root signed for ``size``: the
    algorithm checks the shape of the path, and a few other sizes share that shape.
    """
    if not (_is_hash(leaf) and _is_hash(root) and _is_path(proof)):
        return False
    if not (_is_count(index) and _is_count(size)):
        return False
    # 1. If leaf_index is greater than or equal to tree_size, fail.
    if index >= size:
        return False
    # 2. Set fn to leaf_index and sn to tree_size - 1. 3. Set r to hash.
    fn, sn = index, size - 1
    r = leaf
    # 4. For each value p in the inclusion_path array:
    for p in proof:
        # a. If sn is 0, stop the iteration and fail.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # i. Set r to HASH(0x01 || p || r).
            r = node_hash(p, r)
            # ii. If LSB(fn) is not set, right-shift fn and sn equally until either LSB(fn) is
            # set or fn is 0.
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            # Otherwise: i. Set r to HASH(0x01 || r || p).
            r = node_hash(r, p)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 5. Proven if sn is 0 and r equals the root hash.
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree ``second_root`` extends the tree ``first_root``.

    RFC 9162 2.1.4.2, step by step, for ``0 < first < second`` (the RFC's precondition).
    For ``first == second`` the RFC's proof is empty (2.1.4.1: ``SUBPROOF(m, D[m], true) =
    {}``), so only an empty proof between equal roots is accepted. ``first == 0`` is outside
    the RFC's definition, as :func:`consistency_proof` refuses it: False.
    """
    if not (_is_hash(first_root) and _is_hash(second_root) and _is_path(proof)):
        return False
    if not (_is_count(first) and _is_count(second)) or not 0 < first <= second:
        return False
    if first == second:
        return len(proof) == 0 and first_root == second_root
    return _verify_consistency_steps(first, second, first_root, second_root, list(proof))


def _verify_consistency_steps(
    first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]
) -> bool:
    """RFC 9162 2.1.4.2 steps 1 to 7, for checked arguments with ``0 < first < second``."""
    # 1. If consistency_path is an empty array, fail.
    if not path:
        return False
    # 2. If first is an exact power of 2, prepend first_hash to the consistency_path array.
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, right-shift both fn and sn equally until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # a. If sn is 0, stop the iteration and fail.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # i. Set fr to HASH(0x01 || c || fr). ii. Set sr to HASH(0x01 || c || sr).
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            # iii. If LSB(fn) is not set, right-shift fn and sn equally until either LSB(fn)
            # is set or fn is 0.
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            # Otherwise: i. Set sr to HASH(0x01 || sr || c).
            sr = node_hash(sr, c)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. Proven if fr equals first_hash, sr equals second_hash and sn is 0.
    return fr == first_root and sr == second_root and sn == 0


# Appending ----------------------------------------------------------------------------------


class Frontier:
    """The right edge of a growing tree: the nodes of :func:`root_nodes` of its size.

    It is all an append needs, so a writer appends without reading the database. One writer
    owns a frontier: it is not safe to share between threads.
    """

    __slots__ = ("_edge", "_size")

    def __init__(self, size: int = 0, nodes: Mapping[NodeId, bytes] | None = None) -> None:
        """Rebuild the edge of the tree of ``size`` from the stored nodes of ``root_nodes``."""
        ids = root_nodes(size)
        stored: Mapping[NodeId, bytes] = {} if nodes is None else nodes
        # Left to right, largest first: the last one is the next leaf's left neighbour.
        self._edge: list[tuple[NodeId, bytes]] = [(i, _stored(stored, i)) for i in ids]
        self._size = size

    @property
    def size(self) -> int:
        """The number of leaves in the tree."""
        return self._size

    def append(self, leaf: bytes) -> list[tuple[NodeId, bytes]]:
        """Append the leaf HASH ``leaf``; return the leaf node and every parent it completes.

        These are the nodes to store: ``((0, index), leaf)`` first, then bottom-up.
        """
        if not _is_hash(leaf):
            raise ValueError("a leaf hash is 32 bytes")
        index = self._size
        completed: list[tuple[NodeId, bytes]] = [((0, index), leaf)]
        value = leaf
        for parent in parents_completed(index):
            # Each completed parent's left child is the smallest node left on the edge.
            _, left = self._edge.pop()
            value = node_hash(left, value)
            completed.append((parent, value))
        self._edge.append((completed[-1][0], value))
        self._size = index + 1
        return completed

    def root(self) -> bytes:
        """``MTH`` of the tree so far."""
        if not self._edge:
            return EMPTY_ROOT
        value = self._edge[-1][1]
        for _, left in reversed(self._edge[:-1]):
            value = node_hash(left, value)
        return value


# Helpers ------------------------------------------------------------------------------------


def _split(n: int) -> int:
    """``k``, the largest power of two smaller than ``n`` (for ``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _nodes_of(ranges: Sequence[tuple[int, int]]) -> list[NodeId]:
    # dict keeps the first occurrence's order while dropping repeats.
    return list(dict.fromkeys(node for start, end in ranges for node in subtree_nodes(start, end)))


def _stored(nodes: Mapping[NodeId, bytes], node_id: NodeId) -> bytes:
    try:
        value = nodes[node_id]
    except KeyError:
        raise KeyError(f"node {node_id} is needed and was not given") from None
    # A truncated or mistyped stored hash would otherwise yield a proof nobody can verify.
    if not _is_hash(value):
        raise ValueError(f"node {node_id} is not a {HASH_SIZE}-byte hash")
    return value


def _check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"tree size {size} is negative")


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_path(proof: object) -> bool:
    # bytes and str are sequences too, and an empty one would pass for an empty proof.
    return (
        isinstance(proof, Sequence)
        and not isinstance(proof, (bytes, bytearray, str))
        and all(_is_hash(p) for p in proof)
    )


def _is_count(value: object) -> bool:
    # bool is an int subclass, and True is no tree size.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
