"""engine/objective.py's internals were rewritten for speed (issue 13): its results
must be bit-identical to the implementation before, kept below verbatim as the
reference (only renamed), on random candidates with every objective option, parent
links (ancestors lists, parent_id chains, cycles, dangling links) and active subsets."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.allocate import to_candidates
from engine.candidates import Candidate
from engine.objective import objective_values, parents
from engine.policy import Calibration, CalibrationGroup, Objective, Transform

RELEVANCE_SCALE = 1_000_000


# --------------------------------------------------------------------------- the reference (before issue 13)


def ref_parents(cands: Sequence[Candidate], by_id: Mapping[str, Candidate]) -> list[int | None]:
    """Each item's nearest parent candidate (input index), ``None`` for roots and for
    items on a cycle of parent links."""
    out: list[int | None] = [None] * len(cands)
    for i, c in enumerate(cands):
        given = c.metadata.get("ancestors")
        if isinstance(given, (list, tuple)) and all(isinstance(a, str) for a in given):
            links = [a for a in given if a != c.source_id and a in by_id]
            out[i] = by_id[links[0]].index if links else None
        elif c.parent_id is not None and c.parent_id != c.source_id and c.parent_id in by_id:
            out[i] = by_id[c.parent_id].index
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


def ref_depths(parent: Sequence[int | None]) -> list[int]:
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


def ref_calibrated(how: Calibration, raw: Sequence[float], groups: Sequence[Sequence[int]],
               active: Sequence[int]) -> list[float]:
    """Step 2: each raw score in [0, 1] within its group (``groups`` partition the
    indices; statistics from the group's active members, else all of them)."""
    out = [0.0] * len(raw)
    is_active = bytearray(len(raw))
    for i in active:
        is_active[i] = 1
    for members in groups:
        base = [i for i in members if is_active[i]]
        everyone = not base  # no active member: the group's statistics come from all of it
        if everyone:
            base = list(members)
        if not base:
            continue
        if how is Calibration.MAX:
            hi = max(raw[i] for i in base)
            for i in members:
                out[i] = min(raw[i] / hi, 1.0) if hi > 0 else 0.0
        elif how is Calibration.MINMAX:
            lo, hi = min(raw[i] for i in base), max(raw[i] for i in base)
            for i in members:
                x = raw[i]
                out[i] = (1.0 if x >= hi else 0.0) if hi == lo else min(max((x - lo) / (hi - lo), 0.0), 1.0)
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


def ref_objective_values(objective: Objective, cands: Sequence[Candidate], active: Sequence[int],
                     order: Sequence[int], by_id: Mapping[str, Candidate]) -> tuple[int, ...]:
    """The value of each candidate, ``RELEVANCE_SCALE`` for the best active one, 0 for
    inactive ones (see the module docstring for the steps). ``order`` is every input
    index by relevance, best first (ties by input order)."""
    n = len(cands)
    raw = [max(0.0, c.relevance_score) for c in cands]
    if objective.calibrate_within is CalibrationGroup.LEVEL:
        by_level: dict[str, list[int]] = {}
        for i, c in enumerate(cands):
            by_level.setdefault(c.level, []).append(i)
        groups: list[list[int]] = [by_level[k] for k in sorted(by_level)]
    else:
        groups = [list(range(n))]
    cal = ref_calibrated(objective.calibrate, raw, groups, active)

    linked = objective.inherit > 0 or objective.coverage
    parent = ref_parents(cands, by_id) if linked else [None] * n
    depth = ref_depths(parent) if linked else [0] * n
    if objective.inherit > 0:
        a = objective.inherit
        for i in sorted(range(n), key=lambda j: depth[j]):  # parents first
            p = parent[i]
            if p is not None:
                cal[i] = (1.0 - a) * cal[i] + a * cal[p]

    if objective.transform is Transform.RECIPROCAL_RANK:
        ranked = sorted(order, key=lambda j: -cal[j])  # stable: ties keep the relevance order
        rank = [0] * n
        for r, j in enumerate(ranked):
            rank[j] = r + 1
    else:
        rank = [1] * n
    weight = objective.weight
    w = [max(0.0, weight(cal[i], rank[i])) for i in range(n)]
    for level, factor in objective.level_weights:
        for i, c in enumerate(cands):
            if c.level == level:
                w[i] *= factor

    if objective.coverage:
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

    top = max((w[i] for i in active), default=0.0)
    values = [0] * n
    if top > 0:
        for i in active:
            values[i] = int(round(RELEVANCE_SCALE * w[i] / top))
    if objective.fill:  # 8. anything that can be taken beats empty space
        for i in active:
            values[i] = max(values[i], 1)
    return tuple(values)


# --------------------------------------------------------------------------- the property

LEVELS = ("DOCUMENT", "PARAGRAPH", "SENTENCE")
SCORES = st.one_of(st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.0, 1e-300, 0.25]),
                   st.floats(-2.0, 5.0, allow_nan=False, allow_infinity=False))


@st.composite
def cases(draw: Any) -> tuple[Objective, tuple[Candidate, ...], list[int], list[int]]:
    n = draw(st.integers(0, 25))
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"source_id": f"c{i}", "content": "x" * draw(st.integers(1, 20)),
                               "relevance_score": draw(SCORES), "level": draw(st.sampled_from(LEVELS))}
        others = [f"c{j}" for j in range(n) if j != i]
        link = draw(st.sampled_from(["none", "none", "parent", "ancestors", "dangling"]))
        if link == "parent" and others:
            row["parent_id"] = draw(st.sampled_from(others))  # may point forward: cycles happen
        elif link == "ancestors" and others:
            row["metadata"] = {"ancestors": draw(st.lists(st.sampled_from(others + ["nowhere"]), min_size=1,
                                                          max_size=3, unique=True))}
        elif link == "dangling":
            row["parent_id"] = "nowhere"
        rows.append(row)
    cands = to_candidates(rows)
    objective = Objective(draw(st.sampled_from(list(Transform))), exponent=draw(st.sampled_from([1.0, 2.0, 6.0, 0.5])),
                          k=draw(st.sampled_from([1, 60])),
                          calibrate=draw(st.sampled_from([c for c in Calibration if c is not Calibration.ZSCORE])),
                          calibrate_within=draw(st.sampled_from(list(CalibrationGroup))),
                          inherit=draw(st.sampled_from([0.0, 0.15, 1.0])), coverage=draw(st.booleans()),
                          level_weights=tuple(sorted(draw(st.dictionaries(st.sampled_from(LEVELS),
                                                                          st.sampled_from([0.0, 0.5, 2.0]))).items())),
                          fill=draw(st.booleans()))
    # Every item active (the common case, with its own fast paths), or a random subset.
    everyone = draw(st.booleans())
    active = list(range(n)) if everyone else sorted(draw(st.sets(st.integers(0, n - 1))) if n else set())
    order = sorted(range(n), key=lambda i: (-cands[i].relevance_score, i))
    return objective, cands, active, order


@settings(max_examples=120, deadline=None)
@given(cases())
def test_objective_values_are_bit_identical_to_the_reference(case: Any) -> None:
    objective, cands, active, order = case
    by_id = {c.source_id: c for c in cands}
    assert parents(cands, by_id) == ref_parents(cands, by_id)
    assert objective_values(objective, cands, active, order, by_id) == \
        ref_objective_values(objective, cands, active, order, by_id)


def test_the_reference_and_the_engine_agree_at_scale_without_links() -> None:
    """The fast paths (no parent links at all) on a large input, every objective shape."""
    import random
    rng = random.Random(13)
    cands = to_candidates([{"source_id": f"s{i}", "content": "x", "relevance_score": rng.random(),
                            "level": rng.choice(LEVELS)} for i in range(2000)])
    by_id = {c.source_id: c for c in cands}
    order = sorted(range(len(cands)), key=lambda i: (-cands[i].relevance_score, i))
    some = [i for i in range(len(cands)) if rng.random() < 0.8]
    one_level = to_candidates([{"source_id": c.source_id, "content": "x", "relevance_score": c.relevance_score}
                               for c in cands])
    for pool in (cands, one_level):
        by_id = {c.source_id: c for c in pool}
        for active in (some, list(range(len(pool)))):
            for transform in Transform:
                for coverage, within, fill in ((False, CalibrationGroup.LEVEL, True), (True, CalibrationGroup.LEVEL, True),
                                               (False, CalibrationGroup.ALL, False)):
                    obj = Objective(transform, exponent=6.0, calibrate_within=within, inherit=0.15,
                                    coverage=coverage, fill=fill)
                    assert objective_values(obj, pool, active, order, by_id) == \
                        ref_objective_values(obj, pool, active, order, by_id)
