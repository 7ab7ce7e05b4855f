"""A Merkle tree over the ledger's entries, as in Certificate Transparency (RFC 6962 / RFC 9162).

Leaves are hashed as ``H(0x00 || entry)`` and inner nodes as ``H(0x01 || left ||
right)``, so a leaf can never pass for a node. An inclusion proof (audit path)
shows that the entry at ``index`` is in the tree of ``size`` leaves whose root a
checkpoint signed. Hashes are SHA-256 or SM3 and written ``algorithm:hex``.
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


def to_text(algorithm: str, value: bytes) -> str:
    return f"{algorithm}:{value.hex()}"


def from_text(text: str) -> tuple[str, bytes]:
    """(algorithm, bytes) from ``algorithm:hex``. Raises ValueError."""
    algorithm, _, hexed = text.partition(":")
    if algorithm not in ("sha256", "sm3") or not hexed:
        raise ValueError(f"not an algorithm:hex hash: {text[:80]!r}")
    return algorithm, bytes.fromhex(hexed)
