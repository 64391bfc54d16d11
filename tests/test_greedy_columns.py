"""The greedy family over the Problem's columns decides exactly what the per-item code did:
the same chosen items, the same reasons (built lazily now), the same density order and the
same balanced shares. The references below are the earlier implementations, verbatim in
what they decide."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.allocate import allocate, to_candidates
from engine.feasibility import Filler, cap_reason, relevance_order
from engine.policy import BudgetStrategy, LevelRule, Policy
from engine.problem import Problem, reduce
from engine.reasons import Reason, ReasonCode
from engine.strategies import balanced, greedy

SELECTED = Reason(ReasonCode.SELECTED, "fits every rule in strategy order")


def old_fast_fill(problem: Problem, order: list[int]) -> tuple[frozenset[int], dict[int, Reason]]:
    used, chosen, rejected = 0, [], {}
    for i in order:
        if used + problem.weights[i] <= problem.capacity:
            used += problem.weights[i]
            chosen.append(i)
        else:
            rejected[i] = cap_reason(problem.budget, used, problem.weights[i], problem)
    reasons: dict[int, Reason] = dict.fromkeys(chosen, SELECTED)
    reasons.update(rejected)
    return frozenset(chosen), reasons


def old_density_order(problem: Problem) -> list[int]:
    rank = {i: r for r, i in enumerate(problem.order)}
    w, v = problem.weights, problem.values
    return sorted(relevance_order(problem), key=lambda i: (-(v[i] / max(1, w[i])), rank[i]))


def old_balanced_chosen(problem: Problem) -> frozenset[int]:
    f = Filler(problem)
    for pin in problem.pins:
        f.add(pin.index, SELECTED)
    order = relevance_order(problem)
    f.fill_minimums(order)
    cands, w = problem.candidates, problem.weights
    remaining = [i for i in order if i not in f.chosen]
    levels = sorted({cands[i].level for i in remaining})
    weights = balanced.level_weights(problem, levels)
    total = sum(weights.values())
    left = problem.capacity - f.used[0]
    shares = {lv: int(left * weights[lv] / total) if total > 0 else 0 for lv in levels}
    spent = dict.fromkeys(levels, 0)
    for lv in levels:
        for i in remaining:
            if cands[i].level != lv or spent[lv] + w[i] > shares[lv]:
                continue
            if f.blocker(i) is None:
                f.add(i, SELECTED)
                spent[lv] += w[i]
    for i in remaining:
        if i not in f.chosen:
            f.try_add(i, SELECTED)
    return frozenset(f.chosen)


ROWS = st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.3, 0.3, 0.7, 0.9]), st.integers(0, 40),
                          st.sampled_from(["PARAGRAPH", "SENTENCE", "DOCUMENT"])), max_size=14)
CFG = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def problem_of(rows: list[tuple[float, int, str]], budget: int, **policy: Any) -> Problem:
    items = [{"source_id": f"i{k}", "content": "x", "relevance_score": s, "token_count": t, "level": lv}
             for k, (s, t, lv) in enumerate(rows)]
    return reduce(Policy.default(budget, separator="", counts="caller", **policy), to_candidates(items))


@CFG
@given(rows=ROWS, budget=st.integers(1, 120))
def test_greedy_and_density_decide_as_before(rows: list[tuple[float, int, str]], budget: int) -> None:
    problem = problem_of(rows, budget)
    assert greedy.density_order(problem) == old_density_order(problem)
    for sel, order in ((greedy.greedy(problem), relevance_order(problem)),
                       (greedy.density(problem), old_density_order(problem))):
        chosen, reasons = old_fast_fill(problem, order)
        assert sel.chosen == chosen
        assert dict(sel.reasons) == reasons and list(sel.reasons) == list(reasons)
        assert all(sel.reasons.get(i) == reasons.get(i) for i in range(len(rows) + 1))
        assert sel.objective == sum(problem.values[i] for i in chosen)


@CFG
@given(rows=ROWS, budget=st.integers(1, 120), shares=st.booleans())
def test_balanced_decides_as_before(rows: list[tuple[float, int, str]], budget: int, shares: bool) -> None:
    levels = (LevelRule("SENTENCE", share=0.3), LevelRule("PARAGRAPH", share=0.5)) if shares else ()
    problem = problem_of(rows, budget, levels=levels)
    assert balanced.balanced(problem).chosen == old_balanced_chosen(problem)


def test_lazy_reasons_reach_the_allocation() -> None:
    items = [{"source_id": f"i{k}", "content": "x", "relevance_score": 1 - k / 10, "token_count": t}
             for k, t in enumerate([5, 8, 3, 9, 1])]
    alloc = allocate(items, Policy.default(10, separator="", counts="caller"), strategy=BudgetStrategy.GREEDY)
    assert [(d.source_id, d.reason.code.value, d.reason.evidence) for d in alloc.decisions] == [
        ("i0", "selected", "fits every rule in strategy order"),
        ("i1", "over_budget", "needed 8 tokens, 5 left of 10"),
        ("i2", "selected", "fits every rule in strategy order"),
        ("i3", "over_budget", "needed 9 tokens, 2 left of 10"),
        ("i4", "selected", "fits every rule in strategy order")]
