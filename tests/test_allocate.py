"""The façade: fallback rules, deadlines and what gets recorded about them."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import BudgetItem, BudgetStrategy, SolverError, allocate
from engine.policy import Fallback, LevelRule, Policy, SolverSettings
from engine.strategies import cpsat, knapsack
from ortools.sat.python import cp_model


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


def test_a_crash_inside_cp_sat_is_a_recorded_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise MemoryError("out of memory in presolve")

    monkeypatch.setattr(cp_model.CpSolver, "solve", boom)
    alloc = allocate(hard_items(50), policy(5_000))
    assert alloc.fallback_reason == "CP-SAT raised MemoryError: out of memory in presolve"
    assert alloc.selection.status == "fallback"
    with pytest.raises(SolverError) as err:
        allocate(hard_items(50), policy(5_000, fallback=Fallback.ERROR))
    assert err.value.code == "solver.no_solution" and err.value.exit_code == 4
    assert err.value.message == ("CP-SAT raised MemoryError: out of memory in presolve; "
                                 "the policy sets solver.fallback=error")


@pytest.mark.parametrize("bug", [TypeError("bad argument"), AttributeError("no such field"),
                                 ValueError("bad value")])
def test_a_bug_surfacing_inside_cp_sat_is_not_a_fallback(monkeypatch: pytest.MonkeyPatch,
                                                         bug: Exception) -> None:
    """Only backend failures (RuntimeError, MemoryError) fall back; a TypeError from inside
    solve is a wrong model or argument of ours and must not pass for a solver failure."""
    def boom(*_a: Any, **_k: Any) -> Any:
        raise bug

    monkeypatch.setattr(cp_model.CpSolver, "solve", boom)
    with pytest.raises(type(bug)):
        allocate(hard_items(50), policy(5_000))


def force_core_onto_cpsat(monkeypatch: pytest.MonkeyPatch) -> None:
    """No dense DP and an expanding core that gives up at once: CP-SAT takes the core."""
    monkeypatch.setattr(knapsack, "DP_MAX_CELLS", 0)
    monkeypatch.setattr(knapsack, "DENSE_DP_CELLS", 0)
    monkeypatch.setattr(knapsack, "DP_MAX_STATES", 0)


def test_a_crash_inside_the_knapsack_core_solver_is_a_recorded_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("native failure")

    monkeypatch.setattr(cp_model.CpSolver, "solve", boom)
    force_core_onto_cpsat(monkeypatch)
    rng = random.Random(2)
    items = [BudgetItem(f"c{k}", rng.random(), rng.randint(20, 400), f"id{k}", "PARAGRAPH", {})
             for k in range(300)]
    alloc = allocate(items, Policy.default(9_000, separator="", strategy=BudgetStrategy.OPTIMAL))
    assert alloc.fallback_reason == "CP-SAT raised RuntimeError: native failure"


@pytest.mark.parametrize("where", ["compile_problem", "best_heuristic"])
def test_regression_a_bug_around_the_solver_propagates_instead_of_falling_back(
        monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Issue 10: `allocate` turned any exception in compile or a strategy into a recorded
    "fallback", so a bug looked like a solver time-out. Only solver failures fall back."""
    def bug(*_a: Any, **_k: Any) -> Any:
        raise KeyError("a bug in ctxbudget")

    monkeypatch.setattr(cpsat, where, bug)
    with pytest.raises(KeyError, match="a bug in ctxbudget"):
        allocate(hard_items(50), policy(5_000))


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


def test_model_invalid_is_a_solver_failure_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cpsat.compile_problem

    def overflowing(*args: Any, **kwargs: Any) -> Any:
        cm = real(*args, **kwargs)  # the real model, plus a constraint CP-SAT refuses
        xs = [cm.model.new_int_var(0, 2**40, f"big{k}") for k in range(3)]
        cm.model.add(cp_model.LinearExpr.weighted_sum(xs, [2**40] * 3) <= 5)
        return cm

    monkeypatch.setattr(cpsat, "compile_problem", overflowing)
    alloc = allocate(hard_items(50), policy(5_000))
    assert alloc.selection.status == "fallback"
    assert alloc.fallback_reason == ("CP-SAT returned MODEL_INVALID within 2 s "
                                     "(Possible integer overflow in constraint: linear)")


def test_regression_the_knapsack_deterministic_limit_is_made_of_the_time_limit_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10: the knapsack path derived its deterministic limit from the wall time left
    (not reproducible). Now a core CP-SAT has to take (the expanding core gave up) gets
    0.2 x the time limit on every run, whatever the clock says."""
    seen: list[float] = []
    real = cp_model.CpSolver.solve

    def spy(self: cp_model.CpSolver, model: cp_model.CpModel, *a: Any, **k: Any) -> Any:
        seen.append(self.parameters.max_deterministic_time)
        return real(self, model, *a, **k)

    monkeypatch.setattr(cp_model.CpSolver, "solve", spy)
    force_core_onto_cpsat(monkeypatch)
    rng = random.Random(4)
    items = [BudgetItem(f"c{k}", rng.random(), rng.randint(20, 400), f"id{k}", "PARAGRAPH", {})
             for k in range(400)]
    pol = Policy.default(20_000, separator="", strategy=BudgetStrategy.OPTIMAL,
                         solver=SolverSettings(time_limit_s=2.0))
    runs = []
    for _ in range(2):
        seen.clear()
        alloc = allocate(items, pol)
        assert alloc.selection.stats["core_solver"] == "cp-sat"
        runs.append((list(seen), alloc.selection.chosen))
    assert runs[0] == runs[1]
    limits = runs[0][0]
    assert limits == [0.2 * 2.0] and alloc.selection.stats["parameters"]["max_deterministic_time"] == limits[0]


_BUGGY_CLI = """
import sys
from engine.strategies import cpsat

def bug(*_a, **_k):
    raise KeyError("a bug in ctxbudget")

cpsat.compile_problem = bug
from engine.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "CTXBUDGET_DEBUG=1"])
def test_the_cli_reports_a_bug_as_exit_1_with_a_traceback_under_debug(debug: bool) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "CTXBUDGET_DEBUG"}
    if debug:
        env["CTXBUDGET_DEBUG"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _BUGGY_CLI, "allocate", "--policy", str(root / "policies" / "support-assistant.yaml"),
         "--candidates", str(root / "tests" / "fixtures" / "candidates" / "support-assistant.jsonl")],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "KeyError" in proc.stderr and "a bug in ctxbudget" in proc.stderr
    assert proc.stdout == ""  # no allocation was printed: a bug is not a fallback
    assert ("Traceback (most recent call last)" in proc.stderr) is debug
