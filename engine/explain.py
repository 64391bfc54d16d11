"""Infeasibility explained: a minimal set of conflicting rules, by policy path and file:line.

What goes in: a Problem whose hard rules cannot all hold. What comes out: an
:class:`~engine.errors.InfeasibleError` whose ``details["core"]`` lists a set of conflicting
rules and ``details["minimal"]`` whether it is proven *minimal* — dropping any one of them
makes the rest satisfiable.

How (CP-SAT gives a useful core only for a model without objective, on one worker):
compile once with one enforcement literal per rule, no objective; assume the literals of
the rules under test (an unassumed rule is simply off); read
``sufficient_assumptions_for_infeasibility()``; then shrink by deletion — try the core
without each member in turn and drop it whenever the rest stays infeasible.

Time: the whole explanation is bounded by the call's time limit (the policy's
``solver.time_limit_s`` unless the call overrides it). Its checks share one
deterministic budget, :func:`engine.strategies.params.deterministic_limit` of that limit,
each spending what CP-SAT reports it used, so the same input gives the same core on every
machine; the wall clock is the safety net. When a check is cut short, or the budget runs
out before every member was tried, the core is still a conflicting set but
``minimal`` is ``False`` — never claimed without proof.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from .compile import CompiledModel, compile_problem, load_cp_model
from .errors import InfeasibleError
from .problem import Problem
from .strategies import params as cpsat_params


@dataclass(slots=True)
class _Budget:
    """What the explanation may still spend: deterministic time, and a wall deadline."""

    deterministic_s: float
    deadline: float

    def left(self) -> bool:
        return self.deterministic_s > 0 and self.deadline - time.perf_counter() > cpsat_params.MIN_LIMIT_S


def _infeasible_with(cm: CompiledModel, problem: Problem, keys: Sequence[str],
                     budget: _Budget) -> tuple[bool | None, list[str]]:
    """(infeasible?, a sufficient subset of ``keys``) with only ``keys`` enforced.
    ``None`` means the check could not decide within what is left of the budget."""
    if not budget.left():
        return None, list(keys)
    cm.model.clear_assumptions()
    cm.model.add_assumptions([cm.guards[k] for k in keys])
    solver = cpsat_params.solver(cpsat_params.parameters(
        problem.settings, deterministic_s=budget.deterministic_s,
        wall_s=budget.deadline - time.perf_counter(), presolve=True, relative_gap=0.0, workers=1))
    status = cpsat_params.run(solver, cm.model)
    budget.deterministic_s -= float(solver.response_proto.deterministic_time)
    cp_model = load_cp_model()
    if status == cp_model.INFEASIBLE:
        by_index = {lit.index: k for k, lit in cm.guards.items()}
        core = [by_index[i] for i in solver.sufficient_assumptions_for_infeasibility() if i in by_index]
        return True, core or list(keys)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return False, []
    return None, list(keys)


def minimal_core(problem: Problem, *, time_limit_s: float | None = None,
                 model: CompiledModel | None = None) -> tuple[list[str], bool]:
    """Keys of a conflicting rule set, and whether it is proven minimal (False when a
    check or the time limit cut the shrinking short). ``time_limit_s`` defaults to the
    policy's; ``model`` is the guarded, objective-free model when the caller has it."""
    limit = problem.settings.time_limit_s if time_limit_s is None else time_limit_s
    t0 = time.perf_counter()
    cm = model or compile_problem(problem, guarded=True, objective=False)
    budget = _Budget(cpsat_params.deterministic_limit(limit), t0 + limit)
    all_keys = list(cm.guards)
    infeasible, core = _infeasible_with(cm, problem, all_keys, budget)
    if infeasible is None:  # not even the whole set was decided: every rule, unproven
        return all_keys, False
    if not infeasible:
        return [], False
    proven = True
    i = 0
    while i < len(core):
        trial = core[:i] + core[i + 1:]
        still, sub = _infeasible_with(cm, problem, trial, budget) if trial else (False, [])
        if still:
            keep = set(sub)
            core = [k for k in trial if k in keep]
        else:
            if still is None:
                proven = False
            i += 1
    return core, proven


def infeasible_error(problem: Problem, *, time_limit_s: float | None = None) -> InfeasibleError:
    """The error to raise for an infeasible ``problem`` (core computed here, within
    ``time_limit_s``, by default the policy's ``solver.time_limit_s``)."""
    cm = compile_problem(problem, guarded=True, objective=False)
    core, proven = minimal_core(problem, time_limit_s=time_limit_s, model=cm)
    rules = [cm.guard_rules[k] for k in core]
    entries = [
        {"rule": r.label, "key": r.key, "path": r.path,
         "location": str(r.location) if r.location else None}
        for r in rules
    ]
    budget = [r for r in rules if r is problem.budget]
    others = [r for r in rules if r is not problem.budget]

    def cite(r: object) -> str:
        loc = getattr(r, "location", None)
        return f"{r.label} ({r.path}{', ' + str(loc) if loc else ''})"  # type: ignore[attr-defined]

    if budget and others:
        text = " and ".join(cite(r) for r in others) + f" cannot fit in {cite(budget[0])}"
    elif rules:
        text = " and ".join(cite(r) for r in rules) + " cannot all hold"
    else:
        text = "the rules cannot all hold, and no explanation naming them was found"
    if not proven:
        limit = problem.settings.time_limit_s if time_limit_s is None else time_limit_s
        text += (f" (the explanation stopped at the time limit of {limit:g} s: this set conflicts but may "
                 "not be minimal; raise solver.time_limit_s for a minimal one)") if rules else ""
    first = rules[0] if rules else None
    return InfeasibleError(
        "allocation.infeasible",
        text + "; relax one of them",
        path=first.path if first else "$.spec",
        location=first.location if first else None,
        details={"core": entries, "minimal": proven},
    )
