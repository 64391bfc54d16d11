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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..problem import Problem

#: Relative margin added to the floating-point bound (its rounding error is ~1e-12).
BOUND_MARGIN = 1e-7
#: An LP value this close to 1 counts as "taken whole".
WHOLE = 1 - 1e-6


#: Below this many active items CP-SAT proves the rule-bearing models on its own (n = 1,000:
#: ~0.2 s); the LP is for the large ones, where its search stalls at the root.
LP_MIN_ITEMS = 2_000
#: CPU seconds the LP (build, GLOP, rounding) takes per active item, measured at n = 10,000
#: on a loaded 2-core machine (0.55-0.6 s), and the share of the time limit it may use.
LP_S_PER_ITEM = 60e-6
LP_SHARE = 0.5


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


def solve(problem: Problem, wall_s: float | None = None) -> LpAnswer | None:
    """The relaxation's bound and rounded answer, or ``None`` when GLOP does not report
    an optimal LP (then nothing is claimed). ``wall_s``: GLOP's wall-clock safety net
    (what is left of the call's time; a cut LP is ``None``, and the caller falls back)."""
    import numpy as np
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
    if wall_s is not None:
        solver.set_time_limit_in_seconds(max(0.001, wall_s))
    solver.solve(model)
    if solver.status() != mbh.SolveStatus.OPTIMAL:
        return None
    xs = dict(zip(active, solver.variable_values().tolist()))
    duals = solver.dual_values().tolist()
    n_rules = len(problem.linear_rules)
    bound = _safe_bound(problem, sets, duals[:n_rules], duals[n_rules:])
    chosen = _round(problem, sets, xs)
    frac = sum(1 for val in xs.values() if 1e-6 < val < WHOLE)
    support = frozenset(i for i, val in xs.items() if val > 1e-6)
    lp_value = float(solver.objective_value())
    if chosen is None:
        return LpAnswer(bound, lp_value, None, 0, frac, support)
    return LpAnswer(bound, lp_value, chosen, sum(v[i] for i in chosen), frac, support)


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
    return math.floor(total + BOUND_MARGIN * (abs(total) + 1.0) + 1.0)


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
