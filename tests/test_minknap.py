"""The exact budget-only solver: the expanding-core DP against a dense DP oracle, the
strongly correlated (hard) class through ``allocate``, the proof in the record, and a
wrong "optimal" caught by the verifier and by the oracle."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from engine import BudgetItem, allocate
from engine.allocate import to_candidates
from engine.audit.record import build as build_record
from engine.compile import objective_multiplier
from engine.errors import VerificationError
from engine.policy import PLAIN_IDENTITY, BudgetStrategy, CountMode, Policy
from engine.problem import reduce
from engine.strategies import cpsat, knapsack, minknap
from engine.strategies import params as cpsat_params

from benchload import load_bench


def dp_optimum(c: np.ndarray, w: np.ndarray, cap: int) -> int:
    """The dense 0/1 knapsack DP: the oracle."""
    best = np.zeros(cap + 1, dtype=np.int64)
    for ci, wi in zip(c.tolist(), w.tolist()):
        if wi <= cap:
            np.maximum(best[wi:], best[:cap + 1 - wi] + ci, out=best[wi:])
    return int(best.max())


def break_solution(c: np.ndarray, w: np.ndarray, cap: int) -> tuple[np.ndarray, int, np.ndarray, float]:
    order = np.argsort(-(c / w), kind="stable")
    b = int(np.searchsorted(np.cumsum(w[order]), cap, side="right"))
    r = c[order[b]] / w[order[b]]
    red = c - r * w
    inc = np.zeros(len(c), dtype=bool)
    inc[order[:b]] = True
    return order, b, inc, float(r * cap + red[red > 0].sum())


def instance(rng: np.random.Generator, kind: str, n: int, r: int) -> tuple[np.ndarray, np.ndarray, int]:
    w = rng.integers(1, r + 1, n)
    if kind == "uncorrelated":
        c = rng.integers(1, r + 1, n)
    elif kind == "weak":
        c = np.maximum(1, w + rng.integers(-r // 10, r // 10 + 1, n))
    elif kind == "strong":  # Pisinger's hard class: profit = weight + R/10
        c = w + max(1, r // 10)
    elif kind == "subset-sum":
        c = w.copy()
    else:  # few distinct items: many identical copies (the binary groups)
        c, w = rng.integers(1, 6, n), rng.integers(1, 6, n)
    cap = int(rng.integers(1, int(w.sum())))
    keep = w <= cap
    return c[keep].astype(np.int64), w[keep].astype(np.int64), cap


KINDS = ("uncorrelated", "weak", "strong", "subset-sum", "duplicates")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cardinality", [False, True], ids=["plain", "cardinality"])
def test_the_expanding_core_reaches_the_dp_optimum(kind: str, cardinality: bool) -> None:
    rng = np.random.default_rng(sum(map(ord, kind)) + cardinality)
    for _ in range(120):
        c, w, cap = instance(rng, kind, int(rng.integers(2, 40)), int(rng.integers(5, 120)))
        if len(c) < 2 or int(w.sum()) <= cap:
            continue
        order, b, inc, dantzig = break_solution(c, w, cap)
        card = minknap.cardinality_bound(c, w, cap, float(c[order[b]] / w[order[b]])) if cardinality else None
        res = minknap.solve(c, w, cap, order, b, inc, dantzig, card=card)
        assert res is not None
        assert res.profit == int(c[res.x].sum()) == dp_optimum(c, w, cap)
        assert int(w[res.x].sum()) <= cap


def test_the_cardinality_bound_is_valid_and_tight_on_the_strongly_correlated_class() -> None:
    rng = np.random.default_rng(3)
    c, w, cap = instance(rng, "strong", 300, 1000)
    order, b, _inc, dantzig = break_solution(c, w, cap)
    card = minknap.cardinality_bound(c, w, cap, float(c[order[b]] / w[order[b]]))
    opt = dp_optimum(c, w, cap)
    assert opt <= card.bound < dantzig
    assert card.bound - opt < 1.0 + 1e-6 < dantzig - opt  # within one unit; Dantzig is not
    assert card.k_max == int(np.searchsorted(np.cumsum(np.sort(w)), cap, side="right"))


def test_the_state_limit_gives_up_instead_of_guessing() -> None:
    rng = np.random.default_rng(4)
    c, w, cap = instance(rng, "subset-sum", 60, 1000)
    order, b, inc, dantzig = break_solution(c, w, cap)
    assert minknap.solve(c, w, cap, order, b, inc, dantzig, max_states=0) is None


def strongly_correlated_items(n: int, seed: int = 0) -> tuple[list[BudgetItem], int]:
    """Pisinger's class 3 (R = 1000) as candidates: relevance = profit, tokens = weight."""
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 1001, n)
    items = [BudgetItem(f"item {k}", float(wk + 100), int(wk), f"i{k}", "PARAGRAPH", {})
             for k, wk in enumerate(w.tolist())]
    return items, int(w.sum()) // 2


def hard_policy(cap: int) -> Policy:
    # Identity objective and caller counts: the instance exactly as generated.
    return Policy.default(cap, separator="", objective=PLAIN_IDENTITY, counts=CountMode.CALLER,
                          strategy=BudgetStrategy.OPTIMAL)


def problem_oracle(items: list[BudgetItem], pol: Policy) -> tuple[Any, int]:
    problem = reduce(pol, to_candidates(items))
    act = list(problem.active)
    v = np.array([problem.values[i] for i in act], dtype=np.int64)
    w = np.array([problem.weights[i] for i in act], dtype=np.int64)
    return problem, dp_optimum(v, w, problem.capacity)


def test_the_hard_class_through_allocate_is_proven_optimal_and_the_record_says_how() -> None:
    items, cap = strongly_correlated_items(400)
    pol = hard_policy(cap)
    problem, optimum = problem_oracle(items, pol)
    alloc = allocate(items, pol)
    sel = alloc.selection
    assert (sel.status, sel.objective, sel.bound) == ("optimal", optimum, optimum)
    assert alloc.fallback_reason is None
    proof = sel.stats["proof"]
    assert proof["proven"] is True and proof["bound"] == optimum
    assert proof["method"].startswith("expanding-core dynamic programming (minknap)")
    assert proof["method"].endswith("and the cardinality cut")
    assert proof["lp_bound"] > optimum  # Dantzig alone does not prove it
    solver = build_record(pol, to_candidates(items), alloc)["solver"]
    assert solver["proof"] == proof and solver["status"] == "optimal" and solver["best_bound"] == optimum
    # The same optimum as CP-SAT's own model (tie-break included): one objective.
    assert objective_multiplier(problem) > 1


def test_regression_the_strongly_correlated_class_is_proven_without_cpsat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: strongly correlated inputs left a core too large for the DP table, so
    CP-SAT took it and stopped at the limit unproven. The expanding core proves it."""
    def no_cpsat(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("CP-SAT was called for a budget-only problem")

    monkeypatch.setattr(knapsack, "_cpsat", no_cpsat)
    items, cap = strongly_correlated_items(3_000, seed=1)
    pol = hard_policy(cap)
    sel = cpsat.solve(reduce(pol, to_candidates(items)), time_limit_s=2.0)
    assert sel.status == "optimal" and sel.stats["core_solver"] == "expanding core"
    assert sel.stats["proof"]["proven"] is True


def test_a_wrong_optimal_over_the_budget_is_caught_by_the_verifier(monkeypatch: pytest.MonkeyPatch) -> None:
    real = minknap.solve

    def overfull(c: np.ndarray, w: np.ndarray, cap: int, *a: Any, **k: Any) -> Any:
        res = real(c, w, cap, *a, **k)
        x = res.x.copy()
        x[np.flatnonzero(~x)[0]] = True  # one more item: over the capacity
        return minknap.CoreResult(x, int(c[x].sum()), res.items_branched, res.items_skipped,
                                  res.max_states, res.found_by)

    monkeypatch.setattr(minknap, "solve", overfull)
    monkeypatch.setattr(knapsack, "DENSE_DP_CELLS", 0)
    items, cap = strongly_correlated_items(200, seed=2)
    with pytest.raises(VerificationError) as info:
        allocate(items, hard_policy(cap))
    assert info.value.code == "allocation.verification_failed"
    assert "budget" in str(info.value)


def test_a_wrong_optimal_below_the_optimum_is_caught_by_the_dp_oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier checks rules, not optimality: a feasible answer one item short of the
    optimum passes it, and the DP oracle (as bench/perf and bench/pisinger_check run it)
    is what catches it."""
    real = minknap.solve

    def short(c: np.ndarray, w: np.ndarray, cap: int, *a: Any, **k: Any) -> Any:
        res = real(c, w, cap, *a, **k)
        x = res.x.copy()
        x[np.flatnonzero(x)[0]] = False
        return minknap.CoreResult(x, int(c[x].sum()), res.items_branched, res.items_skipped,
                                  res.max_states, res.found_by)

    monkeypatch.setattr(minknap, "solve", short)
    monkeypatch.setattr(knapsack, "DENSE_DP_CELLS", 0)
    items, cap = strongly_correlated_items(200, seed=2)
    pol = hard_policy(cap)
    _problem, optimum = problem_oracle(items, pol)
    alloc = allocate(items, pol)  # the verifier passes it: every rule holds
    assert alloc.selection.status == "optimal"
    assert alloc.selection.objective < optimum  # the oracle does not


def test_a_cpsat_answer_cut_by_the_limit_says_what_cut_it_and_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: answers cut by the limit must be identical run to run; the record says
    which limit ended the search (the deterministic one: reproducible)."""
    inst = load_bench("instances", as_name="bench_instances").all_rules(1_000, "mixed")
    pol = inst.policy.replace(solver=dataclasses.replace(inst.policy.solver, time_limit_s=60.0))
    problem = reduce(pol, to_candidates(inst.items))
    runs = []
    for _ in range(2):
        # A deterministic limit of 0.01 under a wall-clock net of 5 s: the former cuts.
        monkeypatch.setattr(cpsat_params, "DETERMINISTIC_SHARE", 0.002)
        sel = cpsat.solve(problem, time_limit_s=5.0)
        runs.append((sel.status, sel.chosen, sel.stats["proof"]["stopped_by"]))
    assert runs[0] == runs[1]
    assert runs[0][2].startswith(("deterministic time limit", "proof of optimality"))
