"""The façade: the one place that knows the order of the stages and the fallback rule.

``allocate(candidates, policy)``::

    candidates ─▶ tuple[Candidate] ─reduce─▶ Problem ─strategy─▶ Selection
        └ OPTIMAL: solver failure ─▶ greedy fallback (recorded), or SolverError when
          the policy says ``fallback: error``
        └ hard rules contradict each other ─▶ InfeasibleError naming a minimal core
    (Problem, Selection) ─build─▶ Allocation ─verify─▶ () or VerificationError (our bug)

A *solver failure* is exactly one of: CP-SAT returned ``unknown`` (no solution within
the limit) or ``model_invalid``; the time limit was used up before the search could
start (``deadline``); or CP-SAT raised inside its own ``solve``
(:class:`~engine.errors.SolverBackendError`). Those, and only those, fall back. Any other
exception — in reducing, compiling, a heuristic or our code around the solver — is a bug
and propagates unchanged (the CLI reports it as exit 1), so it never looks like a
solver time-out. OR-Tools is a required dependency, imported at the first solve that
needs CP-SAT (:func:`engine.compile.load_cp_model`): a budget-only problem the dynamic
programs prove (``knapsack``'s minknap/DP core, ``treeknap``) never loads it or the
pandas it imports. A missing or broken install is then a ``SolverError``
(``solver.ortools_unavailable``) raised at that first use — never a fallback.

Infeasibility is never a reason to fall back: it is a property of the inputs, and the
error says which rules conflict.
"""

from __future__ import annotations

import time
from dataclasses import replace
from operator import attrgetter
from collections.abc import Iterable, Mapping
from typing import Any

from .allocation import Allocation, build
from .candidates import BudgetItem, Candidate, from_budget_items, from_mappings
from .errors import CandidateError, InfeasibleError, SolverBackendError, SolverError, VerificationError
from .explain import infeasible_error
from .counts import count_tokens, policy_tokenizer
from .policy import BudgetStrategy, Fallback, Policy, TimeLimitScope
from .problem import Problem, reduce
from .strategies import Selection, balanced, cpsat, greedy
from .verify import verify

_CONTENT = attrgetter("content")

#: Time kept back from the solver per candidate for the stages after it.
POST_SOLVE_S_PER_ITEM = 6e-6

_HEURISTICS = {
    BudgetStrategy.GREEDY: greedy.greedy,
    BudgetStrategy.DENSITY: greedy.density,
    BudgetStrategy.BALANCED: balanced.balanced,
}


def to_candidates(items: Iterable[Any]) -> tuple[Candidate, ...]:
    """Accept ``BudgetItem``s, ``Candidate``s or mappings in the candidates-file shape."""
    items = list(items)
    kinds = set(map(type, items))
    if kinds <= {Candidate} or all(isinstance(x, Candidate) for x in items):
        return tuple(items)
    if kinds <= {BudgetItem} or all(isinstance(x, BudgetItem) for x in items):
        return from_budget_items(items)
    if kinds <= {dict} or all(isinstance(x, Mapping) for x in items):
        return from_mappings((x, None) for x in items)
    names = sorted({kind.__name__ for kind in kinds})
    raise CandidateError("candidate.bad_type",
                         f"candidates must all be BudgetItem, Candidate or mappings; got {', '.join(names)}")


def _check_limits(policy: Policy, cands: tuple[Candidate, ...]) -> None:
    limits = policy.limits
    if len(cands) > limits.max_candidates:
        first_over = cands[limits.max_candidates]
        raise CandidateError(
            "candidate.too_many",
            f"{len(cands):,} candidates exceed limits.max_candidates={limits.max_candidates:,} "
            f"(the first one over is {first_over.source_id!r}); send fewer or raise the limit in the policy",
            path=f"$[{first_over.index}]", location=first_over.location)
    # A character is at most 4 UTF-8 bytes: only content longer than a quarter of the
    # limit can be over it, and ASCII content is as many bytes as characters.
    quarter = limits.max_item_bytes // 4
    if max(map(len, map(_CONTENT, cands)), default=0) <= quarter:  # one C-level pass: nothing can be over
        return
    for c in cands:
        text = c.content
        if len(text) <= quarter:
            continue
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        if size > limits.max_item_bytes:
            raise CandidateError(
                "candidate.too_large",
                f"item {c.source_id!r} has {size:,} bytes of content, over "
                f"limits.max_item_bytes={limits.max_item_bytes:,}; split it or raise the limit",
                path=f"$[{c.index}].content", location=c.location)


def _pins_break_caps(problem: Problem, sel: Selection) -> bool:
    chosen = sel.chosen
    if any(r.upper is not None and r.total(chosen) > r.upper for r in problem.linear_rules):
        return True
    return any(sum(1 for m in ch.members if m in chosen) > 1 for ch in problem.chains)


def solve(problem: Problem, strategy: BudgetStrategy, *, time_limit_s: float | None = None,
          fallback: Fallback | None = None, deadline: float | None = None) -> tuple[Selection, str | None]:
    """Run ``strategy`` on ``problem``; returns the selection and the fallback reason."""
    if strategy in _HEURISTICS:
        heuristic = _HEURISTICS[strategy](problem)
        if _pins_break_caps(problem, heuristic):
            raise infeasible_error(problem, time_limit_s=time_limit_s)
        return heuristic, None
    fallback = fallback or problem.settings.fallback
    hints: list[Selection] = []
    sel: Selection | None
    try:
        sel = cpsat.solve(problem, time_limit_s=time_limit_s, deadline=deadline, on_hint=hints.append)
    except SolverBackendError as exc:  # CP-SAT itself raised: a solver failure, not our bug
        why = exc.message
        sel = None
    else:
        if sel.status in ("optimal", "feasible", "trivial"):
            return sel, None
        if sel.status == "infeasible":
            raise infeasible_error(problem, time_limit_s=time_limit_s)
        limit = problem.settings.time_limit_s if time_limit_s is None else time_limit_s
        if sel.status == "deadline":
            why = (f"the time limit of {limit:g} s was used up before the search could start "
                   "(counting tokens and building the model)")
        else:
            why = f"CP-SAT returned {sel.status.upper()} within {limit:g} s"
            if sel.stats.get("invalid_reason"):
                why += f" ({sel.stats['invalid_reason']})"
    if fallback is Fallback.ERROR:
        raise SolverError("solver.no_solution", f"{why}; the policy sets solver.fallback=error",
                          path="$.spec.solver.fallback")
    fb = hints[0] if hints else greedy.best_heuristic(problem)
    if _pins_break_caps(problem, fb):
        raise infeasible_error(problem, time_limit_s=time_limit_s)
    fb = Selection(fb.strategy, fb.chosen, fb.reasons, "fallback", fb.objective,
                   unmet=fb.unmet, stats={**(sel.stats if sel else {}), "fallback": fb.strategy.value},
                   log_lines=sel.log_lines if sel else ())
    return fb, why


def allocate(candidates: Iterable[Any], policy: Policy, *, strategy: BudgetStrategy | None = None,
             time_limit_s: float | None = None, check: bool = True) -> Allocation:
    """Allocate ``candidates`` under ``policy``.

    Args:
        candidates: ``BudgetItem``s, ``Candidate``s or candidate mappings.
        policy: a validated policy (``load_policy`` or ``Policy.default``).
        strategy: overrides the policy's strategy for this call.
        time_limit_s: overrides the policy's solver time limit for this call.
        check: run the independent verifier (on by default; a failure is a bug).

    Returns: the :class:`~engine.allocation.Allocation`.

    Raises: ``CandidateError``, ``InfeasibleError``, ``SolverError``, ``TokenizerError``,
    ``VerificationError``.
    """
    t0 = time.perf_counter()
    cands = to_candidates(candidates)
    _check_limits(policy, cands)
    tc = time.perf_counter()
    counter = policy_tokenizer(policy)  # resolved once; loading it counts as counting
    counted = count_tokens(policy, cands, counter)
    count_s = time.perf_counter() - tc
    problem = reduce(policy, cands, counter=counter, counted=counted)
    t1 = time.perf_counter()
    requested = strategy or policy.strategy
    limit = policy.solver.time_limit_s if time_limit_s is None else time_limit_s
    if policy.solver.time_limit_scope is TimeLimitScope.CALL:
        # The limit bounds the whole call: keep back time for assembling, recounting and
        # verifying after the solver (about 5 µs per candidate measured at 100k, bench/).
        deadline = t0 + limit - min(0.5 * limit, POST_SOLVE_S_PER_ITEM * len(cands))
    else:
        deadline = t1 + limit  # ``solve``: the clock starts once counting and reducing are done
    try:
        sel, why = solve(problem, requested, time_limit_s=time_limit_s, deadline=deadline)
        t2 = time.perf_counter()
        alloc = build(problem, sel, requested, why)
    except InfeasibleError as exc:
        exc.item_tokens = problem.tokens  # the audit record keeps them: replayable without content
        raise
    t3 = time.perf_counter()
    if check:
        violations = verify(policy, cands, alloc, tokenizer=problem.counter)
        if violations:
            raise VerificationError("allocation.verification_failed",
                                    "the allocation broke a rule (this is a ctxbudget bug, please "
                                    "report it): " + "; ".join(map(str, violations)),
                                    path=violations[0].rule,
                                    details={"violations": [v.to_dict() for v in violations]})
    t4 = time.perf_counter()
    timings = {"reduce_s": t1 - t0, "count_s": count_s, "solve_s": t2 - t1, "assemble_s": t3 - t2,
               "verify_s": t4 - t3, "total_s": t4 - t0}
    return replace(alloc, timings=timings)
