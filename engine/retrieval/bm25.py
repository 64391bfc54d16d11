"""BM25 postings of one level of the index: built from terms, scored with NumPy, saved as
plain arrays and memory-mapped back.

What goes in: each node's terms (:mod:`engine.retrieval.analyzer`), in the order the level
lists its nodes. What comes out: a :class:`Postings` value: the level's vocabulary sorted,
and per term (one column of a CSC matrix) the positions of the nodes that hold it, in
ascending order, with the term's count in each, plus every node's length in terms. BM25
is computed from those at query time, for the query's terms only::

    raw(q, d) = Σ_{t ∈ q} idf(t) · tf(t,d) / (tf(t,d) + k1 · (1 − b + b · |d| / avgdl))
    idf(t)    = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))

(the "lucene" variant, as bm25s computes it), in float64, terms summed in column order,
so the same postings give the same scores bit for bit whether they were just built or
loaded from disk.

On disk (a folder per level; all ``.npy`` files are read memory-mapped, so a query reads
only the columns of its own terms): ``terms.txt`` (the sorted vocabulary, one term per
line, UTF-8), ``indptr.npy`` (int64, terms + 1), ``indices.npy`` (int32 node positions),
``tf.npy`` (int32 counts) and ``lengths.npy`` (int32 terms per node).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

FILES = ("terms.txt", "indptr.npy", "indices.npy", "tf.npy", "lengths.npy")


def idf(df: Any, n_docs: int) -> Any:
    """``ln(1 + (N − df + 0.5) / (df + 0.5))``; > 0 for every df <= N (array or scalar)."""
    if isinstance(df, np.ndarray):
        return np.log1p((n_docs - df + 0.5) / (df + 0.5))
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


class _SortedTerms:
    """Term → column by binary search in the sorted vocabulary (no dict to build)."""

    __slots__ = ("_terms",)

    def __init__(self, terms: list[str]) -> None:
        self._terms = terms

    def get(self, term: str) -> int | None:
        i = bisect.bisect_left(self._terms, term)
        return i if i < len(self._terms) and self._terms[i] == term else None

    def __len__(self) -> int:
        return len(self._terms)


@dataclass(frozen=True, slots=True)
class Postings:
    """The BM25 state of one level (see the module doc); ``n`` nodes, ``avgdl`` their
    mean length in terms."""

    terms: Any  # _SortedTerms, or a dict term -> column
    indptr: np.ndarray
    indices: np.ndarray
    tf: np.ndarray
    lengths: np.ndarray
    n: int
    avgdl: float

    def column(self, term: str) -> int | None:
        """The column of ``term``, or ``None`` when no node holds it."""
        col: int | None = self.terms.get(term)
        return col

    def holders(self, col: int) -> np.ndarray:
        """Positions of the nodes that hold the term of column ``col`` (ascending)."""
        out: np.ndarray = self.indices[int(self.indptr[col]):int(self.indptr[col + 1])]
        return out

    def df(self, col: int) -> int:
        return int(self.indptr[col + 1] - self.indptr[col])

    def scores(self, cols: Sequence[int], k1: float, b: float) -> np.ndarray:
        """Raw BM25 of every node for the terms of ``cols`` (summed in ascending column order)."""
        out = np.zeros(self.n, dtype=np.float64)
        for col in sorted(set(cols)):
            lo, hi = int(self.indptr[col]), int(self.indptr[col + 1])
            rows = np.asarray(self.indices[lo:hi], dtype=np.intp)
            tf = np.asarray(self.tf[lo:hi], dtype=np.float64)
            norm = k1 * (1.0 - b + b * np.asarray(self.lengths[rows], dtype=np.float64) / self.avgdl)
            out[rows] += idf(hi - lo, self.n) * (tf / (tf + norm))
        return out


def build(corpus: Sequence[Sequence[str]]) -> Postings | None:
    """The postings of a level whose node ``i`` has the terms ``corpus[i]``; ``None`` when
    no node has a term."""
    n = len(corpus)
    lengths = np.fromiter((len(doc) for doc in corpus), dtype=np.int64, count=n)
    total = int(lengths.sum())
    if total == 0:
        return None
    vocab = sorted(set(chain.from_iterable(corpus)))
    col_of = {t: i for i, t in enumerate(vocab)}
    cols = np.array(list(map(col_of.__getitem__, chain.from_iterable(corpus))), dtype=np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    # One key per (term, node), sorted by term then node: the CSC order itself.
    keys, counts = np.unique(cols * n + rows, return_counts=True)
    key_cols = keys // n
    indptr = np.searchsorted(key_cols, np.arange(len(vocab) + 1, dtype=np.int64)).astype(np.int64)
    return Postings(col_of, indptr, (keys % n).astype(np.int32), counts.astype(np.int32),
                    lengths.astype(np.int32), n, float(total) / n)


def build_from_ids(cols: np.ndarray, rows: np.ndarray, lengths: np.ndarray, vocab: Sequence[str]) -> Postings | None:
    """:func:`build` from term ids: node ``rows[k]`` holds term ``vocab[cols[k]]`` once
    per k; ``vocab`` sorted, ``lengths`` each node's count of terms. The same postings
    as :func:`build` over the nodes' term lists (the vocabulary is the terms present)."""
    n = len(lengths)
    total = int(lengths.sum())
    if total == 0:
        return None
    # One key per (term, node): sorted by term id (the vocabulary's order), then node;
    # int32 when it fits, which sorts faster.
    wide = len(vocab) * n >= 2**31
    dtype: Any = np.int64 if wide else np.int32
    packed: Any = cols.astype(dtype) * n + rows.astype(dtype)
    keys, counts = np.unique(packed, return_counts=True)
    key_cols = keys // n
    first = np.flatnonzero(np.concatenate(([True], key_cols[1:] != key_cols[:-1])))
    present = key_cols[first]
    indptr = np.append(first, len(keys)).astype(np.int64)
    terms = [vocab[i] for i in present.tolist()]
    return Postings(_SortedTerms(terms), indptr, (keys % n).astype(np.int32), counts.astype(np.int32),
                    np.asarray(lengths).astype(np.int32), n, float(total) / n)


def save(postings: Postings, folder: Path) -> None:
    """Write ``postings`` into ``folder`` (the files of the module doc)."""
    terms = postings.terms
    vocab = list(terms._terms) if isinstance(terms, _SortedTerms) else sorted(terms, key=terms.__getitem__)
    (folder / "terms.txt").write_text("\n".join(vocab), encoding="utf-8")
    for name, arr in (("indptr", postings.indptr), ("indices", postings.indices), ("tf", postings.tf),
                      ("lengths", postings.lengths)):
        np.save(folder / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)


def load(folder: Path) -> Postings:
    """The postings saved in ``folder``, arrays memory-mapped.

    Raises:
        OSError, ValueError: a file is missing or does not hold what it should.
    """
    text = (folder / "terms.txt").read_text(encoding="utf-8")
    vocab = text.split("\n") if text else []
    indptr = np.load(folder / "indptr.npy", mmap_mode="r", allow_pickle=False)
    indices = np.load(folder / "indices.npy", mmap_mode="r", allow_pickle=False)
    tf = np.load(folder / "tf.npy", mmap_mode="r", allow_pickle=False)
    lengths = np.load(folder / "lengths.npy", mmap_mode="r", allow_pickle=False)
    if (indptr.shape != (len(vocab) + 1,) or indices.shape != tf.shape or lengths.ndim != 1
            or (len(vocab) and int(indptr[-1]) != len(indices))):
        raise ValueError(f"the postings in {folder} do not fit together "
                         f"({len(vocab)} terms, indptr {indptr.shape}, indices {indices.shape}, tf {tf.shape})")
    n = len(lengths)
    total = float(np.sum(lengths, dtype=np.int64))
    if n == 0 or total <= 0:
        raise ValueError(f"the postings in {folder} have no terms")
    return Postings(_SortedTerms(vocab), indptr, indices, tf, lengths, n, total / n)
