"""The façade: fallback rules, deadlines and what gets recorded about them."""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine import BudgetItem, BudgetStrategy, SolverError, allocate
from engine.policy import Fallback, LevelRule, Policy, SolverSettings
from engine.strategies import cpsat


def hard_items(n: int = 400, seed: int = 7) -> list[BudgetItem]:
    """Strongly correlated knapsack items (value = weight + constant): hard for exact solvers."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        w = rng.randint(10, 1000)
        out.append(BudgetItem(f"c{k}", (w + 100) / 1100, w, f"id{k}", "PARAGRAPH", {}))
    return out


def policy(budget: int, **solver: Any) -> Policy:
    # A (non-binding) level quota keeps these on the CP-SAT path rather than the
    # budget-only knapsack path, which has no gap limit to test.
    return Policy.default(budget, separator="", strategy=BudgetStrategy.OPTIMAL,
                          solver=SolverSettings(**solver),
                          levels=(LevelRule("PARAGRAPH", max_items=100_000),))


def test_a_used_up_time_limit_falls_back_to_greedy_and_says_so() -> None:
    items = hard_items()
    alloc = allocate(items, policy(50_000), time_limit_s=1e-9)
    assert alloc.strategy_requested is BudgetStrategy.OPTIMAL
    assert alloc.strategy_used in (BudgetStrategy.GREEDY, BudgetStrategy.DENSITY)
    assert alloc.selection.status == "fallback"
    assert alloc.fallback_reason.startswith("the time limit of 1e-09 s was used up")
    assert sum(d.tokens for d in alloc.included) <= 50_000


def test_fallback_error_raises_a_solver_error() -> None:
    with pytest.raises(SolverError) as err:
        allocate(hard_items(), policy(50_000, fallback=Fallback.ERROR), time_limit_s=1e-9)
    assert err.value.code == "solver.no_solution" and err.value.exit_code == 4
    assert "solver.fallback=error" in err.value.message


def test_solver_crash_is_a_recorded_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise MemoryError("out of memory in presolve")

    monkeypatch.setattr(cpsat, "solve", boom)
    alloc = allocate(hard_items(50), policy(5_000))
    assert alloc.fallback_reason == "CP-SAT raised MemoryError: out of memory in presolve"


def test_a_gap_limit_returns_the_answer_with_its_proven_gap() -> None:
    # A gap limit instead of a clock: deterministic on any machine.
    items = hard_items(2_000, seed=3)
    alloc = allocate(items, policy(200_000, time_limit_s=60.0, relative_gap=0.02))
    sel = alloc.selection
    assert sel.status in ("feasible", "optimal")
    assert sel.bound is not None and sel.bound >= sel.objective
    assert 0.0 <= sel.gap <= 0.02
    greedy = allocate(items, Policy.default(200_000, separator="", strategy=BudgetStrategy.GREEDY))
    assert sel.objective >= greedy.selection.objective


def test_budget_only_problems_take_the_knapsack_path_and_are_proven() -> None:
    rng = random.Random(5)
    items = [BudgetItem(f"c{k}", rng.random(), rng.randint(20, 400), f"id{k}", "PARAGRAPH", {})
             for k in range(3_000)]
    alloc = allocate(items, Policy.default(300_000, separator="", strategy=BudgetStrategy.OPTIMAL))
    assert alloc.selection.status == "optimal"
    assert alloc.selection.stats["solver"] == "knapsack-core"
    assert alloc.selection.bound == alloc.selection.objective
