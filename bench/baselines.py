"""The baselines the harness times next to the engine, and the exactness oracle.

* :func:`seed_greedy` — the seed spec's ``optimize_for_budget`` with
  ``strategy=GREEDY``: filter by ``min_relevance``, sort by relevance, then
  ``_greedy_allocation`` (copied from ``../shared/seed/000_a708c3dafd6b59f9.txt``; its
  audit trail is built too, as the seed builds it).
* :func:`dp_optimum` — a NumPy dynamic programme over the capacity: the exact optimum of a
  single-budget 0/1 knapsack, used to check every "optimal" answer where ``n * B`` allows.
* :func:`ortools_knapsack` — OR-Tools' knapsack branch-and-bound
  (``ortools.algorithms.python.knapsack_solver``), with a time limit.
* :func:`cpsat_default` — CP-SAT with default parameters (no hint, default workers) on
  the same model the engine builds (``engine.compile.compile_problem``), so the only
  difference from the engine's own call is parameters, hint and fast paths.

All of them read integer values and weights from the engine's ``Problem`` (``values``,
``weights``, ``capacity``) except the seed greedy, which reads the seed's ``BudgetItem``s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ortools.algorithms.python import knapsack_solver
from ortools.sat.python import cp_model

from engine import BudgetItem
from engine.compile import compile_problem
from engine.problem import Problem


@dataclass(frozen=True)
class Outcome:
    """One baseline run: chosen indices (``None`` when it found nothing), the objective in
    the Problem's value units, whether optimality was proven, and a status word."""

    chosen: frozenset[int] | None
    objective: int | None
    proven: bool
    status: str
    stages_s: dict[str, float] | None = None


# --------------------------------------------------------------------------- seed greedy


def seed_greedy(candidates: list[BudgetItem], token_budget: int, min_relevance: float = 0.0) -> dict[str, Any]:
    """The seed's GREEDY path: filter, sort by relevance (stable), ``_greedy_allocation``."""
    candidates = [c for c in candidates if c.relevance_score >= min_relevance]
    sorted_candidates = sorted(candidates, key=lambda c: c.relevance_score, reverse=True)
    return _greedy_allocation(sorted_candidates, token_budget)


def _greedy_allocation(candidates: list[BudgetItem], budget: int) -> dict[str, Any]:
    """Copied from the seed spec (the seed returns a BudgetAllocation dataclass; a dict
    with the same fields stands in for it)."""
    included = []
    excluded = []
    tokens_used = 0

    for item in candidates:
        if tokens_used + item.token_count <= budget:
            included.append(item)
            tokens_used += item.token_count
        else:
            excluded.append(item)

    efficiency = (
        sum(i.relevance_score for i in included) / tokens_used
        if tokens_used > 0 else 0.0
    )

    audit_trail = {
        "strategy": "greedy",
        "candidates_considered": len(candidates),
        "included_count": len(included),
        "excluded_count": len(excluded),
        "tokens_used": tokens_used,
        "budget_utilization": tokens_used / budget if budget > 0 else 0.0,
        "avg_relevance_included": (
            sum(i.relevance_score for i in included) / len(included)
            if included else 0.0
        ),
        "excluded_high_relevance": [
            {"id": e.source_id, "relevance": e.relevance_score}
            for e in excluded[:5] if e.relevance_score > 0.7
        ]
    }

    return {
        "included": included,
        "excluded": excluded,
        "total_tokens_used": tokens_used,
        "budget_limit": budget,
        "efficiency": efficiency,
        "audit_trail": audit_trail,
    }


def seed_greedy_objective(problem: Problem, result: dict[str, Any]) -> int:
    """The seed greedy's choice scored in the Problem's value units (ids are unique)."""
    index = {c.source_id: c.index for c in problem.candidates}
    return sum(problem.values[index[item.source_id]] for item in result["included"])


# --------------------------------------------------------------------------- DP oracle


def knapsack_arrays(problem: Problem) -> tuple[np.ndarray, np.ndarray, int]:
    """Values and weights of the active items with positive value, and the capacity."""
    act = [i for i in problem.active if problem.values[i] > 0]
    v = np.fromiter((problem.values[i] for i in act), dtype=np.int64, count=len(act))
    w = np.fromiter((problem.weights[i] for i in act), dtype=np.int64, count=len(act))
    return v, w, problem.capacity


def dp_cells(problem: Problem) -> int:
    """``n * B``: the work of :func:`dp_optimum` (its feasibility gate)."""
    return len(problem.active) * (problem.capacity + 1)


def dp_optimum(values: np.ndarray, weights: np.ndarray, capacity: int) -> int:
    """The optimum of ``max v.x s.t. w.x <= capacity, x in {0,1}^n`` by dynamic
    programming over the capacity: ``best[c]`` is the best value within weight ``c``.
    Each item updates ``best[w:]`` from a copy of ``best[:-w]`` (the right-hand side is
    materialised first, so every item is used at most once). Zero-weight items are
    simply added. Memory O(capacity), time O(n * capacity) vector work."""
    cap = int(capacity)
    free = int(values[weights == 0].clip(min=0).sum())
    keep = (weights > 0) & (weights <= cap) & (values > 0)
    v, w = values[keep], weights[keep]
    best = np.zeros(cap + 1, dtype=np.int64)
    shifted = np.empty(cap + 1, dtype=np.int64)  # reused: no allocation per item (2x faster)
    # Only best[:reach + 1] is kept up to date: beyond the total weight seen so far the
    # table is flat (best[c] == best[reach]), so that tail is never computed.
    reach = 0
    for vi, wi in zip(v.tolist(), w.tolist()):
        hi = min(cap, reach + wi)
        best[reach + 1: hi + 1] = best[reach]
        k = hi - wi + 1
        np.add(best[:k], vi, out=shifted[:k])  # old values, read before the update
        np.maximum(best[wi: hi + 1], shifted[:k], out=best[wi: hi + 1])
        reach = hi
    return int(best[reach]) + free


def lp_bound(values: np.ndarray, weights: np.ndarray, capacity: int) -> int:
    """Dantzig's bound (the LP relaxation's optimum, floored): items by value per weight,
    whole until the break item, then its fraction. Every 0/1 answer is at most this, so
    ``answer / bound`` is a proven lower bound on how close to optimal an answer is where
    no exact optimum is known (n = 100,000)."""
    keep = (values > 0) & (weights <= capacity)
    v, w = values[keep], weights[keep]
    free = int(v[w == 0].sum())
    v, w = v[w > 0], w[w > 0]
    order = np.argsort(-(v / w), kind="stable")
    v, w = v[order], w[order]
    cw = np.cumsum(w)
    b = int(np.searchsorted(cw, capacity, side="right"))  # items [0, b) fit whole
    whole = int(v[:b].sum())
    if b == len(v):
        return whole + free
    left = capacity - (int(cw[b - 1]) if b else 0)
    return whole + free + (int(v[b]) * left) // int(w[b])


# --------------------------------------------------------------------------- OR-Tools


def ortools_knapsack(problem: Problem, time_limit_s: float) -> Outcome:
    """OR-Tools' knapsack branch-and-bound on the budget rule (budget-only problems)."""
    t0 = time.perf_counter()
    act = [i for i in problem.active if problem.values[i] > 0]
    solver = knapsack_solver.KnapsackSolver(
        knapsack_solver.SolverType.KNAPSACK_MULTIDIMENSION_BRANCH_AND_BOUND_SOLVER, "bench")
    # init is where the time goes at large n (it grows ~n^2: 0.1 s at 10k, 1.4 s at 30k);
    # the time limit only covers solve().
    solver.init([problem.values[i] for i in act], [[problem.weights[i] for i in act]], [problem.capacity])
    t1 = time.perf_counter()
    solver.set_time_limit(time_limit_s)
    solver.solve()
    t2 = time.perf_counter()
    chosen = frozenset(i for k, i in enumerate(act) if solver.best_solution_contains(k))
    proven = bool(solver.is_solution_optimal())
    obj = sum(problem.values[i] for i in chosen)
    return Outcome(chosen, obj, proven, "optimal" if proven else "limit",
                   {"init_s": t1 - t0, "solve_s": t2 - t1})


def cpsat_default(problem: Problem, time_limit_s: float) -> Outcome:
    """CP-SAT, default parameters apart from the time limit, on the engine's model."""
    t0 = time.perf_counter()
    cm = compile_problem(problem)
    t1 = time.perf_counter()
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    code = solver.solve(cm.model)
    stages = {"build_s": t1 - t0, "solve_s": time.perf_counter() - t1}
    status = solver.status_name(code).lower()
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Outcome(None, None, False, status, stages)
    chosen = frozenset(i for i, var in cm.take.items() if solver.boolean_value(var))
    return Outcome(chosen, sum(problem.values[i] for i in chosen), code == cp_model.OPTIMAL, status, stages)


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """``(seconds, result)`` of one call, by ``time.perf_counter``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out
