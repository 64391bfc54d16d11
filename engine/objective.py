"""(objective settings, candidates) → the integer value of each item for the optimiser.

What goes in: the policy's :class:`~engine.policy.Objective`, every candidate, the
indices of the *active* ones (those a strategy may take), the relevance order (input
indices by score, best first) and the candidates by id. What comes out: one integer per
candidate, ``RELEVANCE_SCALE`` for the most valuable active item and 0 for every
inactive one. Pure: nothing is read but the arguments.

The steps, over all candidates (so an item that cannot be taken, e.g. a paragraph over
the budget, can still pass its score down to its sentences or sum them up):

1. ``raw = max(relevance_score, 0)``;
2. calibrate ``raw`` to [0, 1] within its group (``calibrate_within``: the item's level,
   or all items pooled): ``max`` divides by the group's best score, ``minmax`` maps the
   group's range onto [0, 1] (all equal: 1), ``rank`` is ``1 - (r - 1) / n`` with ``r``
   the item's 1-based rank in the group (ties: the mean of their ranks), so any
   strictly increasing rescoring gives the same values; ``zscore`` is
   ``exp((raw - best) / sd)`` with ``sd`` the group's population standard deviation
   (all equal: 1 for the best, 0 below), unchanged by any positive rescaling and
   shift. The group's statistics come from its *active* items — a blocked or oversized item does not move the others'
   values, and with the defaults every value is what the engine always computed — or
   from all its items when none is active; items outside them are mapped the same way
   and clipped to [0, 1];
2b. ``zscore_weight`` x: the calibrated value c becomes ``c ** (1 - x) * z ** x`` with
   ``z`` the item's ``zscore`` value (same group and statistics);
3. ``inherit`` a: an item whose nearest parent candidate exists gets
   ``(1 - a) * own + a * parent's`` (the parent's after its own step, so it propagates
   down a chain);
3b. ``document_prior`` b: ``(1 - b) * own + b * the mean (or max, ``document_score``)``
   of step 3's values over the item's document — the items with the same
   ``metadata.doc_id`` and level, their active members (else all); evidence that the
   document is relevant. Items without ``doc_id`` are their own document (unchanged);
   with ``document_scope: flat`` so is every item with a parent or child candidate;
4. the transform (identity, power, reciprocal rank of step 3's value in the pooled
   order, ties in relevance order);
5. times ``level_weights[level]`` (default 1);
5b. ``document_decay`` g: within each document and level, the r-th item (active ones
   first, then by step 5's weight, ties in relevance order) is worth ``g ** (r - 1)`` of
   it — diminishing returns, so the context spreads over documents;
5c. ``position_decay`` h and ``lead_weight`` L (reading order): the item at 0-based
   position r of its group in input order (the reading order when the candidates come in
   it) is worth ``h ** r`` of it, the first one ``1 + L`` times it — a text states what
   it is about first. An item's group is its siblings (the items with the same parent
   candidate) or, for an item without a parent candidate, the items without one that
   share its ``metadata.doc_id`` and level (none: no group, unchanged), whatever
   ``document_scope``;
6. ``coverage``: an item with child candidates is worth the sum of its children's
   values (recursively down to the leaves) instead of its own;
7. scaled: ``round(RELEVANCE_SCALE * w / max w over active items)``;
8. ``fill``: every active item is worth at least 1, so OPTIMAL also fills the budget
   with items whose value rounds to 0 (no shared term, a tiny score to a high power)
   once everything of value fits; among them it takes the fewest tokens first.

Parent links are ``metadata.ancestors`` (the nearest one that is a candidate) or else
``parent_id`` when it names a candidate. Links that form a cycle are ignored (the items
on it count as roots), so the result does not depend on where a cycle is entered.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from operator import attrgetter

from .candidates import Candidate
from .policy import Calibration, CalibrationGroup, DocumentScope, DocumentScore, Objective, Transform

__all__ = ["RELEVANCE_SCALE", "calibrated", "objective_values", "parents", "zscore_spread"]

#: Values are ``round(RELEVANCE_SCALE * weight / max_weight)``: CP-SAT needs integer
#: coefficients, so objective weights keep 6 significant digits relative to the best item.
RELEVANCE_SCALE = 1_000_000

_SCORE = attrgetter("relevance_score")
_LEVEL = attrgetter("level")
_PARENT = attrgetter("parent_id")
_META = attrgetter("metadata")


def parents(cands: Sequence[Candidate], by_id: Mapping[str, Candidate]) -> list[int | None]:
    """Each item's nearest parent candidate (input index), ``None`` for roots and for
    items on a cycle of parent links."""
    out: list[int | None] = [None] * len(cands)
    if list(map(_PARENT, cands)).count(None) == len(cands) and \
            not any("ancestors" in m for m in map(_META, cands) if m):
        return out  # no item names a parent or ancestors (the common case: one pass each)
    for i, c in enumerate(cands):
        if c.parent_id is None and (not c.metadata or "ancestors" not in c.metadata):
            continue  # a root (the common case, checked without the lookups below)
        given = c.metadata.get("ancestors")
        if isinstance(given, (list, tuple)) and all(isinstance(a, str) for a in given):
            links = [a for a in given if a != c.source_id and a in by_id]
            out[i] = by_id[links[0]].index if links else None
        elif c.parent_id is not None and c.parent_id != c.source_id and c.parent_id in by_id:
            out[i] = by_id[c.parent_id].index
    if all(p is None for p in out):
        return out  # no links: no cycle to look for
    # Each item has at most one parent: walk each path once (0 new, 1 on the current
    # walk, 2 done); meeting the current walk again closes a cycle, whose links go.
    state = [0] * len(cands)
    for start in range(len(cands)):
        walk: list[int] = []
        node: int | None = start
        while node is not None and state[node] == 0:
            state[node] = 1
            walk.append(node)
            node = out[node]
        if node is not None and state[node] == 1:
            for j in walk[walk.index(node):]:
                out[j] = None
        for j in walk:
            state[j] = 2
    return out


def _depths(parent: Sequence[int | None]) -> list[int]:
    """Distance to the root along the (acyclic) parent links."""
    depth = [-1] * len(parent)
    for start in range(len(parent)):
        walk: list[int] = []
        node: int | None = start
        while node is not None and depth[node] < 0:
            walk.append(node)
            node = parent[node]
        d = -1 if node is None else depth[node]
        for j in reversed(walk):
            d += 1
            depth[j] = d
    return depth


def zscore_spread(scores: Sequence[float]) -> float:
    """The population standard deviation of ``scores`` (``calibrate: zscore``), summed
    with :func:`math.fsum` so the verifier's own computation gives the same float."""
    n = len(scores)
    mu = math.fsum(scores) / n
    return math.sqrt(math.fsum((x - mu) * (x - mu) for x in scores) / n)


def calibrated(how: Calibration, raw: Sequence[float], groups: Sequence[Sequence[int]],
               active: Sequence[int]) -> list[float]:
    """Step 2: each raw score in [0, 1] within its group (``groups`` partition the
    indices; statistics from the group's active members, else all of them)."""
    n_all = len(raw)
    out = [0.0] * n_all
    every = len(active) == n_all  # every item active (``active`` holds distinct indices)
    is_active = bytearray(b"\x01") * n_all if every else bytearray(n_all)
    if not every:
        for i in active:
            is_active[i] = 1
    for members in groups:
        # The one group of every item, in input order (its statistics: all of ``raw``).
        whole = type(members) is range and members == range(n_all)
        if how is Calibration.MAX and whole and (every or not active):
            if n_all:
                hi = max(raw)
                if hi > 0:  # else every value stays 0.0
                    out = [1.0 if (x := r / hi) > 1.0 else x for r in raw]  # min(x, 1.0)
            continue
        base = list(members) if every else [i for i in members if is_active[i]]
        everyone = not base  # no active member: the group's statistics come from all of it
        if everyone:
            base = list(members)
        if not base:
            continue
        if how is Calibration.MAX:
            hi = max([raw[i] for i in base])
            if hi > 0:  # else every value stays 0.0
                # min(x, 1.0) of x = raw[i] / hi
                vals = [1.0 if (x := r / hi) > 1.0 else x for r in (raw if whole else [raw[i] for i in members])]
                if whole:
                    out = vals
                else:
                    for i, x in zip(members, vals):
                        out[i] = x
        elif how is Calibration.MINMAX:
            lo, hi = min(raw[i] for i in base), max(raw[i] for i in base)
            for i in members:
                x = raw[i]
                out[i] = (1.0 if x >= hi else 0.0) if hi == lo else min(max((x - lo) / (hi - lo), 0.0), 1.0)
        elif how is Calibration.ZSCORE:
            hi, sd = max(raw[i] for i in base), zscore_spread([raw[i] for i in base])
            for i in members:
                x = raw[i]
                out[i] = 1.0 if x >= hi else (0.0 if sd == 0.0 else math.exp((x - hi) / sd))  # no overflow above the best
        else:
            pop = sorted(raw[i] for i in base)
            n = len(pop)
            span: dict[float, tuple[int, int]] = {}  # score -> [first, past last) in pop
            for at, x in enumerate(pop):
                first = span.get(x, (at, at))[0]
                span[x] = (first, at + 1)
            for i in members:
                # Mid-rank: the share of the group strictly above, ties (others) counted half.
                x = raw[i]
                left, right = span.get(x) or (bisect_left(pop, x), bisect_right(pop, x))
                ties = right - left - (1 if everyone or is_active[i] else 0)
                out[i] = min(max(1.0 - ((n - right) + ties / 2) / n, 0.0), 1.0)
    return out


def _in_hierarchy(parent: Sequence[int | None]) -> list[bool]:
    """Whether each item has a parent or a child candidate."""
    linked = [p is not None for p in parent]
    for p in parent:
        if p is not None:
            linked[p] = True
    return linked


def _documents(cands: Sequence[Candidate], active: Sequence[int],
               skip: Sequence[bool] | None = None) -> list[tuple[list[int], list[int]]]:
    """The (document, level) groups of the items that carry ``metadata.doc_id`` (and are
    not ``skip``-ped: ``document_scope: flat`` leaves hierarchy members out), each as
    (members, active members), in first-appearance order."""
    is_active = set(active)
    groups: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    for i, c in enumerate(cands):
        doc = c.doc_id
        if doc is None or (skip is not None and skip[i]):
            continue
        members, on = groups.setdefault((doc, c.level), ([], []))
        members.append(i)
        if i in is_active:
            on.append(i)
    return list(groups.values())


def _document_prior(objective: Objective, cal: list[float], documents: Sequence[tuple[list[int], list[int]]]) -> None:
    """Step 3b, in place: ``(1 - b) * own + b * the document's mean (or max)`` of step 3's
    values, the statistic over the group's active members (else all of them)."""
    b = objective.document_prior
    for members, on in documents:
        basis = on or members
        vals = [cal[i] for i in basis]
        stat = max(vals) if objective.document_score is DocumentScore.MAX else sum(vals) / len(vals)
        for i in members:
            cal[i] = (1.0 - b) * cal[i] + b * stat


def _document_decay(g: float, w: list[float], documents: Sequence[tuple[list[int], list[int]]],
                    order: Sequence[int]) -> None:
    """Step 5b, in place: the r-th item of each group (active ones first, then by weight,
    ties in relevance order) is worth ``g ** (r - 1)`` of its weight."""
    place = {j: r for r, j in enumerate(order)}
    for members, on in documents:
        is_on = set(on)
        ranked = sorted(members, key=lambda i: (i not in is_on, -w[i], place.get(i, len(place) + i)))
        for r, i in enumerate(ranked):
            w[i] *= g ** r


def _reading_groups(cands: Sequence[Candidate], parent: Sequence[int | None]) -> list[list[int]]:
    """Step 5c's groups, each in input order: the children of each parent candidate, and
    the items without a parent candidate by (``metadata.doc_id``, level); items with
    neither are in none."""
    groups: dict[tuple[str, ...] | int, list[int]] = {}
    for i, c in enumerate(cands):
        p = parent[i]
        if p is not None:
            groups.setdefault(p, []).append(i)
        elif (doc := c.doc_id) is not None:
            groups.setdefault((doc, c.level), []).append(i)
    return list(groups.values())


def _position_weights(objective: Objective, w: list[float], groups: Sequence[Sequence[int]]) -> None:
    """Step 5c, in place: the item at 0-based position r of its group (in input order) is
    worth ``position_decay ** r`` of its weight, the first ``1 + lead_weight`` times it."""
    h, lead = objective.position_decay, 1.0 + objective.lead_weight
    for members in groups:
        for r, i in enumerate(members):
            w[i] *= (h ** r) * (lead if r == 0 else 1.0)


def objective_values(objective: Objective, cands: Sequence[Candidate], active: Sequence[int],
                     order: Sequence[int], by_id: Mapping[str, Candidate]) -> tuple[int, ...]:
    """The value of each candidate, ``RELEVANCE_SCALE`` for the best active one, 0 for
    inactive ones (see the module docstring for the steps). ``order`` is every input
    index by relevance, best first (ties by input order)."""
    n = len(cands)
    scores = list(map(_SCORE, cands))
    levels = list(map(_LEVEL, cands))
    raw = [s if s > 0.0 else 0.0 for s in scores]  # max(0.0, s)
    if objective.calibrate_within is CalibrationGroup.LEVEL:
        names = set(levels)
        if len(names) == 1:  # one level: its group is every item
            groups: list[list[int]] | list[range] = [range(n)]
        else:
            by_level: dict[str, list[int]] = {}
            for i, lv in enumerate(levels):
                by_level.setdefault(lv, []).append(i)
            groups = [by_level[k] for k in sorted(by_level)]
    else:
        groups = [range(n)]
    cal = calibrated(objective.calibrate, raw, groups, active)
    if objective.zscore_weight > 0:  # 2b. the distance to the best in standard deviations too
        x = objective.zscore_weight
        z = calibrated(Calibration.ZSCORE, raw, groups, active)
        cal = [c ** (1.0 - x) * zi ** x for c, zi in zip(cal, z)]

    linked = objective.inherit > 0 or objective.coverage
    parent = parents(cands, by_id) if linked else [None] * n
    # Without any link, steps 3 and 6 change nothing: they are skipped.
    linked = linked and parent.count(None) != n
    depth = _depths(parent) if linked else [0] * n
    if objective.inherit > 0 and linked:
        a = objective.inherit
        for i in sorted(range(n), key=lambda j: depth[j]):  # parents first
            p = parent[i]
            if p is not None:
                cal[i] = (1.0 - a) * cal[i] + a * cal[p]

    if objective.uses_documents and any("doc_id" in m for m in map(_META, cands) if m):
        # The true parent links (``parent`` holds them whenever a link step is on).
        links = parent if (objective.inherit > 0 or objective.coverage) else parents(cands, by_id)
        documents = _documents(cands, active, _in_hierarchy(links)
                               if objective.document_scope is DocumentScope.FLAT else None)
    else:
        documents = []
    if objective.document_prior > 0:  # 3b. evidence that the item's document is relevant
        _document_prior(objective, cal, documents)

    # Steps 4 and 5: Objective.weight, spelled out per transform (the same expressions).
    # ``y if y > 0.0 else 0.0`` is max(0.0, y) (y a float: same value, NaN included); a
    # negative zero base gives the same weight as a zero one (0.0 in the end, or 1.0 at e = 0).
    if objective.transform is Transform.POWER:
        e = objective.exponent
        w = [y if (y := float((x if x > 0.0 else 0.0) ** e)) > 0.0 else 0.0 for x in cal]
    elif objective.transform is Transform.IDENTITY:
        w = [y if (y := float(x)) > 0.0 else 0.0 for x in cal]
    else:  # reciprocal rank: 1 / (k + rank by calibrated score)
        ranked = sorted(order, key=lambda j: -cal[j])  # stable: ties keep the relevance order
        rank = [0] * n
        for r, j in enumerate(ranked):
            rank[j] = r + 1
        weight = objective.weight
        w = [max(0.0, weight(cal[i], rank[i])) for i in range(n)]
    for level, factor in objective.level_weights:
        for i, lv in enumerate(levels):
            if lv == level:
                w[i] *= factor

    if objective.document_decay < 1 and documents:  # 5b. diminishing returns per document
        _document_decay(objective.document_decay, w, documents, order)

    if objective.uses_positions:  # 5c. the opening of a text first
        _position_weights(objective, w, _reading_groups(cands, parent if (objective.inherit > 0 or objective.coverage)
                                                        else parents(cands, by_id)))

    if objective.coverage and linked:
        has_kids = [False] * n
        for p in parent:
            if p is not None:
                has_kids[p] = True
        covered = [0.0] * n
        for i in sorted(range(n), key=lambda j: -depth[j]):  # children first
            own = covered[i] if has_kids[i] else w[i]
            covered[i] = own
            p = parent[i]
            if p is not None:
                covered[p] += own
        w = covered

    every = len(active) == n  # every item active (distinct indices)
    top = (max(w) if n else 0.0) if every else max((w[i] for i in active), default=0.0)
    scale = RELEVANCE_SCALE
    if every and top > 0:
        if objective.fill:  # 8. anything that can be taken beats empty space
            return tuple([v if (v := int(round(scale * x / top))) >= 1 else 1 for x in w])
        return tuple([int(round(scale * x / top)) for x in w])
    values = [0] * n
    if top > 0:
        for i in active:
            values[i] = int(round(scale * w[i] / top))
    if objective.fill:
        for i in active:
            if values[i] < 1:
                values[i] = 1
    return tuple(values)
