"""RFC 6962 Merkle trees over the audit log's record hashes. Pure functions, bytes in,
bytes out; nothing here knows about files or keys.

- leaf hash ``MTH({d}) = SHA-256(0x00 || d)``; node ``SHA-256(0x01 || left || right)``;
  the empty tree hashes to ``SHA-256("")`` (RFC 6962 §2.1).
- A tree of ``n > 1`` leaves splits at ``k``, the largest power of two smaller than ``n``:
  the left subtree is always perfect, so a log can be hashed incrementally from the
  roots of its perfect subtrees (:class:`CompactRange`), O(log n) memory.
- Inclusion proofs (RFC 6962 §2.1.1) and consistency proofs (§2.1.2) are built from the
  definitions; they are verified with the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2,
  which only need the proof, the sizes and the roots (a reviewer's side).

A leaf of the audit log is the 32-byte SHA-256 of one line's envelope (its ``hash``
field without ``"sha256:"``), in seq order: see :func:`leaf_bytes`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

__all__ = [
    "CompactRange", "EMPTY_ROOT", "consistency_proof", "inclusion_proof", "leaf_bytes",
    "leaf_hash", "node_hash", "root_from_leaf_hashes", "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of a tree with no leaves (RFC 6962: the hash of the empty string)."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def leaf_bytes(record_hash: str) -> bytes:
    """The leaf data for a line whose envelope hash is ``"sha256:<64 hex>"``."""
    if not record_hash.startswith("sha256:") or len(record_hash) != 71:
        raise ValueError(f"not a record hash: {record_hash!r}")
    return bytes.fromhex(record_hash[7:])


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of the leaves ``lo..hi-1``, given their leaf hashes."""
    n = hi - lo
    if n == 1:
        return hashes[lo]
    k = _split(n)
    return node_hash(_subtree(hashes, lo, lo + k), _subtree(hashes, lo + k, hi))


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The tree head (MTH) of leaves given by their leaf hashes."""
    compact = CompactRange()
    for h in hashes:
        compact.append_hash(h)
    return compact.root()


@dataclass(slots=True)
class CompactRange:
    """The roots of the perfect subtrees of a growing tree, largest first: appending a
    leaf is O(1) amortised, the root O(log n). ``size`` is the number of leaves."""

    size: int = 0
    peaks: list[bytes] = field(default_factory=list)

    def append_hash(self, h: bytes) -> None:
        """Add one leaf by its leaf hash (``leaf_hash(data)``)."""
        self.size += 1
        self.peaks.append(h)
        # Two equal perfect subtrees merge: the trailing one-bits of the new size.
        n = self.size
        while n & 1 == 0:
            right = self.peaks.pop()
            self.peaks[-1] = node_hash(self.peaks[-1], right)
            n >>= 1

    def append(self, data: bytes) -> None:
        """Add one leaf by its data."""
        self.append_hash(leaf_hash(data))

    def root(self) -> bytes:
        """MTH of the leaves so far (RFC 6962's split makes every left subtree perfect,
        so the peaks fold right to left)."""
        if not self.peaks:
            return EMPTY_ROOT
        r = self.peaks[-1]
        for p in reversed(self.peaks[:-1]):
            r = node_hash(p, r)
        return r

    def copy(self) -> CompactRange:
        return CompactRange(self.size, list(self.peaks))


def inclusion_proof(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) of RFC 6962 §2.1.1 for a tree given by its leaf hashes,
    leaf-side first."""
    n = len(hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is not in a tree of {n} leaves")
    path: list[bytes] = []
    lo, hi, m = 0, n, index
    # Walk down from the root; each step records the sibling subtree, root side first.
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(_subtree(hashes, lo + k, hi))
            hi = lo + k
        else:
            path.append(_subtree(hashes, lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def consistency_proof(old_size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 §2.1.2: that the first ``old_size`` leaves of the tree
    given by ``hashes`` are a prefix of it. Empty when ``old_size`` is 0 or ``n``."""
    n = len(hashes)
    if not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size} is not in 0..{n}")
    if old_size in (0, n):
        return []
    out: list[bytes] = []
    lo, hi, m, whole = 0, n, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append(_subtree(hashes, lo + k, hi))
            hi = lo + k
        else:
            out.append(_subtree(hashes, lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        out.append(_subtree(hashes, lo, hi))
    out.reverse()
    return out


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show the leaf hash ``leaf`` at ``index`` in
    the tree of ``size`` leaves whose root is ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does ``proof`` show that the tree of ``old_size`` leaves with
    ``old_root`` is a prefix of the tree of ``new_size`` leaves with ``new_root``?"""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root
