"""BALANCED: the budget split across levels in proportion to their shares, then refilled.

The seed's idea ("ensure representation from different levels") made precise:

1. Pins are taken, then level minimums are filled (as in the greedy family).
2. The budget left is divided among the levels that still have candidates. A level's
   weight is its policy ``share`` (``spec.levels.<LEVEL>.share``); levels without a share
   split what the explicit shares leave (``1 - sum(shares)``) equally; with no shares at
   all every level weighs the same. Level L gets ``floor(left * weight_L / sum(weights))``
   tokens.
3. Each level fills its own share with its items in relevance order (skipping an item
   that does not fit the share or any hard rule).
4. Unspent budget is redistributed: one more pass over all remaining items in relevance
   order, under the hard rules and the whole remaining budget.

Deterministic: levels are visited by name, items by relevance then input order.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..policy import BudgetStrategy
from ..problem import Problem
from ..reasons import Reason, ReasonCode
from . import Selection, objective_of
from ..feasibility import Filler, relevance_order


def level_weights(problem: Problem, levels: list[str]) -> dict[str, float]:
    """Each present level's weight, as documented in the module docstring."""
    explicit = {lv: problem.level_shares[lv] for lv in levels if lv in problem.level_shares}
    rest = [lv for lv in levels if lv not in explicit]
    if not explicit:
        return dict.fromkeys(levels, 1.0)
    spare = max(0.0, 1.0 - sum(explicit.values()))
    out = dict(explicit)
    for lv in rest:
        out[lv] = spare / len(rest)
    return out


def _levels(problem: Problem) -> Sequence[str]:
    """Each item's level: the Problem's column (a Problem built without it: the candidates')."""
    if len(problem.levels) == len(problem.candidates):
        return problem.levels
    return [c.level for c in problem.candidates]


def balanced(problem: Problem) -> Selection:
    """Balanced allocation (see module docstring)."""
    f = Filler(problem)
    for pin in problem.pins:
        f.add(pin.index, Reason(ReasonCode.PINNED, f"matched {pin.path}", pin.path))
    order = relevance_order(problem)
    f.fill_minimums(order)
    level_of, w = _levels(problem), problem.weights
    remaining = [i for i in order if i not in f.chosen]
    by_level: dict[str, list[int]] = {}
    for i in remaining:
        by_level.setdefault(level_of[i], []).append(i)
    levels = sorted(by_level)
    weights = level_weights(problem, levels)
    total = sum(weights.values())
    left = problem.capacity - f.used[0]
    shares = {lv: int(left * weights[lv] / total) if total > 0 else 0 for lv in levels}
    spent = dict.fromkeys(levels, 0)
    for lv in levels:
        for i in by_level[lv]:  # the level's items, in relevance order
            if spent[lv] + w[i] > shares[lv]:
                continue
            if f.blocker(i) is None:
                f.add(i, Reason(ReasonCode.SELECTED, f"within level {lv}'s share of {shares[lv]:,} tokens",
                                "$.spec.levels"))
                spent[lv] += w[i]
    for i in remaining:
        if i not in f.chosen:
            f.try_add(i, Reason(ReasonCode.SELECTED, "fits after unspent shares were redistributed"))
    chosen = frozenset(f.chosen)
    return Selection(BudgetStrategy.BALANCED, chosen, f.selected_reasons(), "heuristic",
                     objective_of(problem.values, chosen), unmet=f.unmet(),
                     stats={"level_shares_tokens": shares, "level_spent_tokens": spent})
