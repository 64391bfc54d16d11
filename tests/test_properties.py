"""Hypothesis properties of every strategy on budget-only problems."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import BudgetItem, BudgetStrategy, allocate
from engine.candidates import from_budget_items
from engine.policy import Policy
from engine.problem import reduce
from engine.strategies import cpsat, greedy

ALL = list(BudgetStrategy)

items_st = st.lists(
    st.tuples(st.floats(0, 1, allow_nan=False), st.integers(0, 60)),
    min_size=0, max_size=12,
).map(lambda rows: [BudgetItem(f"c{k}", r, t, f"id{k}", "PARAGRAPH", {}) for k, (r, t) in enumerate(rows)])

cfg = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def policy(budget: int, strategy: BudgetStrategy) -> Policy:
    return Policy.default(budget, separator="", strategy=strategy)


@cfg
@given(items=items_st, budget=st.integers(1, 200), strategy=st.sampled_from(ALL))
def test_never_over_budget_and_everyone_accounted_once(items, budget, strategy) -> None:
    alloc = allocate(items, policy(budget, strategy))
    used = sum(d.tokens for d in alloc.included)
    assert used <= budget
    assert [d.source_id for d in alloc.decisions] == [i.source_id for i in items]
    inc = {d.source_id for d in alloc.included}
    exc = {d.source_id for d in alloc.excluded}
    assert not (inc & exc) and inc | exc == {i.source_id for i in items}


@cfg
@given(items=items_st, budget=st.integers(1, 200))
def test_optimal_equals_brute_force_and_beats_greedy(items, budget) -> None:
    problem = reduce(policy(budget, BudgetStrategy.OPTIMAL), from_budget_items(items))
    w, v = problem.weights, problem.values
    best = 0
    act = problem.active
    for r in range(len(act) + 1):
        for combo in itertools.combinations(act, r):
            if sum(w[i] for i in combo) <= problem.capacity:
                best = max(best, sum(v[i] for i in combo))
    sel = cpsat.solve(problem)
    assert sel.status in ("optimal", "trivial")
    assert sel.objective == best
    assert sel.objective >= greedy.greedy(problem).objective
    assert sel.objective >= greedy.density(problem).objective


@settings(max_examples=10, deadline=None)
@given(items=items_st.filter(lambda x: len(x) >= 5), budget=st.integers(20, 120),
       strategy=st.sampled_from(ALL))
def test_same_input_same_allocation_20_times(items, budget, strategy) -> None:
    runs = set()
    for _ in range(20):
        alloc = allocate(items, policy(budget, strategy))
        runs.add((repr([d.reason.to_dict() for d in alloc.decisions]), alloc.context_order))
    assert len(runs) == 1
