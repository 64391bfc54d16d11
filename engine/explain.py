"""Infeasibility explained: a minimal set of conflicting rules, by policy path and file:line.

What goes in: a Problem whose hard rules cannot all hold. What comes out: an
:class:`~engine.errors.InfeasibleError` whose ``details["core"]`` lists a *minimal* set of
rules — dropping any one of them makes the rest satisfiable.

How (CP-SAT gives a useful core only for a model without objective, on one worker):
compile with one enforcement literal per rule, no objective; add every literal as an
assumption; read ``sufficient_assumptions_for_infeasibility()``; then shrink by deletion —
try the core without each member in turn and drop it whenever the rest stays infeasible.
"""

from __future__ import annotations

from collections.abc import Sequence

from ortools.sat.python import cp_model

from .compile import compile_problem
from .errors import InfeasibleError
from .problem import Problem

#: Time allowed for each feasibility check while shrinking a core.
CHECK_TIME_S = 2.0


def _infeasible_with(problem: Problem, keys: Sequence[str]) -> tuple[bool | None, list[str]]:
    """(infeasible?, a sufficient subset of ``keys``) with only ``keys`` enforced.
    ``None`` means the check ran out of time."""
    cm = compile_problem(problem, guarded=True, objective=False)
    wanted = set(keys)
    for key, lit in cm.guards.items():
        if key not in wanted:
            cm.model.add(lit == 0)
    cm.model.add_assumptions([cm.guards[k] for k in keys])
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = CHECK_TIME_S
    status = solver.solve(cm.model)
    if status == cp_model.INFEASIBLE:
        by_index = {lit.index: k for k, lit in cm.guards.items()}
        core = [by_index[i] for i in solver.sufficient_assumptions_for_infeasibility() if i in by_index]
        return True, core or list(keys)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return False, []
    return None, list(keys)


def minimal_core(problem: Problem) -> tuple[list[str], bool]:
    """Keys of a minimal conflicting rule set, and whether minimality was proven
    (False only when a check hit its time limit)."""
    cm = compile_problem(problem, guarded=True, objective=False)
    all_keys = list(cm.guards)
    infeasible, core = _infeasible_with(problem, all_keys)
    if not infeasible:
        return [], infeasible is None
    proven = True
    i = 0
    while i < len(core):
        trial = core[:i] + core[i + 1:]
        still, sub = _infeasible_with(problem, trial) if trial else (False, [])
        if still:
            keep = set(sub)
            core = [k for k in trial if k in keep]
        else:
            if still is None:
                proven = False
            i += 1
    return core, proven


def infeasible_error(problem: Problem) -> InfeasibleError:
    """The error to raise for an infeasible ``problem`` (core computed here)."""
    core, proven = minimal_core(problem)
    cm = compile_problem(problem, guarded=True, objective=False)
    rules = [cm.guard_rules[k] for k in core]
    entries = [
        {"rule": r.label, "key": r.key, "path": r.path,
         "location": str(r.location) if r.location else None}
        for r in rules
    ]
    budget = [r for r in rules if r.key == "budget"]
    others = [r for r in rules if r.key != "budget"]

    def cite(r: object) -> str:
        loc = getattr(r, "location", None)
        return f"{r.label} ({r.path}{', ' + str(loc) if loc else ''})"  # type: ignore[attr-defined]

    if budget and others:
        text = " and ".join(cite(r) for r in others) + f" cannot fit in {cite(budget[0])}"
    elif rules:
        text = " and ".join(cite(r) for r in rules) + " cannot all hold"
    else:
        text = "the rules cannot all hold, and no smaller explanation was found in time"
    if not proven:
        text += " (a check timed out: this set may not be minimal)"
    first = rules[0] if rules else None
    return InfeasibleError(
        "allocation.infeasible",
        text + "; relax one of them",
        path=first.path if first else "$.spec",
        location=first.location if first else None,
        details={"core": entries, "minimal": proven},
    )
