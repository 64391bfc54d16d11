"""OPTIMAL for budget-only problems: an exact 0/1 knapsack by core reduction.

When the only rule is the budget (no pins, quotas, caps or hierarchy chains), the
problem is ``max sum(c_i x_i) s.t. sum(w_i x_i) <= capacity`` with CP-SAT's own
objective ``c_i = value_i * T - weight_i`` (``T = capacity + 1``, so the answer is the
same optimum the CP-SAT model proves, tie-break included). Steps:

1. Sort by ``c/w``; the break item ``b`` is the first that does not fit. Dantzig's bound
   ``L = r*C + sum(max(0, c_i - r*w_i))`` with ``r = c_b/w_b`` bounds every answer.
2. Solve the ``2k`` items around the break exactly (DP over their residual capacity),
   the others at their LP value: a feasible incumbent ``LB``, usually optimal or nearly.
3. Reduced-cost fixing (Dembo-Hammer): item ``j`` held against its LP value can reach at
   most ``L - |c_j - r*w_j|``; if that is below ``LB + 1`` it keeps its LP value in every
   better answer. What is not fixed is the core.
4. Solve the core exactly: DP when ``|core| * capacity`` is small, else CP-SAT
   (default presolve, which has its own DP) within the time limit. The fixing proof plus
   the core's proof prove the whole answer optimal.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from ..compile import objective_multiplier
from ..policy import BudgetStrategy
from ..problem import Problem
from ..reasons import Reason, ReasonCode
from . import DETERMINISTIC_SHARE, Selection

CORE_K = 40
DP_MAX_CELLS = 30_000_000


def applies(problem: Problem) -> bool:
    """Only the budget binds: no pins, quotas, caps or hierarchy conflicts."""
    return len(problem.rules) == 1 and not problem.chains and not problem.pins


def _dp_select(cc: np.ndarray, ww: np.ndarray, cap: int) -> np.ndarray:
    n = len(cc)
    best = np.zeros(cap + 1, dtype=np.int64)
    keep = np.zeros((n, cap + 1), dtype=bool)
    buf = np.empty(cap + 1, dtype=np.int64)
    for i in range(n):
        wi, ci = int(ww[i]), int(cc[i])
        if wi > cap:
            continue
        k = cap + 1 - wi
        np.add(best[:k], ci, out=buf[:k])
        keep[i, wi:] = buf[:k] > best[wi:]
        np.maximum(best[wi:], buf[:k], out=best[wi:])
    x = np.zeros(n, dtype=bool)
    c = cap
    for i in range(n - 1, -1, -1):
        if keep[i, c]:
            x[i] = True
            c -= int(ww[i])
    return x


def _cpsat(cc: np.ndarray, ww: np.ndarray, cap: int, hint: np.ndarray, limit_s: float,
           problem: Problem) -> tuple[np.ndarray | None, bool, float | None]:
    t_start = time.perf_counter()
    m = cp_model.CpModel()
    xs = [m.new_bool_var("") for _ in range(len(cc))]
    m.add(cp_model.LinearExpr.weighted_sum(xs, ww.tolist()) <= cap)
    m.maximize(cp_model.LinearExpr.weighted_sum(xs, cc.tolist()))
    for x, h in zip(xs, hint.tolist()):
        m.add_hint(x, int(h))
    limit_s -= time.perf_counter() - t_start  # building the model counts too
    if limit_s <= 0.001:
        return None, False, None
    s = cp_model.CpSolver()
    s.parameters.num_workers = problem.settings.workers
    s.parameters.random_seed = problem.settings.seed
    s.parameters.max_time_in_seconds = max(0.001, limit_s)
    # As in cpsat.parameters(): a deterministic limit that binds before the clock, so an
    # answer cut by the limit is reproducible, and no presolve (it overran the wall
    # limit by seconds on 100k-item strongly correlated cores).
    s.parameters.max_deterministic_time = max(0.001, DETERMINISTIC_SHARE * limit_s)
    s.parameters.cp_model_presolve = False
    st = s.solve(m)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, False, None
    return np.array([s.boolean_value(x) for x in xs], dtype=bool), st == cp_model.OPTIMAL, s.best_objective_bound


def solve(problem: Problem, time_limit_s: float) -> Selection:
    """Solve the budget-only ``problem`` exactly; ``time_limit_s`` left of the call's
    limit (status ``deadline`` when none is left, as for CP-SAT)."""
    t0 = time.perf_counter()
    if time_limit_s <= 0:
        return Selection(BudgetStrategy.OPTIMAL, frozenset(), {}, "deadline", 0, None,
                         stats={"solver": "knapsack-core", "status": "deadline"})
    act = np.fromiter(problem.active, dtype=np.int64, count=len(problem.active))
    v = np.fromiter((problem.values[i] for i in problem.active), dtype=np.int64, count=len(act))
    w = np.fromiter((problem.weights[i] for i in problem.active), dtype=np.int64, count=len(act))
    cap = problem.capacity
    # The CP-SAT model's objective, tie-break included (dropped, as there, near int64).
    T = objective_multiplier(problem)
    c = v * T - w if T > 1 else v.copy()
    take = (w == 0) & (c > 0)
    cand = np.flatnonzero((c > 0) & (w > 0) & (w <= cap))
    stats: dict[str, Any] = {"solver": "knapsack-core"}
    proven, bound_c = True, None
    if cand.size and int(w[cand].sum()) > cap:
        cc, ww = c[cand], w[cand]
        order = np.argsort(-(cc / ww), kind="stable")
        b = int(np.searchsorted(np.cumsum(ww[order]), cap, side="right"))
        r = cc[order[b]] / ww[order[b]]
        red = cc - r * ww
        L = r * cap + red[red > 0].sum()
        lo, hi = max(0, b - CORE_K), min(len(order), b + CORE_K)
        sol = np.zeros(len(cc), dtype=bool)
        sol[order[:lo]] = True
        ring, cap_ring = order[lo:hi], cap - int(ww[order[:lo]].sum())
        if len(ring) * (cap_ring + 1) <= DP_MAX_CELLS:
            sol[ring] = _dp_select(cc[ring], ww[ring], cap_ring)
        else:  # huge capacities (scaled weights): a DP table would not fit in memory
            x, _, _ = _cpsat(cc[ring], ww[ring], cap_ring, np.zeros(len(ring), dtype=bool),
                             time_limit_s / 10, problem)
            if x is not None:
                sol[ring] = x
        lb = int(cc[sol].sum())
        margin = 1e-9 * abs(L) + 2.0  # float error of L and red, far below one unit of c
        fixable = (L - np.abs(red)) < lb + 1 - margin
        fix1 = fixable & (red > 0)
        core = np.flatnonzero(~fixable)
        cap_core = cap - int(ww[fix1].sum())
        stats.update(core_items=int(core.size), fixed_in=int(fix1.sum()), lp_bound=float(L))
        if core.size:
            final = fix1.copy()
            if core.size * (cap_core + 1) <= DP_MAX_CELLS:
                final[core] = _dp_select(cc[core], ww[core], cap_core)
                stats["core_solver"] = "dp"
            else:
                x, proven, cb = _cpsat(cc[core], ww[core], cap_core, sol[core],
                                       time_limit_s - (time.perf_counter() - t0), problem)
                stats["core_solver"] = "cp-sat"
                if x is None:  # no time left for the core: the incumbent, with the LP bound
                    final = sol
                    bound_c = int(L)
                else:
                    final[core] = x
                    if not proven:
                        bound_c = int(cb) + int(cc[fix1].sum()) if cb is not None else int(L)
            if int(cc[final].sum()) >= lb:
                sol = final
        take[cand[sol]] = True
    elif cand.size:
        take[cand] = True
    chosen = frozenset(act[take].tolist())
    obj = int(v[take].sum())
    bound = obj if proven else max(obj, (bound_c + cap) // T if bound_c is not None else obj)
    stats["wall_time_s"] = time.perf_counter() - t0
    why = "part of the optimal selection" if proven else "part of the best selection found in the time limit"
    reasons = {i: Reason(ReasonCode.SELECTED, why) for i in chosen}
    return Selection(BudgetStrategy.OPTIMAL, chosen, reasons, "optimal" if proven else "feasible", obj, bound,
                     stats=stats)
