"""OPTIMAL for budget-only problems: an exact 0/1 knapsack, proven without CP-SAT.

When the only rule is the budget (no pins, quotas, caps or hierarchy chains), the
problem is ``max sum(c_i x_i) s.t. sum(w_i x_i) <= capacity`` with CP-SAT's own
objective ``c_i = value_i * T - weight_i`` (``T = capacity + 1``, so the answer is the
same optimum the CP-SAT model proves, tie-break included). Steps:

1. Sort by ``c/w``; the break item ``b`` is the first that does not fit. Dantzig's bound
   ``L = r*C + sum(max(0, c_i - r*w_i))`` with ``r = c_b/w_b`` bounds every answer.
2. A first incumbent: the ``2k`` items around the break solved exactly by a small DP
   (the others at their LP value), or the break solution filled greedily.
3. Reduced-cost fixing (Dembo-Hammer): item ``j`` held against its LP value can reach at
   most ``L - |c_j - r*w_j|``; if that is below ``LB + 1`` it keeps its LP value in every
   better answer. What is not fixed is the core.
4. The core, exactly: a dense DP when it is tiny; otherwise the expanding-core DP of
   :mod:`engine.strategies.minknap` (Pisinger's ``minknap``: states around the break
   solution, pruned by LP bounds, identical items in binary groups), with the
   cardinality cut when the LP answer holds more items than any feasible answer can
   (Pisinger's strongly correlated class). It proves the optimum in milliseconds on
   every class of ``bench/pisinger_check.py``. Only if its state list outgrows
   ``DP_MAX_STATES`` does CP-SAT take the core, under the same parameters as everywhere
   (:mod:`engine.strategies.params`): its deterministic limit is a share of the call's
   time limit, never of the time left on the clock; the wall-clock deadline is only the
   safety net.

``stats["proof"]`` states how the answer was proven (or that it was not) and the bound;
the audit record keeps it. The independent verifier checks the answer like any other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..compile import load_cp_model, objective_multiplier
from ..policy import BudgetStrategy
from ..problem import Problem
from ..reasons import Reason, ReasonCode
from . import Selection
from . import minknap
from . import params as cpsat_params

CORE_K = 40
DP_MAX_CELLS = 30_000_000
#: Use the cardinality bound when the Dembo-Hammer core has more items than this.
CARD_FROM_CORE = 64
#: The ring DP that finds the first incumbent runs when it has at most this many cells.
RING_DP_CELLS = 2_000_000
#: A core with at most this many DP cells is solved by the dense DP, not the expanding core.
DENSE_DP_CELLS = 300_000
#: The expanding core gives up (CP-SAT takes the core) past this many DP states.
DP_MAX_STATES = minknap.MAX_STATES


def applies(problem: Problem) -> bool:
    """Only the budget binds: no pins, quotas, caps or hierarchy conflicts."""
    return not problem.constraints and not problem.chains and not problem.pins


def _dp_select_full(cc: np.ndarray, ww: np.ndarray, cap: int) -> np.ndarray:
    """The dense 0/1 knapsack DP over every capacity 0..cap (the reference the banded
    :func:`_dp_select` equals; used when its preconditions do not hold)."""
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


def _dp_select(cc: np.ndarray, ww: np.ndarray, cap: int) -> np.ndarray:
    """The choice :func:`_dp_select_full` makes, computed on the band of capacities that
    can matter (the same cells, the same comparisons, the same tie-break).

    With every profit and weight positive, item ``i``'s row is needed only for the
    capacities the backtrack from ``cap`` can reach, ``>= cap - (weight after i)``, and
    below ``P_i`` (the weight of items ``0..i``): at or above it every item so far fits,
    the best is their total and taking ``i`` is strictly better, which the backtrack
    reads off ``hi[i]`` instead of a row of ``True``."""
    n = len(cc)
    w_list, c_list = ww.tolist(), cc.tolist()
    fit = [w if w <= cap else 0 for w in w_list]
    if n == 0 or min(w_list) <= 0 or min(c_list) <= 0 or sum(fit) <= cap:
        return _dp_select_full(cc, ww, cap)
    after = [0] * (n + 1)  # weight of the fitting items after i
    for i in range(n - 1, -1, -1):
        after[i] = after[i + 1] + fit[i]
    best = np.zeros(cap + 1, dtype=np.int64)
    keep = np.zeros((n, cap + 1), dtype=bool)
    buf = np.empty(cap + 1, dtype=np.int64)
    his = [cap] * n  # above his[i] item i is taken (a skipped item: never)
    top = 0  # best[c] for c > top equals best[top] (every item so far fits there)
    add, greater, maximum = np.add, np.greater, np.maximum
    for i in range(n):
        wi, ci = w_list[i], c_list[i]
        if wi > cap:
            continue
        hi = min(cap, top + wi)
        if hi > top:
            best[top + 1:hi + 1] = best[top]
        lo = max(wi, cap - after[i + 1])
        if lo <= hi:
            m = hi + 1 - lo
            b = buf[:m]
            add(best[lo - wi:hi + 1 - wi], ci, out=b)
            greater(b, best[lo:hi + 1], out=keep[i, lo:hi + 1])
            maximum(best[lo:hi + 1], b, out=best[lo:hi + 1])
        his[i] = hi
        top = hi
    x = np.zeros(n, dtype=bool)
    c = cap
    for i in range(n - 1, -1, -1):
        if c > his[i] or keep[i, c]:
            x[i] = True
            c -= w_list[i]
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
    cp_model = load_cp_model()
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
    method: str | None = None
    dantzig: float | None = None
    dtime = cpsat_params.deterministic_limit(time_limit_s)  # what CP-SAT may spend here
    if cand.size and int(w[cand].sum()) > cap:
        cc, ww = c[cand], w[cand]
        order = np.argsort(-(cc / ww), kind="stable")
        b = int(np.searchsorted(np.cumsum(ww[order]), cap, side="right"))
        r = cc[order[b]] / ww[order[b]]
        red = cc - r * ww
        L = r * cap + red[red > 0].sum()
        sol = np.zeros(len(cc), dtype=bool)
        sol[order[:b]] = True
        lo, hi = max(0, b - CORE_K), min(len(order), b + CORE_K)
        ring, cap_ring = order[lo:hi], cap - int(ww[order[:lo]].sum())
        if len(ring) * (cap_ring + 1) <= RING_DP_CELLS:  # a strong first incumbent, cheaply
            sol[ring] = _dp_select(cc[ring], ww[ring], cap_ring)
        else:  # the break solution, then every later item that still fits
            room = cap - int(ww[order[:b]].sum())
            for j in order[b:].tolist():
                if ww[j] <= room:
                    sol[j] = True
                    room -= int(ww[j])
        lb = int(cc[sol].sum())
        margin = 1e-9 * abs(L) + 2.0  # float error of L and red, far below one unit of c
        fixable = (L - np.abs(red)) < lb + 1 - margin
        fix1 = fixable & (red > 0)
        core = np.flatnonzero(~fixable)
        cap_core = cap - int(ww[fix1].sum())
        dantzig = float(L)
        stats.update(core_items=int(core.size), fixed_items=int(fixable.sum()))
        card = None
        if core.size > CARD_FROM_CORE:
            # When the LP answer holds more items than any feasible answer can (Pisinger's
            # strongly correlated class), the cardinality cut bounds far tighter than Dantzig.
            frac = (cap - float(ww[order[:b]].sum())) / float(ww[order[b]])
            k_core = int(np.searchsorted(np.cumsum(np.sort(ww[core])), cap_core, side="right"))
            if b + frac > k_core + int(fix1.sum()):
                cc_core = cc[core]
                part = minknap.cardinality_bound(cc_core, ww[core], cap_core, float(r), k_max=k_core)
                # Over the core; the fixed items add their profit and their places.
                card = minknap.Cardinality(part.k_max + int(fix1.sum()), part.rho, part.lam,
                                           part.bound + float(cc[fix1].sum()))
                stats.update(cardinality_k_max=card.k_max)
        exact = None
        if core.size and core.size * (cap_core + 1) <= DENSE_DP_CELLS:
            # A small core: the dense DP over its residual capacity is cheapest.
            final = fix1.copy()
            final[core] = _dp_select(cc[core], ww[core], cap_core)
            if int(cc[final].sum()) >= lb:
                sol = final
            method = "Dembo-Hammer reduction, then dynamic programming over the core's capacity"
            stats["core_solver"] = "dp"
        elif core.size:
            exact = minknap.solve(cc, ww, cap, order, b, sol, float(L), card=card, deadline=deadline,
                                  max_states=DP_MAX_STATES)
        if exact is not None:
            sol = exact.x
            method = ("expanding-core dynamic programming (minknap) with Dantzig and Dembo-Hammer bounds"
                      + (" and the cardinality cut" if card is not None else ""))
            stats.update(core_solver="expanding core", dp_chunks=exact.items_branched, dp_states=exact.max_states,
                         optimum_found_by=exact.found_by)
        elif core.size and method is None:
            final = fix1.copy()
            if core.size * (cap_core + 1) <= DP_MAX_CELLS:
                final[core] = _dp_select(cc[core], ww[core], cap_core)
                method = "Dembo-Hammer reduction, then dynamic programming over the core's capacity"
                stats["core_solver"] = "dp"
            else:
                run = _cpsat(cc[core], ww[core], cap_core, sol[core], problem,
                             deterministic_s=dtime, deadline=deadline)
                x, proven, cb = run.x, run.proven, run.bound
                method = "Dembo-Hammer reduction, then CP-SAT over the core"
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
        elif method is None:
            method = "Dembo-Hammer reduction fixes every item"
        take[cand[sol]] = True
    elif cand.size:
        take[cand] = True
        method = "every item with a positive value fits"
    else:
        method = "no item with a positive value fits"
    chosen = frozenset(act[take].tolist())
    obj = int(v[take].sum())
    bound = obj if proven else max(obj, (bound_c + cap) // T if bound_c is not None else obj)
    # What the audit record states about the answer: how it was proven (or not), the bound.
    stats["proof"] = {
        "method": method,
        "proven": proven,
        "bound": bound,
        # Dantzig's LP bound in value units (the token tie-break dropped: it is below one unit).
        "lp_bound": None if dantzig is None else int((dantzig + cap) // T),
        "tie_break": T > 1,
    }
    stats["wall_time_s"] = time.perf_counter() - t0
    why = "part of the optimal selection" if proven else "part of the best selection found in the time limit"
    reasons = dict.fromkeys(chosen, Reason(ReasonCode.SELECTED, why))  # one frozen value, shared
    return Selection(BudgetStrategy.OPTIMAL, chosen, reasons, "optimal" if proven else "feasible", obj, bound,
                     stats=stats)
