"""The LP relaxation of a rule-bearing Problem: a proven bound and a rounded answer.

CP-SAT on one worker spends its deterministic budget at the root of the large
all-rules models (n = 10,000: the hint is all it has at the limit, and its own bound is
5-6 % above it; bench/README.md). The LP relaxation, solved once by OR-Tools' GLOP
(single-threaded primal/dual simplex: deterministic), gives both halves of a better answer:

* **a bound**: for any multipliers ``y >= 0`` of the rows, ``sum(y_u * upper) -
  sum(y_l * lower) + sum_i max(0, v_i - reduced_i)`` bounds every 0/1 answer (Lagrangian
  duality; pinned items count their reduced value whatever its sign). It is evaluated from
  GLOP's duals in floating point with a margin far above the rounding error, so it is a
  bound whatever the LP solver returned (a wrong dual only weakens it);
* **an answer**: the items the LP takes whole (plus the pins), then, in order of their LP
  value and value per token, every item that still fits every upper rule and conflicts
  with nothing chosen. It is kept only when it meets every minimum; it is then handed to
  CP-SAT as its hint and kept if CP-SAT finds nothing better.

Hierarchy and near-duplicate pairs are given to the LP as maximal cliques (one
root-to-leaf path instead of its pairs): the same 0/1 answers, and a relaxation that is
much tighter (the pairs let the LP take half of a document, a section and a paragraph at
once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..problem import Problem

#: Relative margin added to the floating-point bound (its rounding error is ~1e-12).
BOUND_MARGIN = 1e-7
#: GLOP's settings: the dual simplex without presolve solved the all-rules LP (n = 10,000)
#: in about a third of the default's time, to the same optimum (bench/README.md).
GLOP_PARAMETERS = "use_dual_simplex: true use_preprocessing: false"
#: An LP value this close to 1 counts as "taken whole".
WHOLE = 1 - 1e-6


#: Below this many active items CP-SAT proves the rule-bearing models on its own (n = 1,000:
#: ~0.2 s); the LP is for the large ones, where its search stalls at the root.
LP_MIN_ITEMS = 2_000
#: CPU seconds the LP path (build, GLOP, rounding, the decomposition and its master) takes
#: per active item, measured at n = 10,000 on a loaded 2-core machine (0.7-0.9 s), and the
#: share of the time limit it may use (it replaces CP-SAT's search on these models).
LP_S_PER_ITEM = 80e-6
LP_SHARE = 1.0


def applies(problem: Problem, time_limit_s: float) -> bool:
    """Whether the LP runs before CP-SAT: a large model (``LP_MIN_ITEMS``) whose LP fits
    in ``LP_SHARE`` of the time limit at ``LP_S_PER_ITEM``. A function of the problem's
    size and the limit alone, so a rerun makes the same choice on any machine."""
    n = len(problem.active)
    return n >= LP_MIN_ITEMS and n * LP_S_PER_ITEM <= LP_SHARE * time_limit_s


def expected_s(problem: Problem) -> float:
    """The LP's expected time (``LP_S_PER_ITEM`` per active item)."""
    return len(problem.active) * LP_S_PER_ITEM


@dataclass(frozen=True, slots=True)
class LpAnswer:
    """The relaxation's proven ``bound`` (value units), its optimum as solved, and the
    rounded ``chosen`` set with its ``objective`` (``None``: a minimum was left unmet)."""

    bound: int
    lp_objective: float
    chosen: frozenset[int] | None
    objective: int
    fractional: int
    #: Items the LP takes any part of: with ``chosen``, the neighbourhood CP-SAT searches.
    support: frozenset[int] = frozenset()
    #: What the decomposition gave (``None``: it did not run): its bound, the rounds of
    #: column generation, the columns, the master's LP and integer values, and whether
    #: ``chosen`` is the master's answer.
    decomposition: dict[str, Any] | None = None

    def neighbourhood(self) -> frozenset[int]:
        """The items left free in CP-SAT's search of the LP's neighbourhood (every other
        item is fixed out): the rounded answer and every item the LP takes a part of."""
        return (self.chosen or frozenset()) | self.support


def cliques(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """A deterministic cover of the conflict graph's edges by cliques: each uncovered
    edge (in sorted order) grown with every common neighbour that conflicts with the
    whole clique. For a hierarchy (ancestor/descendant pairs) these are its paths."""
    adj: dict[int, set[int]] = {}
    edges = sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b})
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    span = max(adj) + 1 if adj else 1  # the largest vertex: a pair is one int key
    covered: set[int] = set()
    out: list[list[int]] = []
    for a, b in edges:
        if a * span + b in covered:
            continue
        clique = [a, b]
        for c in sorted(adj[a] & adj[b]):
            near = adj[c]
            if all(m in near for m in clique):
                clique.append(c)
        clique.sort()
        covered.update(x * span + y for k, x in enumerate(clique) for y in clique[k + 1:])
        out.append(clique)
    return out


def _conflict_sets(problem: Problem) -> list[list[int]]:
    pairs = [(c.members[0], c.members[1]) for c in problem.chains if len(c.members) == 2]
    groups = [list(c.members) for c in problem.chains if len(c.members) > 2]
    return cliques(pairs) + groups


def solve(problem: Problem, wall_s: float | None = None, *, hint: frozenset[int] | None = None,
          master_params: dict[str, Any] | None = None) -> LpAnswer | None:
    """The relaxation's bound and rounded answer, or ``None`` when GLOP does not report
    an optimal LP (then nothing is claimed). ``wall_s``: GLOP's wall-clock safety net
    (what is left of the call's time; a cut LP is ``None``, and the caller falls back).
    ``master_params``: CP-SAT's parameters for the decomposition's master (see
    :func:`_decomposition`; ``None``: the LP alone); ``hint``: a feasible answer (the
    heuristics') whose parts become columns too."""
    import numpy as np

    t_start = time.perf_counter()
    from ortools.linear_solver.python import model_builder_helper as mbh

    active = problem.active
    v = problem.values
    pinned = problem.pinned
    col = {i: k for k, i in enumerate(active)}
    model = mbh.ModelBuilderHelper()
    lower = np.array([1.0 if i in pinned else 0.0 for i in active])
    add_vars: Any = model.add_var_array_with_bounds  # its stub misspells the array types
    add_vars(lower, np.ones(len(active)), np.zeros(len(active), dtype=bool), "x")
    add_term = model.add_term_to_constraint
    inf = float("inf")

    def row(lo: float, hi: float, members: Sequence[int], coefs: Sequence[int] | None) -> None:
        ct = model.add_linear_constraint()
        model.set_constraint_lower_bound(ct, lo)
        model.set_constraint_upper_bound(ct, hi)
        if coefs is None:
            for m in members:
                add_term(ct, col[m], 1.0)
        else:
            for m, a in zip(members, coefs):
                add_term(ct, col[m], float(a))

    for r in problem.linear_rules:
        row(-inf if r.lower is None else float(r.lower), inf if r.upper is None else float(r.upper),
            r.members, r.coefs)
    sets = _conflict_sets(problem)
    for s in sets:
        row(-inf, 1.0, s, None)
    model.set_objective_coefficients(list(range(len(active))), [float(v[i]) for i in active])
    model.set_maximize(True)
    solver = mbh.ModelSolverHelper("glop")
    solver.set_solver_specific_parameters(GLOP_PARAMETERS)
    if wall_s is not None:
        solver.set_time_limit_in_seconds(max(0.001, wall_s))
    solver.solve(model)
    if solver.status() != mbh.SolveStatus.OPTIMAL:
        return None
    xs = dict(zip(active, solver.variable_values().tolist()))
    duals = solver.dual_values().tolist()
    n_rules = len(problem.linear_rules)
    bound = _safe_bound(problem, sets, duals[:n_rules], duals[n_rules:])
    frac = sum(1 for val in xs.values() if 1e-6 < val < WHOLE)
    support = frozenset(i for i, val in xs.items() if val > 1e-6)
    lp_value = float(solver.objective_value())
    chosen: frozenset[int] | None = None
    info = None
    if master_params is not None:
        # The decomposition first; the rounding only where it gives no answer (its
        # columns and the hint's stand in for the rounded answer's).
        dw = _decomposition(problem, sets, duals[:n_rules], duals[n_rules:],
                            [] if hint is None else [hint], master_params,
                            None if wall_s is None else t_start + wall_s)
        if dw is not None:
            info, dw_bound, chosen = dw
            bound = min(bound, dw_bound)
            info["chosen"] = chosen is not None
    if chosen is None:
        chosen = _round(problem, sets, xs)
    objective = 0 if chosen is None else sum(v[i] for i in chosen)
    return LpAnswer(bound, lp_value, chosen, objective, frac, support, info)


def _floor_bound(total: float) -> int:
    """A float bound as an integer one: values are integers, so the floor of the bound
    plus its margin (``BOUND_MARGIN``, far above the float error) bounds them too."""
    return math.floor(total + BOUND_MARGIN * (abs(total) + 1.0))


def _safe_bound(problem: Problem, sets: list[list[int]], rule_duals: list[float], set_duals: list[float]) -> int:
    """The Lagrangian bound of the duals (see the module docstring), floored after the margin."""
    v = problem.values
    reduced = {i: float(v[i]) for i in problem.active}
    total = 0.0
    for r, d in zip(problem.linear_rules, rule_duals):
        # A maximisation's dual is >= 0 on a binding upper side and <= 0 on a lower side;
        # the other sign (or a side the rule lacks) contributes nothing.
        if d > 0 and r.upper is not None:
            y, rhs = d, r.upper
        elif d < 0 and r.lower is not None:
            y, rhs = d, r.lower
        else:
            continue
        total += y * rhs
        coefs: Sequence[int] = r.coefs if r.coefs is not None else [1] * len(r.members)
        for m, a in zip(r.members, coefs):
            reduced[m] -= y * a
    for s, d in zip(sets, set_duals):
        if d > 0:
            total += d
            for m in s:
                reduced[m] -= d
    pinned = problem.pinned
    total += math.fsum(r if i in pinned else max(0.0, r) for i, r in reduced.items())
    return _floor_bound(total)


def _round(problem: Problem, sets: list[list[int]], xs: dict[int, float]) -> frozenset[int] | None:
    """Whole LP items and pins, filled greedily; ``None`` if a minimum is then unmet or a
    pin cannot be kept (exact integer checks: the answer never relies on the LP's floats)."""
    v, w = problem.values, problem.weights
    rules = problem.linear_rules
    capped = [k for k, r in enumerate(rules) if r.upper is not None]
    upper = [rules[k].upper or 0 for k in capped]
    of: dict[int, list[tuple[int, int]]] = {}
    for slot, k in enumerate(capped):
        r = rules[k]
        if r.coefs is None:
            for m in r.members:
                of.setdefault(m, []).append((slot, 1))
        else:
            for m, a in zip(r.members, r.coefs):
                of.setdefault(m, []).append((slot, a))
    in_sets: dict[int, list[int]] = {}
    for k, s in enumerate(sets):
        for m in s:
            in_sets.setdefault(m, []).append(k)
    load = [0] * len(capped)
    used = [False] * len(sets)
    chosen: set[int] = set()
    no_rules: list[tuple[int, int]] = []
    no_sets: list[int] = []

    def fits(i: int) -> bool:
        for k in in_sets.get(i, no_sets):
            if used[k]:
                return False
        for slot, a in of.get(i, no_rules):
            if load[slot] + a > upper[slot]:
                return False
        return True

    def take(i: int) -> None:
        chosen.add(i)
        for k in in_sets.get(i, no_sets):
            used[k] = True
        for slot, a in of.get(i, no_rules):
            load[slot] += a

    for i in sorted(problem.pinned):
        if not fits(i):
            return None
        take(i)
    whole = [i for i in problem.active if xs[i] >= WHOLE and i not in chosen]
    rest = sorted((i for i in problem.active if i not in chosen and xs[i] < WHOLE and v[i] > 0),
                  key=lambda i: (-xs[i], -v[i] / max(1, w[i]), i))
    for i in whole + rest:
        if fits(i):
            take(i)
    for r in rules:
        if r.lower is not None:
            coefs = r.coefs if r.coefs is not None else [1] * len(r.members)
            if sum(a for m, a in zip(r.members, coefs) if m in chosen) < r.lower:
                return None
    return frozenset(chosen)


# --------------------------------------------------------------------------- decomposition
#
# The LP's gap on the all-rules models sits in the groups (a source's documents, sections,
# paragraphs and sentences): its cap on tokens together with the hierarchy and the
# prefer-parent caps. Dualizing only the rules that span groups (the budget, the level
# quotas) leaves one small problem per group, which a tree DP solves exactly: a
# Lagrangian bound at least as tight as the LP's at the same multipliers (Geoffrion),
# and each group's best answers are the columns of a Dantzig-Wolfe master whose integer
# solution (CP-SAT over a few thousand columns) keeps every rule by construction.

#: Largest group (active items) the decomposition builds; a rule that would join groups
#: beyond it is dualized instead.
MAX_COMPONENT = 400
#: ... and never above a quarter of the active items, unless that is below this.
MIN_LARGEST = 16
#: A subtree merge forming more option pairs than this gives the group up to the LP's
#: own (dual) contribution.
MAX_MERGE_PAIRS = 20_000
#: Largest token cap of a group solved by the dense DP over its roots.
MAX_CAP = 100_000


@dataclass(slots=True)
class Component:
    """One group of the decomposition: its ``items``, its ``rules`` (indices into
    ``linear_rules``: every rule whose members are all in the group), its conflict
    ``sets`` (indices into the LP's conflict sets) and, when the tree DP solves it exactly
    (``exact``), the forest (``parent``), the rule kept as its knapsack (``resource``) and
    the count caps over one node's children kept in the merge (``sibling``)."""

    items: tuple[int, ...]
    rules: tuple[int, ...]
    sets: tuple[int, ...]
    exact: bool = False
    parent: dict[int, int | None] | None = None
    resource: int | None = None
    sibling: dict[int, int] | None = None  # node -> rule index
    #: The local rules the DP does not keep (dualized with the LP's multipliers).
    loose: tuple[int, ...] = ()
    #: The DP's static plan: the knapsack cap, each item's weight in it, the items in
    #: post-order with their children, the roots, each capped node's (tracked, cap).
    cap: int = 0
    weight: dict[int, int] = field(default_factory=dict)
    post: tuple[tuple[int, tuple[int, ...]], ...] = ()
    roots: tuple[int, ...] = ()
    caps: dict[int, tuple[frozenset[int], int]] = field(default_factory=dict)
    #: The group's pinned items (the DP takes them first: a profit above all others).
    pins: tuple[int, ...] = ()


@dataclass(slots=True)
class Decomposition:
    components: list[Component]
    #: Rules dualized for every group (spanning groups, or the budget).
    spanning: tuple[int, ...]
    component_of: dict[int, int]


def decompose(problem: Problem, sets: list[list[int]]) -> Decomposition:
    """The groups: conflicts (chains) always join items; every other rule but the budget
    (those joining the fewest conflict groups first, then the smallest) joins its members'
    groups if the result keeps within ``MAX_COMPONENT`` items and a quarter of them;
    otherwise it spans groups and is dualized. Deterministic (counts, sizes, rule order)."""
    from .treeknap import forest

    active = problem.active
    up = {i: i for i in active}
    size = dict.fromkeys(active, 1)

    def find(i: int) -> int:
        root = i
        while up[root] != root:
            root = up[root]
        while up[i] != root:
            up[i], i = root, up[i]
        return root

    def union(members: Iterable[int]) -> None:
        roots = sorted({find(m) for m in members})
        if len(roots) < 2:
            return
        top = roots[0]
        for r in roots[1:]:
            up[r] = top
            size[top] += size[r]

    for ch in problem.chains:
        union(ch.members)
    rules = problem.linear_rules
    spanning: list[int] = [0]  # the budget
    local: list[int] = []
    # Rules that join fewest of the conflict groups first (a source's caps before a level
    # quota over every source), then the smaller; no group above a quarter of the items.
    largest = min(MAX_COMPONENT, max(MIN_LARGEST, len(active) // 4))
    # A rule over more items than a group may hold spans groups whatever the order.
    small = [k for k in range(1, len(rules)) if 0 < len(rules[k].members) <= largest]
    spanning.extend(k for k in range(1, len(rules)) if not 0 < len(rules[k].members) <= largest)
    touches = {k: len({find(m) for m in rules[k].members}) for k in small}
    for k in sorted(small, key=lambda k: (touches[k], len(rules[k].members), k)):
        roots = {find(m) for m in rules[k].members}
        if sum(size[r] for r in roots) <= largest:
            union(rules[k].members)
            local.append(k)
        else:
            spanning.append(k)
    by_root: dict[int, list[int]] = {}
    for i in active:
        by_root.setdefault(find(i), []).append(i)
    index = {root: c for c, root in enumerate(sorted(by_root, key=lambda r: by_root[r][0]))}
    comp_rules: list[list[int]] = [[] for _ in index]
    comp_sets: list[list[int]] = [[] for _ in index]
    for k in sorted(local):
        comp_rules[index[find(rules[k].members[0])]].append(k)
    for s, members in enumerate(sets):
        comp_sets[index[find(members[0])]].append(s)
    comps: list[Component] = []
    component_of: dict[int, int] = {}
    pinned = problem.pinned
    chain_pairs: dict[int, list[tuple[int, int]]] = {}
    pairs_only: dict[int, bool] = {}
    for ch in problem.chains:
        c = index[find(ch.members[0])]
        if len(ch.members) == 2:
            chain_pairs.setdefault(c, []).append((ch.members[0], ch.members[1]))
        else:
            pairs_only[c] = False
    for root in sorted(by_root, key=lambda r: by_root[r][0]):
        c = index[root]
        items = tuple(by_root[root])
        for i in items:
            component_of[i] = c
        comp = Component(items, tuple(comp_rules[c]), tuple(comp_sets[c]))
        comps.append(comp)
        comp.pins = tuple(i for i in items if i in pinned)
        if len(items) > MAX_COMPONENT or not pairs_only.get(c, True):
            continue
        parent = forest(items, chain_pairs.get(c, []))
        if parent is None:
            continue
        _plan(problem, comp, parent)
    return Decomposition(comps, tuple(sorted(spanning)), component_of)


def _plan(problem: Problem, comp: Component, parent: dict[int, int | None]) -> None:
    """Which of the group's rules the tree DP keeps: one upper-only rule with non-negative
    coefficients as its knapsack (token caps first), and upper-only count caps whose
    members are children of one node (one per node). The rest are ``loose``."""
    rules = problem.linear_rules
    sibling: dict[int, int] = {}
    resource: int | None = None
    loose: list[int] = []
    for k in comp.rules:
        r = rules[k]
        if r.lower is not None or r.upper is None:
            loose.append(k)
            continue
        if r.coefs is None:
            ps = {parent[m] for m in r.members}
            if len(ps) == 1:
                p = next(iter(ps))
                if p is not None and p not in sibling:
                    sibling[p] = k
                    continue
        if (resource is None or (rules[resource].coefs is None and r.coefs is not None)) \
                and r.upper <= MAX_CAP and all(a >= 0 for a in (r.coefs or ())):
            if resource is not None:
                loose.append(resource)
            resource = k
            continue
        loose.append(k)
    comp.exact = True
    comp.parent = parent
    comp.resource = resource
    comp.sibling = sibling
    comp.loose = tuple(sorted(loose))
    if resource is not None:
        r = rules[resource]
        comp.cap = r.upper or 0
        comp.weight = dict(zip(r.members, r.coefs if r.coefs is not None else [1] * len(r.members)))
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for i in comp.items:
        p = parent[i]
        if p is None:
            roots.append(i)
        else:
            children.setdefault(p, []).append(i)
    order: list[int] = []
    stack = list(reversed(roots))
    while stack:  # pre-order; reversed it is a post-order
        u = stack.pop()
        order.append(u)
        stack.extend(children.get(u, ()))
    comp.post = tuple((u, tuple(children.get(u, ()))) for u in reversed(order))
    comp.roots = tuple(roots)
    comp.caps = {u: (frozenset(rules[k].members), rules[k].upper or 0) for u, k in sibling.items()}


class _TooLarge(Exception):
    """A subtree merge beyond ``MAX_MERGE_PAIRS``: the group keeps the LP's contribution."""


_Opt = tuple[float, float, Any]  # (weight, profit, the items: None, an item, or a pair of these)
_EMPTY: list[_Opt] = [(0, 0.0, None)]


def _pareto(opts: list[_Opt]) -> list[_Opt]:
    """The options no other dominates (weighs no more and earns at least as much)."""
    opts.sort(key=lambda o: (o[0], -o[1]))
    out: list[_Opt] = []
    best = -math.inf
    for o in opts:
        if o[1] > best:
            out.append(o)
            best = o[1]
    return out


def _merge(a: list[_Opt], b: list[_Opt], cap: float) -> list[_Opt]:
    if len(b) == 1 and b[0][2] is None:
        return a
    if len(a) == 1 and a[0][2] is None:
        return b
    if len(a) * len(b) > MAX_MERGE_PAIRS:
        raise _TooLarge
    return _pareto([(wa + wb, pa + pb, (ta, tb)) for wa, pa, ta in a for wb, pb, tb in b if wa + wb <= cap])


def _items_of(tag: Any, out: list[int]) -> None:
    stack = [tag]
    while stack:
        t = stack.pop()
        if t is None:
            continue
        if isinstance(t, int):
            out.append(t)
        else:
            stack.extend(t)


def _tree_best(comp: Component, red: Sequence[float]) -> tuple[float, list[int]]:
    """The group's most reduced profit over the sets that keep its forest (one item per
    root-to-leaf path), its sibling caps and its knapsack; and that set."""
    cap, wt, caps = comp.cap, comp.weight, comp.caps
    below: dict[int, list[_Opt]] = {}
    single: dict[int, _Opt | None] = {}
    full: dict[int, list[_Opt]] = {}
    for u, kids in comp.post:
        ru = red[u]
        if ru > 0:
            w = wt.get(u, 0)
            s: _Opt | None = (w, ru, u) if w <= cap else None
        else:
            s = None
        single[u] = s
        if not kids:
            below[u] = _EMPTY
        elif u in caps:
            tracked, k = caps[u]
            states: list[list[_Opt]] = [_EMPTY] + [[] for _ in range(k)]
            for c in kids:
                sc = single[c]
                if sc is not None and c in tracked:
                    one = [sc]
                    states = [_pareto(_merge(st, below[c], cap) + (_merge(states[j - 1], one, cap) if j else []))
                              if st or (j and states[j - 1]) else []
                              for j, st in enumerate(states)]
                else:
                    sub = below[c] if c in tracked else full[c]
                    if len(sub) > 1:
                        states = [_merge(st, sub, cap) if st else [] for st in states]
            below[u] = _pareto([o for st in states for o in st]) if len(states) > 1 else states[0]
        else:
            cur = _EMPTY
            for c in kids:
                cur = _merge(cur, full[c], cap)
            below[u] = cur
        full[u] = below[u] if s is None else _pareto([*below[u], s])
    # The roots: their options merged the same way (a multiple-choice knapsack whose
    # undominated options stay few: the profits are the reduced ones, most not positive).
    cur = _EMPTY
    for r in comp.roots:
        cur = _merge(cur, full[r], cap)
    top = max(cur, key=lambda o: o[1])
    chosen: list[int] = []
    _items_of(top[2], chosen)
    return top[1], sorted(chosen)


def _pinned_best(comp: Component, red: list[float]) -> tuple[float, list[int] | None]:
    """:func:`_tree_best` over the sets that hold every pin of the group: the pins'
    profits are raised above the whole group's (then taken back); ``None`` when the best
    set misses a pin (no set of the DP's rules holds them all)."""
    if not comp.pins:
        return _tree_best(comp, red)
    big = 1.0 + 2.0 * math.fsum(abs(red[i]) for i in comp.items)
    saved = [red[i] for i in comp.pins]
    for i in comp.pins:
        red[i] += big
    try:
        value, chosen = _tree_best(comp, red)
    finally:
        for i, r in zip(comp.pins, saved):
            red[i] = r
    if not set(comp.pins) <= set(chosen):
        return 0.0, None
    return math.fsum(red[i] for i in chosen), chosen


def _effective(rule: Any, y: float) -> tuple[float, int] | None:
    """``(y, rhs)`` when multiplier ``y`` prices a side the rule has (>= 0 on an upper
    bound, <= 0 on a lower one), else ``None`` (it contributes nothing)."""
    if y > 0 and rule.upper is not None:
        return y, rule.upper
    if y < 0 and rule.lower is not None:
        return y, rule.lower
    return None


@dataclass(slots=True)
class Lagrangian:
    """The bound of one set of multipliers and each exact group's best set under them."""

    bound: float
    best: dict[int, list[int]]  # component index -> its DP set


def lagrangian(problem: Problem, dec: Decomposition, sets: list[list[int]],
               rule_y: Sequence[float], set_y: Sequence[float]) -> Lagrangian:
    """``sum(y * rhs)`` over the dualized rows plus each group's most reduced profit: the
    tree DP's for an exact group, the LP's own (every reduced profit above 0, pins whatever
    their sign) for the others. A bound for any multipliers of the right signs."""
    rules = problem.linear_rules
    v = problem.values
    red = [0.0] * len(problem.candidates)
    for i in problem.active:
        red[i] = float(v[i])
    const = 0.0

    def dualize(k: int) -> None:
        nonlocal const
        r = rules[k]
        e = _effective(r, rule_y[k])
        if e is None:
            return
        y, rhs = e
        const += y * rhs
        if r.coefs is None:
            for m in r.members:
                red[m] -= y
        else:
            for m, a in zip(r.members, r.coefs):
                red[m] -= y * a

    for k in dec.spanning:
        dualize(k)
    for comp in dec.components:
        if comp.exact:
            for k in comp.loose:
                dualize(k)
            continue
        for k in comp.rules:
            dualize(k)
        for s in comp.sets:
            d = set_y[s]
            if d > 0:
                const += d
                for m in sets[s]:
                    red[m] -= d
    parts = [const]
    best: dict[int, list[int]] = {}
    pinned = problem.pinned
    for c, comp in enumerate(dec.components):
        if comp.exact:
            try:
                value, chosen = _pinned_best(comp, red)
            except _TooLarge:
                chosen = None
            if chosen is None:
                # Too large, or its pins do not fit the DP's rules: from now on the group
                # counts the LP's share (its rules must then be dualized: start again).
                comp.exact = False
                return lagrangian(problem, dec, sets, rule_y, set_y)
            parts.append(value)
            best[c] = chosen
        else:
            parts.append(math.fsum(red[i] if i in pinned else max(0.0, red[i]) for i in comp.items))
    return Lagrangian(math.fsum(parts), best)


def _locally_feasible(problem: Problem, comp: Component, col: frozenset[int]) -> bool:
    rules = problem.linear_rules
    pinned = problem.pinned
    return all(i in col for i in comp.items if i in pinned) and all(rules[k].holds(col) for k in comp.rules)


def _repaired(problem: Problem, comp: Component, col: frozenset[int]) -> frozenset[int] | None:
    """``col`` less, for each upper rule of the group it breaks, that rule's unpinned
    members of least value (then highest index) until it holds; ``None`` if it still
    breaks a rule."""
    rules = problem.linear_rules
    v, pinned = problem.values, problem.pinned
    kept = set(col)
    for k in comp.rules:
        r = rules[k]
        if r.upper is None:
            continue
        coefs = r.coefs if r.coefs is not None else [1] * len(r.members)
        over = sum(a for m, a in zip(r.members, coefs) if m in kept) - r.upper
        if over <= 0:
            continue
        for m, a in sorted(((m, a) for m, a in zip(r.members, coefs) if m in kept and m not in pinned and a > 0),
                           key=lambda ma: (v[ma[0]], -ma[0])):
            kept.discard(m)
            over -= a
            if over <= 0:
                break
    out = frozenset(kept)
    return out if out and _locally_feasible(problem, comp, out) else None


@dataclass(slots=True)
class Master:
    """The Dantzig-Wolfe master over the groups' columns: its LP value, the spanning
    rules' duals, and (integer) the chosen column of each group."""

    value: float
    duals: dict[int, float]
    #: Each column's value in the LP, group by group (as ``columns``).
    z: list[list[float]] = field(default_factory=list)


def _spanning_coefs(problem: Problem, dec: Decomposition) -> list[dict[int, int]]:
    rules = problem.linear_rules
    out: list[dict[int, int]] = []
    for k in dec.spanning:
        r = rules[k]
        coefs: Sequence[int] = r.coefs if r.coefs is not None else [1] * len(r.members)
        out.append(dict(zip(r.members, coefs)))
    return out


def master_lp(problem: Problem, dec: Decomposition, columns: list[list[frozenset[int]]],
              coefs: list[dict[int, int]]) -> Master | None:
    """The master's LP (GLOP): one variable per column, at most one column per group
    (exactly one where the empty set is not a column), every spanning rule."""
    import numpy as np
    from ortools.linear_solver.python import model_builder_helper as mbh

    rules = problem.linear_rules
    v = problem.values
    model = mbh.ModelBuilderHelper()
    flat = [(c, col) for c, cols in enumerate(columns) for col in cols]
    n = len(flat)
    add_vars: Any = model.add_var_array_with_bounds
    add_vars(np.zeros(n), np.ones(n), np.zeros(n, dtype=bool), "z")
    add_term = model.add_term_to_constraint
    inf = float("inf")
    rows = []
    for k, co in zip(dec.spanning, coefs):
        r = rules[k]
        ct = model.add_linear_constraint()
        model.set_constraint_lower_bound(ct, -inf if r.lower is None else float(r.lower))
        model.set_constraint_upper_bound(ct, inf if r.upper is None else float(r.upper))
        rows.append(ct)
        for j, (_, col) in enumerate(flat):
            a = sum(co.get(i, 0) for i in col)
            if a:
                add_term(ct, j, float(a))
    start = 0
    for c, cols in enumerate(columns):
        ct = model.add_linear_constraint()
        empty_ok = _locally_feasible(problem, dec.components[c], frozenset())
        model.set_constraint_lower_bound(ct, 0.0 if empty_ok else 1.0)
        model.set_constraint_upper_bound(ct, 1.0)
        for j in range(start, start + len(cols)):
            add_term(ct, j, 1.0)
        start += len(cols)
    model.set_objective_coefficients(list(range(n)), [float(sum(v[i] for i in col)) for _, col in flat])
    model.set_maximize(True)
    solver = mbh.ModelSolverHelper("glop")
    solver.solve(model)
    if solver.status() != mbh.SolveStatus.OPTIMAL:
        return None
    duals = solver.dual_values().tolist()
    values = solver.variable_values().tolist()
    z: list[list[float]] = []
    start = 0
    for cols in columns:
        z.append(values[start:start + len(cols)])
        start += len(cols)
    return Master(float(solver.objective_value()), dict(zip(dec.spanning, duals[:len(dec.spanning)])), z)


def master_int(problem: Problem, dec: Decomposition, columns: list[list[frozenset[int]]],
               coefs: list[dict[int, int]], master: Master | None, hint: frozenset[int] | None,
               params: dict[str, Any]) -> frozenset[int] | None:
    """The master with one column (or none) per group, by CP-SAT (``params``: its
    parameters, deterministic). A group whose column the master's LP takes whole (or
    leaves out whole) keeps that choice; CP-SAT chooses for the others (at most one per
    spanning rule in a basic solution). The union of the chosen columns, or ``None``."""
    from ..compile import load_cp_model, objective_multiplier
    from . import params as cpsat_params

    cp_model = load_cp_model()
    rules = problem.linear_rules
    v, w = problem.values, problem.weights
    t = objective_multiplier(problem)
    fixed: list[frozenset[int]] = []
    free: list[int] = []
    for c, cols in enumerate(columns):
        zc = master.z[c] if master is not None else []
        whole = [j for j, val in enumerate(zc) if val >= WHOLE]
        if master is not None and (whole or all(val <= 1 - WHOLE for val in zc)) \
                and (whole or _locally_feasible(problem, dec.components[c], frozenset())):
            if whole:
                fixed.append(cols[whole[0]])
        else:
            free.append(c)
    taken = frozenset(i for col in fixed for i in col)
    model = cp_model.CpModel()
    flat: list[tuple[Any, frozenset[int]]] = []
    for c in free:
        cols = columns[c]
        row = [model.new_bool_var(f"z[{c},{j}]") for j in range(len(cols))]
        if _locally_feasible(problem, dec.components[c], frozenset()):
            if len(row) > 1:
                model.add_at_most_one(row)
        else:
            model.add_exactly_one(row)
        flat.extend(zip(row, cols))
    for k, co in zip(dec.spanning, coefs):
        r = rules[k]
        base = sum(co.get(i, 0) for i in taken)
        terms = [(z, sum(co.get(i, 0) for i in col)) for z, col in flat]
        terms = [(z, a) for z, a in terms if a]
        expr = cp_model.LinearExpr.weighted_sum([z for z, _ in terms], [a for _, a in terms])
        if r.lower is not None:
            model.add(expr >= r.lower - base)
        if r.upper is not None:
            model.add(expr <= r.upper - base)
    gain = [sum(v[i] for i in col) * t - (sum(w[i] for i in col) if t > 1 else 0) for _, col in flat]
    model.maximize(cp_model.LinearExpr.weighted_sum([z for z, _ in flat], gain))
    if hint is not None:
        for z, col in flat:
            model.add_hint(z, 1 if col <= hint else 0)
    solver = cpsat_params.solver(params)
    code = cpsat_params.run(solver, model)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return taken | frozenset(i for z, col in flat if solver.boolean_value(z) for i in col)

#: Share of CP-SAT's deterministic limit (of the call's limit) given to the master.
MASTER_SHARE = 0.25
#: A gap this small ends the LP path: no CP-SAT neighbourhood search follows.
GOOD_GAP = 1e-3


def good_enough(lp: LpAnswer, relative_gap: float) -> bool:
    """Whether the LP path's answer ends the search: proven, or within ``GOOD_GAP`` (or
    the policy's own relative gap, when larger)."""
    if lp.chosen is None:
        return False
    if lp.objective >= lp.bound:
        return True
    return (lp.bound - lp.objective) <= max(GOOD_GAP, relative_gap) * abs(lp.bound)


#: Rounds of column generation after the first (each: the master's LP, then every
#: group's DP at its duals); fewer when no group gains a column or the master's LP is
#: within ``CG_TOLERANCE`` of the bound. A count, not a clock: reruns do the same rounds.
CG_ROUNDS = 6
CG_TOLERANCE = 1e-4
#: How far past the deadline the rounds may run before the clock stops them.
ROUNDS_GRACE_S = 1.0


def _feasible(problem: Problem, chosen: frozenset[int]) -> bool:
    """Every rule, exactly (integers): the master's answer is used only if it holds."""
    if not problem.pinned <= chosen:
        return False
    if any(sum(1 for m in ch.members if m in chosen) > 1 for ch in problem.chains):
        return False
    return all(r.holds(chosen) for r in problem.linear_rules)


def _decomposition(problem: Problem, sets: list[list[int]], rule_y: Sequence[float], set_y: Sequence[float],
                   answers: list[frozenset[int]], params: dict[str, Any], deadline: float | None = None
                   ) -> tuple[dict[str, Any], int, frozenset[int] | None] | None:
    """Groups, the Lagrangian bound at the LP's duals, column generation, the integer
    master: ``(stats, bound, answer)``, or ``None`` when no group is solved exactly."""
    dec = decompose(problem, sets)
    if not any(c.exact for c in dec.components):
        return None
    ry = list(rule_y)
    lg = lagrangian(problem, dec, sets, ry, set_y)
    best = lg.bound
    columns: list[list[frozenset[int]]] = [[] for _ in dec.components]
    seen: list[set[frozenset[int]]] = [set() for _ in dec.components]

    def add(c: int, col: frozenset[int]) -> bool:
        if not col or col in seen[c]:
            return False
        seen[c].add(col)
        comp = dec.components[c]
        if not _locally_feasible(problem, comp, col):
            # A DP set may break a rule the DP does not keep (a cap on items): the set
            # without its least valuable members over that cap is a column.
            fixed = _repaired(problem, comp, col)
            if fixed is None or fixed in seen[c]:
                return False
            seen[c].add(fixed)
            col = fixed
        columns[c].append(col)
        return True

    comp_of = dec.component_of
    for answer in answers:
        parts: dict[int, set[int]] = {}
        for i in sorted(answer):
            parts.setdefault(comp_of[i], set()).add(i)
        for c in sorted(parts):
            add(c, frozenset(parts[c]))
    for c in sorted(lg.best):
        add(c, frozenset(lg.best[c]))
    coefs = _spanning_coefs(problem, dec)
    rounds = 0
    master = None
    cut = False
    for _ in range(CG_ROUNDS):
        master = master_lp(problem, dec, columns, coefs)
        if master is None or best - master.value <= CG_TOLERANCE * abs(best):
            break
        if deadline is not None and time.perf_counter() >= deadline + ROUNDS_GRACE_S:
            # The wall-clock safety net, well past the limit only (a round takes ~0.1 s at
            # n = 10,000): an answer is otherwise the same on every run (recorded).
            cut = True
            break
        rounds += 1
        for k, d in master.duals.items():
            ry[k] = d
        lg = lagrangian(problem, dec, sets, ry, set_y)
        best = min(best, lg.bound)
        if not sum(add(c, frozenset(lg.best[c])) for c in sorted(lg.best)):
            break
    got = master_int(problem, dec, columns, coefs, master, answers[0] if answers else None, params)
    if got is not None and not _feasible(problem, got):
        raise AssertionError("lpround: the master's answer breaks a rule")
    stats: dict[str, Any] = {
        "method": "Lagrangian decomposition by group (the tree DP per group, rules spanning groups dualized); "
                  "Dantzig-Wolfe master over the groups' columns (CP-SAT)",
        "groups": len(dec.components), "exact_groups": sum(c.exact for c in dec.components),
        "spanning_rules": len(dec.spanning), "bound": _floor_bound(best), "rounds": rounds,
        "columns": sum(map(len, columns)), "master_lp": None if master is None else master.value,
        "master_objective": None if got is None else sum(problem.values[i] for i in got),
        "chosen": False, "cut_by_wall_clock": cut}
    return stats, _floor_bound(best), got
