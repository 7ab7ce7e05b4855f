"""A Merkle tree over the ledger's entries, as in Certificate Transparency (RFC 6962 / RFC 9162).

Leaves are hashed as ``H(0x00 || entry)`` and inner nodes as ``H(0x01 || left ||
right)``, so a leaf can never pass for a node. An inclusion proof (audit path)
shows that the entry at ``index`` is in the tree of ``size`` leaves whose root a
checkpoint signed; a consistency proof shows that the tree of ``new_size``
leaves extends the tree of ``old_size`` leaves -- nothing before ``old_size``
was changed or removed. Hashes are SHA-256 or SM3 and written ``algorithm:hex``.
"""

from __future__ import annotations

from collections.abc import Sequence

from targets import hashing


def _h(algorithm: str, data: bytes) -> bytes:
    hasher = hashing.new_hasher(algorithm)
    hasher.update(data)
    return bytes.fromhex(hasher.hexdigest())  # type: ignore[attr-defined]


def leaf_hash(algorithm: str, entry: bytes) -> bytes:
    return _h(algorithm, b"\x00" + entry)


def node_hash(algorithm: str, left: bytes, right: bytes) -> bytes:
    return _h(algorithm, b"\x01" + left + right)


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root(algorithm: str, leaves: Sequence[bytes]) -> bytes:
    """The tree head over ``leaves`` (leaf hashes). The empty tree's root is the hash of nothing."""
    if not leaves:
        return _h(algorithm, b"")
    level = list(leaves)
    # Bottom-up pairing gives the same root as RFC 6962's recursive split: an odd
    # node at the end of a level is carried up unchanged.
    while len(level) > 1:
        paired = [node_hash(algorithm, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_proof(algorithm: str, index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``leaves`` (RFC 6962 PATH(m, D[n]))."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is not in a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(algorithm, index, leaves[:k]), root(algorithm, leaves[k:])]
    return [*inclusion_proof(algorithm, index - k, leaves[k:]), root(algorithm, leaves[:k])]


def verify_inclusion(
    algorithm: str, index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` with ``expected_root``.

    RFC 9162, section 2.1.3.2.
    """
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(algorithm, p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(algorithm, r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


class Tree:
    """The leaves of a log with the hashes of its subtrees remembered.

    Given the algorithm and the leaf hashes. The root of every prefix and the
    consistency proof between any two prefixes are computed from the same
    remembered subtrees, so checking many checkpoints against one list of
    leaves costs about as much as computing one root.
    """

    def __init__(self, algorithm: str, leaves: Sequence[bytes]) -> None:
        self.algorithm = algorithm
        self.leaves = leaves
        self._known: dict[tuple[int, int], bytes] = {}

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) (RFC 9162 section 2.1.1); ``start < end``."""
        if end - start == 1:
            return self.leaves[start]
        known = self._known.get((start, end))
        if known is None:
            k = _split(end - start)
            known = node_hash(self.algorithm, self.subtree(start, start + k), self.subtree(start + k, end))
            self._known[(start, end)] = known
        return known

    def root(self, size: int) -> bytes:
        """The root of the first ``size`` leaves. Raises ValueError when there are fewer."""
        if not 0 <= size <= len(self.leaves):
            raise ValueError(f"a tree of {len(self.leaves)} leaves has no prefix of {size}")
        return self.subtree(0, size) if size else _h(self.algorithm, b"")

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) of RFC 9162 section 2.1.4.1. Raises ValueError for sizes out of order.

        The proof between a tree and itself, and from the empty tree, is empty
        (the RFC defines proofs for 0 < old_size < new_size only).
        """
        if not 0 <= old_size <= new_size <= len(self.leaves):
            raise ValueError(f"no consistency proof from {old_size} to {new_size} leaves "
                             f"in a tree of {len(self.leaves)}")
        if old_size in (0, new_size):
            return []
        return self._subproof(old_size, 0, new_size, True)

    def _subproof(self, m: int, start: int, end: int, whole: bool) -> list[bytes]:
        # SUBPROOF(m, D[start:end], b): ``whole`` is b, true while the old tree's
        # root is a node of the new tree the verifier already knows (its own root).
        if m == end - start:
            return [] if whole else [self.subtree(start, end)]
        k = _split(end - start)
        if m <= k:
            return [*self._subproof(m, start, start + k, whole), self.subtree(start + k, end)]
        return [*self._subproof(m - k, start + k, end, False), self.subtree(start, start + k)]


def consistency_proof(algorithm: str, old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The proof that the tree of ``leaves`` extends its first ``old_size`` leaves (RFC 9162 2.1.4.1).

    Raises ValueError when ``old_size`` is negative or larger than the tree.
    """
    return Tree(algorithm, leaves).consistency_proof(old_size, len(leaves))


def verify_consistency(algorithm: str, old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` shows the tree ``(new_size, new_root)`` extends ``(old_size, old_root)``.

    RFC 9162, section 2.1.4.2, for 0 < old_size < new_size. Equal sizes are
    consistent when the roots are equal and the proof is empty; the empty tree
    (whose root is the hash of nothing) is a prefix of every tree, with an empty proof.
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == _h(algorithm, b"")
    path = list(proof)
    if not path:  # step 1
        return False
    if old_size & (old_size - 1) == 0:  # step 2: the old tree is a complete subtree, its root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(algorithm, c, fr)
            sr = node_hash(algorithm, c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(algorithm, sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0  # step 7


def to_text(algorithm: str, value: bytes) -> str:
    return f"{algorithm}:{value.hex()}"


def from_text(text: str) -> tuple[str, bytes]:
    """(algorithm, bytes) from ``algorithm:hex``. Raises ValueError."""
    algorithm, _, hexed = text.partition(":")
    if algorithm not in ("sha256", "sm3") or not hexed:
        raise ValueError(f"not an algorithm:hex hash: {text[:80]!r}")
    return algorithm, bytes.fromhex(hexed)
