"""The greedy family: relevance order (the seed's rule) and density order.

Both honour every hard maximum of the Problem (budget, level and source caps,
prefer-parent, hierarchy chains), include pins first, then fill level minimums with the
best items of each level, then everything else in strategy order. A minimum they cannot
meet is reported in ``Selection.unmet``, never hidden.

Why density exists: relevance-greedy spends the budget on the first big item it meets,
and on knapsack-like inputs captures only about half of the attainable relevance; ordering
by value per token is within a fraction of a percent of optimal on the same inputs (see
``bench/`` and the README's table).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..policy import BudgetStrategy
from ..feasibility import Filler, cap_reason, relevance_order
from ..problem import Problem
from ..reasons import Reason, ReasonCode
from . import Selection, objective_of

def density_order(problem: Problem) -> list[int]:
    """Active items by scaled value per token, then relevance order for ties."""
    rank = {i: r for r, i in enumerate(problem.order)}
    w, v = problem.weights, problem.values
    return sorted(relevance_order(problem), key=lambda i: (-(v[i] / max(1, w[i])), rank[i]))


_SELECTED = Reason(ReasonCode.SELECTED, "fits every rule in strategy order")


def fill(problem: Problem, order: Sequence[int], strategy: BudgetStrategy) -> Selection:
    """Pins, then minimums, then ``order``: the greedy skeleton shared by the family."""
    if _only_budget(problem):
        return _fast_fill(problem, order, strategy)
    f = Filler(problem)
    for pin in problem.pins:
        f.add(pin.index, Reason(ReasonCode.PINNED, f"matched {pin.path}", pin.path))
    f.fill_minimums(order)
    for i in order:
        if i not in f.chosen:
            f.try_add(i, _SELECTED)
    chosen = frozenset(f.chosen)
    return Selection(strategy, chosen, f.selected_reasons(), "heuristic",
                     objective_of(problem.values, chosen), unmet=f.unmet())


def _only_budget(problem: Problem) -> bool:
    return not problem.constraints and not problem.chains and not problem.pins


def _fast_fill(problem: Problem, order: Sequence[int], strategy: BudgetStrategy) -> Selection:
    """The common case (budget only) without the bookkeeping of :class:`Filler`."""
    w = problem.weights
    cap = problem.capacity
    used = 0
    chosen: list[int] = []
    rejected: dict[int, Reason] = {}
    budget = problem.budget
    memo: dict[tuple[int, int], Reason] = {}  # reasons are frozen: share equal ones
    for i in order:
        if used + w[i] <= cap:
            used += w[i]
            chosen.append(i)
        else:
            reason = memo.get((used, w[i]))
            if reason is None:
                reason = memo[(used, w[i])] = cap_reason(budget, used, w[i], problem)
            rejected[i] = reason
    reasons = dict.fromkeys(chosen, _SELECTED)
    reasons.update(rejected)
    cs = frozenset(chosen)
    return Selection(strategy, cs, reasons, "heuristic", objective_of(problem.values, cs))


def greedy(problem: Problem) -> Selection:
    """The seed's GREEDY: highest relevance first, skip what does not fit."""
    return fill(problem, relevance_order(problem), BudgetStrategy.GREEDY)


def density(problem: Problem) -> Selection:
    """DENSITY: highest value per token first, skip what does not fit."""
    return fill(problem, density_order(problem), BudgetStrategy.DENSITY)


def best_heuristic(problem: Problem) -> Selection:
    """The better of greedy and density by objective (ties: greedy): the fallback and the
    CP-SAT hint."""
    g, d = greedy(problem), density(problem)
    if len(d.unmet) < len(g.unmet) or (len(d.unmet) == len(g.unmet) and d.objective > g.objective):
        return d
    return g
