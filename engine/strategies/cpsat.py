"""OPTIMAL with OR-Tools CP-SAT: Problem → Selection, proven optimal or best-found with gap.

* Skips the solver when the pins plus every positive-value item satisfy all rules
  (status ``trivial``: nothing to choose, the answer is optimal by construction).
* Budget-only problems go to the exact knapsack core reduction
  (:mod:`engine.strategies.knapsack`): same objective, same optimum, milliseconds; the
  budget plus an exclusive hierarchy (and nothing else) to the tree DP
  (:mod:`engine.strategies.treeknap`), when it fits.
* Hints the better of the greedy and density solutions, and keeps that heuristic answer
  if the solver's own is worse at the limit, so OPTIMAL is never below GREEDY.
* Deterministic by construction: fixed worker count and seed from the policy, and a
  deterministic time limit that is a function of the time limit alone
  (:mod:`engine.strategies.params`); the wall clock is only the safety net.
* Returns status ``infeasible`` / ``unknown`` / ``model_invalid`` with an empty choice
  instead of raising: the façade (:func:`engine.allocate.allocate`) owns the fallback
  rule and the infeasibility explanation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any, Callable

from ..compile import compile_problem, fingerprint, load_cp_model
from ..policy import BudgetStrategy
from ..problem import Problem
from ..reasons import Reason, ReasonCode
from . import Selection, knapsack, lpround, objective_of, treeknap
from . import params as cpsat_params
from .greedy import best_heuristic

def _status(code: Any) -> str:
    """CP-SAT's status code as the Selection's status."""
    cp_model = load_cp_model()
    return {
        cp_model.OPTIMAL: "optimal",
        cp_model.FEASIBLE: "feasible",
        cp_model.INFEASIBLE: "infeasible",
        cp_model.MODEL_INVALID: "model_invalid",
        cp_model.UNKNOWN: "unknown",
    }.get(code, "unknown")


def trivial_choice(problem: Problem) -> frozenset[int] | None:
    """Pins plus every positive-value active item, when that set breaks no rule."""
    v = problem.values
    chosen = frozenset(i for i in problem.active if v[i] > 0) | problem.pinned
    if not all(r.holds(chosen) for r in problem.linear_rules):
        return None
    for ch in problem.chains:
        if sum(1 for m in ch.members if m in chosen) > 1:
            return None
    return chosen


def stopped_by(status: str, stats: dict[str, Any], params: dict[str, Any]) -> str:
    """What ended the search, and whether a rerun gives the same answer: a proof or the
    gap limit (same answer), the deterministic time limit (same answer: one worker, a
    fixed seed and a limit in deterministic units, the settings in ``parameters``), or
    the wall-clock safety net (a loaded machine: the answer may differ run to run)."""
    if stats.get("status") == "optimal within relative_gap_limit":
        return "relative gap limit (reproducible)"
    if stats.get("status") == "optimal in the LP's neighbourhood":
        return "the LP's neighbourhood searched completely (reproducible)"
    if status == "optimal":
        return "proof of optimality"
    det, det_max = stats.get("deterministic_time") or 0.0, params["max_deterministic_time"]
    if det >= 0.98 * det_max:
        return ("deterministic time limit (reproducible: num_workers, random_seed and "
                "max_deterministic_time fix the search)")
    return "wall-clock safety net (max_time_in_seconds): not reproducible run to run"


def _shared_reasons(problem: Problem, chosen: Iterable[int], why: str) -> dict[int, Reason]:
    """``why`` for each chosen item, as a pin's or a selection's reason: two frozen
    values shared by all of them (equal reasons are one object, as in the filler)."""
    pinned = problem.pinned
    pin, sel = Reason(ReasonCode.PINNED, why), Reason(ReasonCode.SELECTED, why)
    return {i: pin if i in pinned else sel for i in chosen}


def _lp_stats(lp: lpround.LpAnswer) -> dict[str, Any]:
    """What the LP relaxation gave (the audit record's ``solver.proof.lp``)."""
    return {"method": "LP relaxation (GLOP), conflict pairs as cliques; bound from its duals",
            "bound": lp.bound, "lp_objective": lp.lp_objective,
            "rounded_objective": lp.objective if lp.chosen is not None else None,
            "fractional": lp.fractional,
            **({"decomposition": {k: v for k, v in lp.decomposition.items() if k != "parameters"}}
               if lp.decomposition is not None else {})}


def _lp_only(problem: Problem, lp: lpround.LpAnswer, chosen: frozenset[int], spent: float) -> Selection:
    """The rounded LP answer when the limit left no time for CP-SAT's search."""
    obj = lp.objective
    stats: dict[str, Any] = {
        "solver": "glop", "status": "feasible", "build_and_solve_s": spent, "hint": "lp_rounding",
        "hint_objective": obj, "model_fingerprint": fingerprint(problem),
        "proof": {"method": "LP relaxation (GLOP): its rounded answer, and the bound from its duals",
                  "proven": False, "bound": max(obj, lp.bound),
                  "stopped_by": "the time limit, before CP-SAT's search: not reproducible run to run",
                  "lp": _lp_stats(lp)}}
    reasons = _shared_reasons(problem, chosen, "part of the best selection found in the time limit")
    return Selection(BudgetStrategy.OPTIMAL, chosen, reasons, "feasible", obj, max(obj, lp.bound), stats=stats)


def _decomposed(problem: Problem, lp: lpround.LpAnswer, chosen: frozenset[int], spent: float) -> Selection:
    """The LP path's answer (the decomposition's master, or the rounding) with its bound,
    when its gap is small enough that no CP-SAT search follows (``lpround.good_enough``)."""
    obj = lp.objective
    bound = max(obj, lp.bound)
    proven = obj >= lp.bound
    status = "optimal" if proven else "feasible"
    dec = lp.decomposition or {}
    stats: dict[str, Any] = {
        "solver": "lp-decomposition", "status": status, "build_and_solve_s": spent,
        "hint": "lp_rounding", "hint_objective": obj, "model_fingerprint": fingerprint(problem),
        "parameters": dec.get("parameters"),
        "proof": {"method": "Lagrangian decomposition by group: the LP relaxation's duals, each group solved "
                            "exactly by the tree DP, column generation; the answer is the integer master's",
                  "proven": proven, "bound": bound,
                  "stopped_by": ("proof of optimality" if proven else
                                 "wall-clock safety net (the decomposition's rounds): not reproducible run to run"
                                 if dec.get("cut_by_wall_clock") else
                                 "the decomposition's gap within lpround.GOOD_GAP (reproducible: a fixed "
                                 "number of rounds and the master's deterministic limit)"),
                  "lp": _lp_stats(lp)}}
    why = "part of the optimal selection" if proven else "part of the best selection found in the time limit"
    return Selection(BudgetStrategy.OPTIMAL, chosen, _shared_reasons(problem, chosen, why), status, obj, bound,
                     stats=stats)


def solve(problem: Problem, *, time_limit_s: float | None = None,
          deadline: float | None = None,
          on_hint: Callable[[Selection], None] | None = None) -> Selection:
    """Solve ``problem`` exactly within ``time_limit_s`` (default: the policy's) and before
    ``deadline`` (a ``time.perf_counter()`` instant: the whole call's limit, so time spent
    before the solver — counting tokens, building the model — is not given twice)."""
    t0 = time.perf_counter()
    trivial = trivial_choice(problem)
    if trivial is not None:
        obj = objective_of(problem.values, trivial)
        reasons = _shared_reasons(problem, trivial, "everything relevant fits every rule; no search needed")
        return Selection(BudgetStrategy.OPTIMAL, trivial, reasons, "trivial", obj, obj,
                         stats={"wall_time_s": time.perf_counter() - t0, "solver": "skipped",
                                "proof": {"method": "every relevant item fits every rule: nothing to choose",
                                          "proven": True, "bound": obj}})
    limit = problem.settings.time_limit_s if time_limit_s is None else time_limit_s
    if knapsack.applies(problem):
        return knapsack.solve(problem, limit, deadline=deadline)
    if treeknap.applies(problem):  # budget + exclusive hierarchy: the tree DP proves it
        tree = treeknap.solve(problem)
        if tree is not None:
            return tree
    # OR-Tools is imported at the first solve that needs it (~0.5 s of CPU, pandas
    # included): a one-time cost of the process, not of this decision, so neither limit
    # counts it -- otherwise the first decision of a process (or any decision under load)
    # would fall back where the next one is proven.
    t_import = time.perf_counter()
    load_cp_model()
    imported_s = time.perf_counter() - t_import
    t0 += imported_s
    if deadline is not None:
        deadline += imported_s
    hint = best_heuristic(problem)
    if on_hint is not None:  # the façade reuses it if it has to fall back
        on_hint(hint)
    # A large model gets the LP relaxation first (deterministic: by size and limit alone):
    # its rounded answer is the hint when it beats the heuristics, its bound caps CP-SAT's.
    lp = None
    if lpround.applies(problem, limit):
        now = time.perf_counter()
        left = min(limit - (now - t0), (deadline or math.inf) - now)
        # Its build cannot be interrupted: on a machine too loaded to finish it in the time
        # left, the call keeps its limit and goes on without it (recorded: no ``proof.lp``).
        if left >= lpround.expected_s(problem):
            master = cpsat_params.parameters(
                problem.settings, deterministic_s=lpround.MASTER_SHARE * cpsat_params.deterministic_limit(limit),
                wall_s=max(cpsat_params.MIN_LIMIT_S, left), log=False)
            lp = lpround.solve(problem, left, hint=None if hint.unmet else hint.chosen, master_params=master)
            if lp is not None and lp.decomposition is not None:
                lp.decomposition["parameters"] = master
    lp_answer = lp.chosen if lp is not None and lp.objective > hint.objective else None
    if lp is not None and lp_answer is not None and lpround.good_enough(lp, problem.settings.relative_gap):
        # The decomposition's answer is within the gap the LP path aims at: CP-SAT's
        # neighbourhood search would spend the rest of the limit for a few units.
        return _decomposed(problem, lp, lp_answer, time.perf_counter() - t0)
    start = hint.chosen if lp_answer is None else lp_answer
    # With an LP answer, CP-SAT searches the LP's neighbourhood (RINS): the items the LP
    # takes no part of are left out of the model. CP-SAT closes this small model within
    # the limit, where on the whole model it never leaves the root; its bound is then the
    # neighbourhood's, so the answer's bound is the LP's (CP-SAT's own is not one).
    for building in (False, True):  # the clock is read before the model is built, and after
        if building:
            cm = compile_problem(problem, only=None if lp is None or lp_answer is None else lp.neighbourhood())
            for i, var in cm.take.items():
                cm.model.add_hint(var, 1 if i in start else 0)
        now = time.perf_counter()
        remaining = limit - (now - t0)
        if deadline is not None:
            remaining = min(remaining, deadline - now)
        if remaining <= 0 and lp is not None and lp_answer is not None:
            # No time left for the search: the rounded LP answer, with the LP's proven bound.
            return _lp_only(problem, lp, lp_answer, now - t0)
        if remaining <= 0:
            # No time left: building the model (a second or more at n = 10,000) would only
            # delay the fallback.
            return Selection(BudgetStrategy.OPTIMAL, frozenset(), {}, "deadline", 0, None,
                             stats={"solver": "cp-sat", "status": "deadline", "build_and_solve_s": now - t0})
    # The deterministic limit comes from the limit alone; the clock only sets the net.
    params = cpsat_params.parameters(problem.settings, deterministic_s=cpsat_params.deterministic_limit(limit),
                                     wall_s=remaining, log=True)
    solver = cpsat_params.solver(params)
    lines: list[str] = []
    solver.log_callback = lines.append
    code = cpsat_params.run(solver, cm.model)
    status = _status(code)
    stats: dict[str, Any] = {
        "solver": "cp-sat",
        "status": status,
        "wall_time_s": solver.wall_time,
        "deterministic_time": solver.response_proto.deterministic_time,
        "branches": solver.num_branches,
        "conflicts": solver.num_conflicts,
        "parameters": params,
        "model_fingerprint": fingerprint(problem),
        "tie_break": cm.tie_break,
        "hint": hint.strategy.value if lp is None or lp_answer is None else "lp_rounding",
        "hint_objective": hint.objective if lp is None or lp_answer is None else lp.objective,
        "build_and_solve_s": time.perf_counter() - t0,
    }
    if status == "model_invalid":
        # CP-SAT's own explanation; its first line names the problem, the rest is the proto.
        stats["invalid_reason"] = cm.model.validate().split("\n", 1)[0].rstrip(" {:")
    if lp is not None:
        stats["lp"] = _lp_stats(lp)
    if status not in ("optimal", "feasible"):
        return Selection(BudgetStrategy.OPTIMAL, frozenset(), {}, status, 0, None,
                         stats=stats, log_lines=tuple(lines))
    chosen = frozenset(i for i, var in cm.take.items() if solver.boolean_value(var))
    obj = objective_of(problem.values, chosen)
    # The bound is on the scaled objective; map it back to value units. CP-SAT reports
    # OPTIMAL when a relative_gap_limit is met too: only a closed bound is "optimal" here.
    slack = problem.capacity if cm.tie_break else 0  # the token term is at most the capacity
    bound = max(obj, int(solver.best_objective_bound + slack) // cm.multiplier)
    if lp is not None and lp_answer is not None:
        stats["neighbourhood"] = {"free": len(lp.neighbourhood()), "status": status, "objective": obj}
        if status == "optimal":
            stats["status"] = "optimal in the LP's neighbourhood"
        status, bound = "feasible", max(obj, lp.bound)  # a bound of the neighbourhood only
        stats["bound_from"] = "lp"
    elif lp is not None and lp.bound < bound:
        bound = max(obj, lp.bound)  # the LP's proven bound is the tighter one
        stats["bound_from"] = "lp"
    if status != "optimal" and lp is not None and lp_answer is not None and lp.objective > obj:
        # At the limit the rounded LP answer (every rule checked exactly) may be the best.
        stats["kept_lp_rounding"] = True
        chosen, obj = lp_answer, lp.objective
    if status == "optimal" and bound > obj and problem.settings.relative_gap > 0:
        status = "feasible"
        stats["status"] = "optimal within relative_gap_limit"
    elif status == "optimal":
        bound = obj
    if obj < hint.objective and not hint.unmet:
        # Never below greedy: at the limit the heuristic answer may still be better —
        # when it meets every minimum (one that leaves a minimum unmet is not a solution).
        stats["kept_heuristic"] = True
        chosen, obj = hint.chosen, hint.objective
    method = "CP-SAT search (its proof of optimality, or its best bound at the limit)"
    if "neighbourhood" in stats:
        method = ("CP-SAT search of the LP relaxation's neighbourhood (items the LP takes no part of fixed "
                  "out); the bound is the LP relaxation's (from GLOP's duals)")
    elif stats.get("bound_from") == "lp":
        method = "CP-SAT search at the limit; the bound is the LP relaxation's (from GLOP's duals), tighter than CP-SAT's"
    stats["proof"] = {"method": method,
                      "proven": status == "optimal", "bound": max(bound, obj),
                      "stopped_by": stopped_by(status, stats, params)}
    if lp is not None:
        stats["proof"]["lp"] = stats.pop("lp")
    reasons = _shared_reasons(problem, chosen, "part of the optimal selection" if status == "optimal"
                              else "part of the best selection found in the time limit")
    return Selection(BudgetStrategy.OPTIMAL, chosen, reasons, status, obj, max(bound, obj),
                     stats=stats, log_lines=tuple(lines))
