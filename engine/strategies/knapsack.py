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
   within the time limit. The fixing proof plus the core's proof prove the whole answer
   optimal.

Time: CP-SAT runs here under the same parameters as everywhere
(:mod:`engine.strategies.params`): its deterministic limit is a share of the call's
time limit (never of the time left on the clock), split between the rare ring solve
(a tenth) and the core (the rest, minus the deterministic time the ring used); the
wall-clock deadline is only the safety net.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from ..compile import objective_multiplier
from ..policy import BudgetStrategy
from ..problem import Problem
from ..reasons import Reason, ReasonCode
from . import Selection
from . import params as cpsat_params

CORE_K = 40
DP_MAX_CELLS = 30_000_000


def applies(problem: Problem) -> bool:
    """Only the budget binds: no pins, quotas, caps or hierarchy conflicts."""
    return not problem.constraints and not problem.chains and not problem.pins


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


@dataclass(frozen=True, slots=True)
class _Exact:
    """One CP-SAT knapsack solve: the choice (None without a solution), whether it is
    proven, CP-SAT's bound, the deterministic time it used and its parameters."""

    x: np.ndarray | None
    proven: bool = False
    bound: float | None = None
    used_s: float = 0.0
    params: dict[str, Any] | None = None


def _cpsat(cc: np.ndarray, ww: np.ndarray, cap: int, hint: np.ndarray, problem: Problem, *,
           deterministic_s: float, deadline: float) -> _Exact:
    m = cp_model.CpModel()
    xs = [m.new_bool_var("") for _ in range(len(cc))]
    m.add(cp_model.LinearExpr.weighted_sum(xs, ww.tolist()) <= cap)
    m.maximize(cp_model.LinearExpr.weighted_sum(xs, cc.tolist()))
    for x, h in zip(xs, hint.tolist()):
        m.add_hint(x, int(h))
    wall_s = deadline - time.perf_counter()  # building the model counts too
    if wall_s <= cpsat_params.MIN_LIMIT_S or deterministic_s <= 0:
        return _Exact(None)
    # No gap limit: "optimal" here must mean proven (the whole answer's proof rests on it).
    params = cpsat_params.parameters(problem.settings, deterministic_s=deterministic_s, wall_s=wall_s,
                                     relative_gap=0.0)
    s = cpsat_params.solver(params)
    st = cpsat_params.run(s, m)
    used = float(s.response_proto.deterministic_time)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return _Exact(None, used_s=used, params=params)
    return _Exact(np.array([s.boolean_value(x) for x in xs], dtype=bool), st == cp_model.OPTIMAL,
                  s.best_objective_bound, used, params)


def solve(problem: Problem, time_limit_s: float, *, deadline: float | None = None) -> Selection:
    """Solve the budget-only ``problem`` exactly within the call's ``time_limit_s`` (what
    the deterministic limit is made of) and before ``deadline`` (a ``time.perf_counter()``
    instant, the wall-clock net; default: ``time_limit_s`` from now). Status ``deadline``
    when the net has already passed, as for CP-SAT."""
    t0 = time.perf_counter()
    if deadline is None:
        deadline = t0 + time_limit_s
    if time_limit_s <= 0 or deadline <= t0:
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
    dtime = cpsat_params.deterministic_limit(time_limit_s)  # what CP-SAT may spend here
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
            ring_run = _cpsat(cc[ring], ww[ring], cap_ring, np.zeros(len(ring), dtype=bool), problem,
                              deterministic_s=dtime / 10, deadline=deadline)
            dtime -= ring_run.used_s
            if ring_run.x is not None:
                sol[ring] = ring_run.x
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
                run = _cpsat(cc[core], ww[core], cap_core, sol[core], problem,
                             deterministic_s=dtime, deadline=deadline)
                x, proven, cb = run.x, run.proven, run.bound
                stats.update(core_solver="cp-sat", deterministic_time=run.used_s, parameters=run.params)
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
