"""OPTIMAL for the budget plus ``hierarchy.exclusive``: an exact tree knapsack.

When the only rules are the budget and the hierarchy's "never a node with its ancestor
or descendant" (no pins, quotas, caps, prefer-parent or near-duplicate conflicts), the
problem is a knapsack over the *antichains* of a forest: the classic tree DP solves it
exactly. Each node's option list is the undominated ``(weight, profit)`` pairs of its
subtree — the merged lists of its children (max-plus convolution, capacity-capped), or
the node alone; the roots then form a multiple-choice knapsack (one option per root),
solved by a dense DP over the capacity. A RAG-sized request (about 50 paragraphs and
sentences: ten roots) takes a fraction of a millisecond.

The forest is rebuilt from the Problem's own conflict pairs, not from metadata: in the
ancestor graph of a forest an ancestor's neighbourhood contains its descendant's, so
each item's parent is its nearest partner of higher degree; the rebuilt forest is used
only if its ancestor pairs are exactly the Problem's pairs (otherwise ``None``: CP-SAT).

Profits are CP-SAT's own objective ``value * T - weight`` (:func:`objective_multiplier`),
so the optimum and its tie-break are the ones the CP-SAT model would prove.
"""

from __future__ import annotations

import time
from operator import itemgetter
from typing import Any

import numpy as np

from ..compile import objective_multiplier
from ..policy import BudgetStrategy
from ..problem import Problem
from ..reasons import Reason, ReasonCode
from ..rules import RuleKind
from . import Selection

#: Largest problem (active items) handled here; larger ones go to CP-SAT.
MAX_ITEMS = 2_000
#: Give up (None: CP-SAT) when merging two subtrees would form more pairs than this.
MAX_PAIRS = 50_000
#: ... or when the roots' DP (roots x (capacity + 1)) would have more cells than this.
MAX_CELLS = 20_000_000


def applies(problem: Problem) -> bool:
    """Budget plus hierarchy conflicts only, small enough for the DP."""
    return (not problem.constraints and not problem.pins and bool(problem.chains)
            and len(problem.active) <= MAX_ITEMS
            and all(ch.kind is RuleKind.HIERARCHY and len(ch.members) == 2 for ch in problem.chains))


def forest(active: tuple[int, ...], pairs: list[tuple[int, int]]) -> dict[int, int | None] | None:
    """Each active item's parent in a forest whose ancestor pairs are exactly ``pairs``,
    or None when no forest has them."""
    partners: dict[int, set[int]] = {i: set() for i in active}
    for a, b in pairs:
        partners[a].add(b)
        partners[b].add(a)
    # Higher degree first (an ancestor is adjacent to all its descendant's partners).
    rank = {i: k for k, i in enumerate(sorted(active, key=lambda i: (-len(partners[i]), i)))}
    parent: dict[int, int | None] = {}
    for i in active:
        above = [j for j in partners[i] if rank[j] < rank[i]]
        parent[i] = max(above, key=rank.__getitem__) if above else None
    got: set[tuple[int, int]] = set()
    for i in active:
        j = parent[i]
        depth = 0
        while j is not None:
            got.add((min(i, j), max(i, j)))
            j = parent[j]
            depth += 1
            if depth > len(active):
                return None  # not a forest (cannot happen with ranks, kept as a guard)
    want = {(min(a, b), max(a, b)) for a, b in pairs}
    return parent if got == want else None


Option = tuple[int, int, tuple[int, ...]]  # (weight, profit, the items)
_WEIGHT, _PROFIT = itemgetter(0), itemgetter(1)


def _undominated(opts: list[Option]) -> list[Option]:
    """The options no other option dominates (weighs no more, earns at least as much),
    weight ascending."""
    # By weight, then profit descending (two stable sorts: the order of the key
    # ``(weight, -profit)``, equal options in their given order).
    opts.sort(key=_PROFIT, reverse=True)
    opts.sort(key=_WEIGHT)
    out: list[Option] = []
    best = None
    for o in opts:
        if best is None or o[1] > best:
            out.append(o)
            best = o[1]
    return out


def roots_dp(root_opts: list[list[Option]], cap: int) -> tuple[list[int], int]:
    """The multiple-choice knapsack over the roots (one option each; option 0 of each is
    its "nothing", ``(0, 0, ())``): the items of the choice the dense DP over every
    capacity 0..cap picks (the first maximum of each root's options at the capacity the
    backtrack reaches) and its profit, ``best[cap]``."""
    heaviest = [max(o[0] for o in opts) for opts in root_opts]
    after = [0] * (len(root_opts) + 1)  # the heaviest options of the roots after this one
    for k in range(len(root_opts) - 1, -1, -1):
        after[k] = min(cap, after[k + 1] + heaviest[k])
    best = np.zeros(cap + 1, dtype=np.int64)
    picks: list[tuple[np.ndarray, int, int, list[Option]]] = []
    grid = np.arange(cap + 1)
    # best[x - w] read through a copy padded in front with a value far below any profit
    # (every real one is >= 0 and options earn < 2**61), so x < w is never the argmax.
    low = np.int64(-(2 ** 62))
    pad = np.empty(2 * (cap + 1), dtype=np.int64)
    pad[:cap + 1] = low
    # Only a band of capacities is computed (the same cells as over all of them): the
    # backtrack from ``cap`` reaches root k at ``x >= cap - after[k + 1]``; at or above
    # ``top`` (the heaviest options so far, summed) every choice so far fits, so best is
    # flat there and the pick is the one at ``top``.
    top = 0
    for k, opts in enumerate(root_opts):
        hi = min(cap, top + heaviest[k])
        if hi > top:
            best[top + 1:hi + 1] = best[top]
        lo = min(hi, max(0, cap - after[k + 1]))
        wp = np.array([o[:2] for o in opts], dtype=np.int64)
        pad[cap + 1:] = best
        cand = pad[(cap + 1 - wp[:, :1]) + grid[lo:hi + 1]]
        cand += wp[:, 1:]
        pick = cand.argmax(axis=0)
        best[lo:hi + 1] = cand[pick, grid[:hi + 1 - lo]]
        picks.append((pick, lo, hi, opts))
        top = hi
    if top < cap:
        best[top + 1:] = best[top]
    chosen: list[int] = []
    x = cap
    for pick, lo, hi, opts in reversed(picks):
        k = int(pick[min(x, hi) - lo])
        if k > 0:
            chosen.extend(opts[k][2])
            x -= opts[k][0]
    return chosen, int(best[cap])


def solve(problem: Problem) -> Selection | None:
    """The proven optimum, or None when the structure or its size does not fit the DP."""
    t0 = time.perf_counter()
    active = problem.active
    pairs = [(ch.members[0], ch.members[1]) for ch in problem.chains]
    parent = forest(active, pairs)
    if parent is None:
        return None
    cap = problem.capacity
    T = objective_multiplier(problem)
    children: dict[int, list[int]] = {i: [] for i in active}
    roots: list[int] = []
    for i in active:
        p = parent[i]
        (roots if p is None else children[p]).append(i)
    weights, values = problem.weights, problem.values
    # Below the roots: each subtree's undominated options, children merged pairwise.
    options: dict[int, list[Option]] = {}
    stack: list[tuple[int, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        u, done = stack.pop()
        if not done:
            stack.append((u, True))
            stack.extend((ch, False) for ch in reversed(children[u]))
            continue
        wu, cu = weights[u], values[u] * T - weights[u]
        if not children[u]:  # a leaf: nothing, or itself (what _undominated keeps of the two)
            if cu > 0 and wu <= cap:
                options[u] = [(0, 0, ()), (wu, cu, (u,))] if wu > 0 else [(0, cu, (u,))]
            else:
                options[u] = [(0, 0, ())]
            continue
        cur: list[Option] = [(0, 0, ())]
        for ch in children[u]:
            sub = options.pop(ch)
            if len(cur) * len(sub) > MAX_PAIRS:
                return None
            cur = _undominated([(wa + wb, pa + pb, ta + tb) for wa, pa, ta in cur
                                for wb, pb, tb in sub if wa + wb <= cap])
        if cu > 0 and wu <= cap:  # last: on an exact tie the descendants are kept
            cur = _undominated([*cur, (wu, cu, (u,))])
        options[u] = cur
    # The roots: a multiple-choice knapsack (one option per root) by a dense DP over the
    # capacity; best[x] is the most profit within weight x.
    if len(roots) * (cap + 1) > MAX_CELLS:
        return None
    # Row 0 of each root is its "nothing" (best itself): the first maximum, so an option
    # is picked only where it earns strictly more than leaving the root out.
    root_opts = [opts for r in roots
                 if len(opts := [(0, 0, ())] + [o for o in options[r] if o[0] > 0 or o[1] > 0]) > 1]
    chosen, top_profit = roots_dp(root_opts, cap)
    picked = frozenset(chosen)
    obj = sum(values[i] for i in picked)
    if top_profit != sum(values[i] * T - weights[i] for i in picked):
        raise AssertionError("treeknap: the rebuilt choice does not earn the DP's optimum")
    stats: dict[str, Any] = {
        "solver": "tree-knapsack",
        "wall_time_s": time.perf_counter() - t0,
        "tree_roots": len(roots),
        "largest_subtree_options": max((len(o) for o in options.values()), default=0),
        "tie_break": T > 1,
        "proof": {"method": "tree knapsack DP over the exclusive hierarchy (every undominated "
                            "weight/profit option of every subtree, one option per root)",
                  "proven": True, "bound": obj},
    }
    reasons = dict.fromkeys(picked, Reason(ReasonCode.SELECTED, "part of the optimal selection"))
    return Selection(BudgetStrategy.OPTIMAL, picked, reasons, "optimal", obj, obj, stats=stats)
