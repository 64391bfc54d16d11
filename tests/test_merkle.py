"""engine.audit.merkle against a naive RFC 6962 implementation written from the text."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.audit import merkle


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 6962 §2.1 defines it."""
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + naive_mth(d[:k]) + naive_mth(d[k:]))


def naive_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 §2.1.1."""
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return naive_path(m, d[:k]) + [naive_mth(d[k:])]
    return naive_path(m - k, d[k:]) + [naive_mth(d[:k])]


def naive_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 §2.1.2."""
    n = len(d)
    if m == n:
        return [] if b else [naive_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return naive_subproof(m, d[:k], b) + [naive_mth(d[k:])]
    return naive_subproof(m - k, d[k:], False) + [naive_mth(d[:k])]


leaves = st.lists(st.binary(max_size=8), min_size=0, max_size=70)


@settings(max_examples=150, deadline=None)
@given(leaves)
def test_root_matches_naive(d: list[bytes]) -> None:
    hashes = [merkle.leaf_hash(x) for x in d]
    assert merkle.root_from_leaf_hashes(hashes) == naive_mth(d)


@settings(max_examples=150, deadline=None)
@given(leaves.filter(bool), st.data())
def test_inclusion_proof_matches_naive_and_verifies(d: list[bytes], data: st.DataObject) -> None:
    hashes = [merkle.leaf_hash(x) for x in d]
    root = naive_mth(d)
    m = data.draw(st.integers(0, len(d) - 1))
    proof = merkle.inclusion_proof(m, hashes)
    assert proof == naive_path(m, d)
    assert merkle.verify_inclusion(hashes[m], m, len(d), proof, root)
    # Any other index, size, leaf or a changed proof hash fails.
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"x" + d[m]), m, len(d), proof, root)
    if len(d) > 1:
        other = (m + 1) % len(d)
        assert not merkle.verify_inclusion(hashes[m], other, len(d), proof, root) \
            or hashes[other] == hashes[m]
        bad = list(proof)
        bad[0] = bytes(32)
        assert not merkle.verify_inclusion(hashes[m], m, len(d), bad, root)
        assert not merkle.verify_inclusion(hashes[m], m, len(d), proof[:-1], root)


@settings(max_examples=150, deadline=None)
@given(leaves.filter(bool), st.data())
def test_consistency_proof_matches_naive_and_verifies(d: list[bytes],
                                                      data: st.DataObject) -> None:
    n = len(d)
    m = data.draw(st.integers(0, n))
    hashes = [merkle.leaf_hash(x) for x in d]
    proof = merkle.consistency_proof(m, hashes)
    assert proof == ([] if m in (0, n) else naive_subproof(m, d, True))
    old, new = naive_mth(d[:m]), naive_mth(d)
    assert merkle.verify_consistency(m, n, old, new, proof)
    if 0 < m < n:
        # A rewritten old leaf, a wrong new root, or a tampered proof is caught.
        forged = [b"forged"] + d[1:m]
        assert not merkle.verify_consistency(m, n, naive_mth(forged), new, proof) \
            or naive_mth(forged) == old
        assert not merkle.verify_consistency(m, n, old, _h(b"other"), proof)
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = bytes(32)
            assert not merkle.verify_consistency(m, n, old, new, bad)


def test_compact_range_is_incremental() -> None:
    compact = merkle.CompactRange()
    seen: list[bytes] = []
    for i in range(40):
        assert compact.root() == naive_mth(seen)
        seen.append(b"%d" % i)
        compact.append(seen[-1])
    assert compact.size == 40 and len(compact.peaks) == bin(40).count("1")


def test_empty_and_bad_arguments() -> None:
    assert merkle.root_from_leaf_hashes([]) == merkle.EMPTY_ROOT == _h(b"")
    assert merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, _h(b"x"), [])
    assert not merkle.verify_consistency(0, 5, _h(b"not empty"), _h(b"x"), [])
    assert not merkle.verify_consistency(3, 2, _h(b""), _h(b""), [])
    assert not merkle.verify_inclusion(_h(b""), 0, 0, [], _h(b""))
    with pytest.raises(ValueError, match="leaf index 3 is not in a tree of 3 leaves"):
        merkle.inclusion_proof(3, [merkle.leaf_hash(b"a")] * 3)
    with pytest.raises(ValueError, match=r"old size 4 is not in 0\.\.3"):
        merkle.consistency_proof(4, [merkle.leaf_hash(b"a")] * 3)
    assert merkle.leaf_bytes("sha256:" + "ab" * 32) == b"\xab" * 32
    with pytest.raises(ValueError, match="not a record hash"):
        merkle.leaf_bytes("md5:00")
