"""A catalog of small problems with hand-computed answers, run against every strategy.

Each entry: items as (id, relevance, tokens), the budget, and the expected included ids
per strategy (``optimal`` is the hand-computed optimum). Every strategy must also stay
within the budget and account for every item.
"""

from __future__ import annotations

import pytest

from engine import BudgetItem, BudgetStrategy, allocate
from engine.policy import Objective, Policy, Transform

#: The catalog's optima are hand-computed on raw relevance sums.
RAW = Objective(Transform.IDENTITY)

G, B, O, D = (BudgetStrategy.GREEDY, BudgetStrategy.BALANCED, BudgetStrategy.OPTIMAL,
              BudgetStrategy.DENSITY)

CATALOG = {
    # One big item blocks two smaller ones whose sum is worth more.
    "big_blocks_two": ([("a", 0.9, 6), ("b", 0.5, 5), ("c", 0.5, 5)], 10,
                       {G: {"a"}, B: {"a"}, D: {"a"}, O: {"b", "c"}}),
    # Density order finds what relevance order misses.
    "density_wins": ([("a", 0.6, 10), ("b", 0.5, 5), ("c", 0.4, 5)], 10,
                     {G: {"a"}, B: {"a"}, D: {"b", "c"}, O: {"b", "c"}}),
    # Everything fits: no choice to make (the solver is skipped).
    "all_fit": ([("a", 0.3, 10), ("b", 0.2, 10), ("c", 0.1, 10)], 100,
                {G: {"a", "b", "c"}, B: {"a", "b", "c"}, D: {"a", "b", "c"}, O: {"a", "b", "c"}}),
    # An item larger than the whole budget is excluded as too large.
    "too_large": ([("x", 0.99, 50), ("y", 0.1, 10), ("z", 0.2, 10)], 20,
                  {G: {"y", "z"}, B: {"y", "z"}, D: {"y", "z"}, O: {"y", "z"}}),
    # Classic 0/1 knapsack: values 6,10,12 weights 1,2,3, capacity 5 -> optimum 22 (items 2,3).
    "textbook": ([("i1", 0.6, 1), ("i2", 1.0, 2), ("i3", 0.12 * 10, 3)], 5,
                 {G: {"i3", "i2"}, B: {"i3", "i2"}, D: {"i1", "i2"}, O: {"i2", "i3"}}),
    # Zero-relevance filler: greedy takes it (seed behaviour), optimal does not spend tokens on it.
    "zero_value": ([("a", 0.5, 5), ("zero", 0.0, 5)], 20,
                   {G: {"a", "zero"}, B: {"a", "zero"}, D: {"a", "zero"}, O: {"a"}}),
    # Exact fit at the boundary.
    "exact_fit": ([("a", 0.5, 7), ("b", 0.4, 3), ("c", 0.3, 1)], 10,
                  {G: {"a", "b"}, B: {"a", "b"}, D: {"b", "c"}, O: {"a", "b"}}),
}


@pytest.mark.parametrize("name", sorted(CATALOG))
@pytest.mark.parametrize("strategy", [G, B, O, D], ids=lambda s: s.value)
def test_catalog(name: str, strategy: BudgetStrategy) -> None:
    rows, budget, expected = CATALOG[name]
    items = [BudgetItem(f"text {i}", r, t, i, "PARAGRAPH", {}) for i, r, t in rows]
    # The token counts are the instance's weights, not counts of the placeholder text.
    alloc = allocate(items, Policy.default(budget, separator="", strategy=strategy, objective=RAW,
                                           counts="caller"))
    got = {d.source_id for d in alloc.included}
    assert got == expected[strategy]
    assert sum(d.tokens for d in alloc.included) <= budget
    assert len(alloc.decisions) == len(items)
    if strategy is O:
        assert alloc.selection.status in ("optimal", "trivial")


def test_reasons_name_the_numbers() -> None:
    rows, budget, _ = CATALOG["big_blocks_two"]
    items = [BudgetItem(f"text {i}", r, t, i, "PARAGRAPH", {}) for i, r, t in rows]
    g = allocate(items, Policy.default(budget, separator="", strategy=G, objective=RAW))
    ev = {d.source_id: (d.reason.code.value, d.reason.evidence) for d in g.decisions}
    assert ev["b"] == ("over_budget", "needed 5 tokens, 4 left of 10")
    o = allocate(items, Policy.default(budget, separator="", strategy=O, objective=RAW))
    ev = {d.source_id: (d.reason.code.value, d.reason.evidence) for d in o.decisions}
    assert ev["a"] == ("over_budget", "needed 6 tokens, 0 left of 10")
    assert ev["b"][0] == "selected"
