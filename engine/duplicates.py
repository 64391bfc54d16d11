"""Near-duplicate text: word-shingle sets, exact Jaccard, and every pair above a threshold.

What goes in: texts (the candidates' ``content``), a shingle size ``n`` and a threshold
``t`` in (0, 1]. What comes out: every pair ``(i, j)``, ``i < j``, whose Jaccard
similarity is at least ``t``, with the similarity (:func:`similar_pairs`), or the same
pairs as at-most-one conflicts, exemptions applied (:func:`conflicts`). Exact: no sketch, no sampling — the
pairs found are exactly the pairs a brute-force comparison of all ``n(n-1)/2`` pairs
finds (a property test holds the two against each other).

The definition (the verifier implements it again with its own code,
:mod:`engine.verify_semantics`, held to the same cases):

* normalised text: Unicode NFKC, then case-folded;
* words: maximal runs of alphanumeric characters (``str.isalnum``; punctuation, spaces
  and underscores separate words);
* shingles: the set of runs of ``n`` consecutive words; a text of fewer than ``n`` (but
  at least one) words has one shingle, all its words; a text without words has none;
* similarity: ``|A ∩ B| / |A ∪ B|`` as a float (IEEE division), 0 when both sets are
  empty; a pair is a duplicate when the similarity is ``>= t``.

How the pairs are found fast (AllPairs with prefix filtering, Bayardo et al. 2007):
shingles are ordered rarest first; if ``J(A, B) >= t`` then ``|A ∩ B| >= t·max(|A|,|B|)``,
so the first ``|A| - ⌊t·|A|⌋ + 1`` shingles of ``A`` and of ``B`` (a prefix at least as
long as the bound needs) share one. Only the prefixes go into the inverted index, and
sets are visited smallest first, so a set is only compared with earlier (not larger) sets
of size ``>= t·|A|``. Each candidate pair is then checked exactly. Cost: near linear in
the total shingle count when duplicates are few; quadratic in the size of a group of
mutual near-duplicates (every pair in it is a real answer). Exact copies cost nothing
extra: :func:`conflicts` searches one set per distinct text and states ``k`` copies as
one at-most-one. See ``bench/duplicates_hotpot.py``.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DuplicatePair:
    """Items ``first < second`` (positions in the input) with their similarity."""

    first: int
    second: int
    similarity: float


#: A run of ``str.isalnum`` characters: ``\w`` of a str pattern is exactly isalnum
#: plus the underscore (Python's ``re`` docs), so this is "alphanumeric, not ``_``".
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The words of ``text`` after NFKC and case folding (see the module docstring)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def shingles(text: str, n: int) -> frozenset[str]:
    """The set of ``n``-word shingles of ``text`` (each joined by one space)."""
    ws = words(text)
    if not ws:
        return frozenset()
    if len(ws) <= n:
        return frozenset((" ".join(ws),))
    return frozenset(" ".join(ws[k:k + n]) for k in range(len(ws) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """``|a ∩ b| / |a ∪ b|``, 0 for two empty sets."""
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _prefix_length(size: int, threshold: float) -> int:
    # floor(t * size) <= the smallest overlap a duplicate needs, so this prefix is never
    # shorter than the bound requires (float rounding can only make it longer).
    return max(1, min(size, size - int(threshold * size) + 1))


def similar_pairs(sets: Sequence[frozenset[str]], threshold: float,
                  candidates: Iterable[int] | None = None) -> list[DuplicatePair]:
    """Every pair of ``sets`` (restricted to the positions ``candidates``, all when None)
    with Jaccard similarity ``>= threshold``, sorted by ``(first, second)``."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    pool = [i for i in (range(len(sets)) if candidates is None else candidates) if sets[i]]
    # Shingles as small ints (first-seen order): int sets intersect and sort faster than
    # string sets, and the bijection keeps every size and overlap, so every similarity.
    vocab: dict[str, int] = {}
    ids = {i: frozenset([vocab.setdefault(g, len(vocab)) for g in sets[i]]) for i in pool}
    freq = [0] * len(vocab)
    for i in pool:
        for g in ids[i]:
            freq[g] += 1
    # Rarest first, ties by id: one total order every set shares. Shingles of one set
    # only are never shared (and never indexed): a set whose whole prefix is such
    # shingles can have no duplicate at all.
    rank = [0] * len(vocab)
    for r, g in enumerate(sorted(range(len(vocab)), key=freq.__getitem__)):
        rank[g] = r
    shared_anywhere = frozenset(g for g in range(len(vocab)) if freq[g] > 1)
    # Smallest sets first: each set meets only earlier, not larger ones in the index.
    pool.sort(key=lambda i: (len(ids[i]), i))
    index: dict[int, list[int]] = {}
    out: list[DuplicatePair] = []
    for i in pool:
        a = ids[i]
        size = len(a)
        shared = a & shared_anywhere
        room = _prefix_length(size, threshold) - (size - len(shared))
        if room <= 0:
            continue
        seen: set[int] = set()
        min_size = int(threshold * size)  # floor: never drops a real pair to rounding
        for g in sorted(shared, key=rank.__getitem__)[:room]:
            posting = index.setdefault(g, [])
            for j in posting:
                if j in seen:
                    continue
                seen.add(j)
                b = ids[j]
                if len(b) < min_size:
                    continue
                common = len(a & b)
                sim = common / (size + len(b) - common)  # = jaccard(sets[i], sets[j])
                if sim >= threshold:
                    out.append(DuplicatePair(min(i, j), max(i, j), sim))
            posting.append(i)
    out.sort(key=lambda p: (p.first, p.second))
    return out


@dataclass(frozen=True, slots=True)
class Conflict:
    """At most one of ``members`` may be taken. The first ``split`` members are one unit
    (copies of one text), the rest another whose text has ``similarity`` with it (every
    pair across has it; within a unit it is 1); ``split == len(members)``: one unit."""

    members: tuple[int, ...]
    similarity: float
    split: int


def conflicts(sets: Sequence[frozenset[str]], threshold: float, candidates: Sequence[int],
              exempt_pin: Collection[int], linked: Callable[[int, int], bool]) -> list[Conflict]:
    """Every pair of ``candidates`` with similarity ``>= threshold`` must not both be
    taken, except pairs of two ``exempt_pin`` items and pairs where ``linked(i, j)``;
    returned as at-most-one groups that say exactly that, no more.

    Why groups: ``k`` copies of one text are ``k(k-1)/2`` pairs (a disclaimer retrieved
    200 times is 19,900), but one "at most one of these k" says the same. Items are
    grouped by identical shingle sets; a group's unpinned items form one unit, each
    pinned item a unit of its own. The pair search runs over one set per group. Then:
    a unit of several items is one conflict; two units whose texts are duplicates (the
    same group, or two groups found by the search) are one conflict over both. Where a
    unit holds a ``linked`` pair, or two units do, the conflicts of those units are
    pairs instead (each non-exempt pair once), so nothing exempt is ever forbidden."""
    groups: dict[frozenset[str], list[int]] = {}
    for i in candidates:
        if sets[i]:
            groups.setdefault(sets[i], []).append(i)
    keys = list(groups)  # first-seen order: deterministic for a given input order
    units_of: list[list[tuple[int, ...]]] = []
    for key in keys:
        members = groups[key]
        free = tuple(i for i in members if i not in exempt_pin)
        units_of.append(([free] if free else []) + [(i,) for i in members if i in exempt_pin])

    def clean(unit: tuple[int, ...]) -> bool:
        return not any(linked(a, b) for a, b in itertools.combinations(unit, 2))

    out: list[Conflict] = []
    # Copies of one text, one unit each: first, so a reason names a same-text copy first.
    for units in units_of:
        for unit in units:
            if len(unit) < 2:
                continue
            if clean(unit):
                out.append(Conflict(unit, 1.0, len(unit)))
            else:
                out += [Conflict((a, b), 1.0, 2) for a, b in itertools.combinations(unit, 2) if not linked(a, b)]

    def across(x: tuple[int, ...], y: tuple[int, ...], sim: float) -> None:
        if len(x) == 1 and len(y) == 1 and x[0] in exempt_pin and y[0] in exempt_pin:
            return
        pairs = [(a, b) for a in x for b in y]
        if clean(x) and clean(y) and not any(linked(a, b) for a, b in pairs):
            out.append(Conflict(x + y, sim, len(x)))
            return
        for a, b in pairs:
            if not linked(a, b) and not (a in exempt_pin and b in exempt_pin):
                out.append(Conflict((min(a, b), max(a, b)), sim, 1))

    for units in units_of:  # the same text, different units (a pin and its copies)
        for x, y in itertools.combinations(units, 2):
            across(x, y, 1.0)
    reps = [groups[key][0] for key in keys]
    group_of = {rep: g for g, rep in enumerate(reps)}
    for pair in similar_pairs(sets, threshold, reps):
        gx, gy = sorted((group_of[pair.first], group_of[pair.second]))
        for x in units_of[gx]:
            for y in units_of[gy]:
                across(x, y, pair.similarity)
    return out
