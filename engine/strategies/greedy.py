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

from collections.abc import Iterator, Mapping, Sequence

from ..policy import BudgetStrategy
from ..feasibility import Filler, cap_reason, relevance_order
from ..problem import Problem
from ..reasons import Reason, ReasonCode
from . import Selection, objective_of

def density_order(problem: Problem) -> list[int]:
    """Active items by scaled value per token, then relevance order for ties (a reversed
    stable sort of the relevance order keeps equal densities in relevance order)."""
    w, v = problem.weights, problem.values
    density = [x / max(1, y) for x, y in zip(v, w)]
    return sorted(relevance_order(problem), key=density.__getitem__, reverse=True)


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
    """The common case (budget only) without the bookkeeping of :class:`Filler`: one pass
    over the weights, stopped as soon as no item left can fit (every later item is then
    refused with the same room left); the reasons are written when asked for."""
    w = problem.weights
    cap = problem.capacity
    used = 0
    chosen: list[int] = []
    refused: dict[int, int] = {}  # item -> budget used when it was refused
    lightest = min((w[i] for i in order), default=0)
    for pos, i in enumerate(order):
        if cap - used < lightest:
            refused.update(dict.fromkeys(order[pos:], used))
            break
        if used + w[i] <= cap:
            used += w[i]
            chosen.append(i)
        else:
            refused[i] = used
    cs = frozenset(chosen)
    return Selection(strategy, cs, FillReasons(problem, chosen, refused), "heuristic",
                     objective_of(problem.values, cs))


class FillReasons(Mapping[int, Reason]):
    """The reasons of a budget-only fill, each built on first access: ``selected`` for a
    chosen item, the budget's "needed N tokens, M left" for a refused one (equal reasons
    shared). Iterates chosen items in fill order, then refused ones."""

    def __init__(self, problem: Problem, chosen: list[int], refused: dict[int, int]) -> None:
        self._problem = problem
        self._chosen = dict.fromkeys(chosen, _SELECTED)
        self._refused = refused
        self._memo: dict[tuple[int, int], Reason] = {}

    def __getitem__(self, i: int) -> Reason:
        r = self._chosen.get(i)
        if r is not None:
            return r
        used = self._refused[i]
        need = self._problem.weights[i]
        r = self._memo.get((used, need))
        if r is None:
            r = self._memo[(used, need)] = cap_reason(self._problem.budget, used, need, self._problem)
        return r

    def __contains__(self, i: object) -> bool:
        return i in self._chosen or i in self._refused

    def __iter__(self) -> Iterator[int]:
        yield from self._chosen
        yield from self._refused

    def __len__(self) -> int:
        return len(self._chosen) + len(self._refused)


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
