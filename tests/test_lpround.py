"""The LP relaxation before CP-SAT (engine/strategies/lpround.py): its bound is a bound,
its rounded answer keeps every rule, its clique cover is exact, and CP-SAT uses it.

Small seeded instances of every rule kind (tests/bruteforce.py) are enumerated at the
Problem level: every subset of the active items, feasible when it keeps every linear
rule, at most one item of each chain and every pin.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from types import SimpleNamespace
from typing import cast

import bruteforce as bf
from benchload import load_bench
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.allocate import to_candidates
from engine.problem import Problem, reduce
from engine.strategies import cpsat, lpround


_feasible = bf.problem_feasible
_optimum = bf.problem_optimum


def _problems(per_kind: int = 4) -> list[tuple[str, int, Problem]]:
    out = []
    for kind in bf.KINDS:
        for seed in range(per_kind):
            try:
                policy, cands = bf.instance(kind, seed)
                p = reduce(policy, cands)
            except Exception:  # an instance whose pins cannot be met: not an LP question
                continue
            if len(p.active) <= 12:
                out.append((kind, seed, p))
    return out


PROBLEMS = _problems()


def test_instances_cover_rules() -> None:
    assert len(PROBLEMS) >= 30
    assert any(p.chains for _, _, p in PROBLEMS)
    assert any(r.lower is not None for _, _, p in PROBLEMS for r in p.linear_rules)
    assert any(p.pinned for _, _, p in PROBLEMS)


@pytest.mark.parametrize(("kind", "seed", "p"), PROBLEMS, ids=[f"{k}-{s}" for k, s, _ in PROBLEMS])
def test_bound_and_rounding_against_brute_force(kind: str, seed: int, p: Problem) -> None:
    opt = _optimum(p)
    lp = lpround.solve(p)
    if opt is None:
        # No 0/1 answer: the LP may still be feasible, but no rounded answer can be.
        assert lp is None or lp.chosen is None
        return
    assert lp is not None, "the relaxation of a feasible problem is feasible"
    assert lp.bound >= opt, (kind, seed, lp, opt)
    assert lp.bound >= int(lp.lp_objective) - 1  # the duals' bound is the LP's optimum (plus its margin)
    if lp.chosen is not None:
        assert _feasible(p, lp.chosen), (kind, seed)
        assert lp.objective == sum(p.values[i] for i in lp.chosen) <= opt


def _edges(graph: dict[int, set[int]]) -> set[tuple[int, int]]:
    return {(a, b) for a, nb in graph.items() for b in nb if a < b}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 14), st.integers(0, 14)), max_size=60))
def test_cliques_cover_exactly_the_conflicts(pairs: list[tuple[int, int]]) -> None:
    graph: dict[int, set[int]] = {}
    for a, b in pairs:
        if a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set()).add(a)
    cover = lpround.cliques(pairs)
    covered = set()
    for q in cover:
        assert q == sorted(set(q)) and len(q) >= 2
        for a, b in itertools.combinations(q, 2):
            assert b in graph[a], "a clique holds only conflicting pairs (same 0/1 answers)"
            covered.add((a, b))
    assert covered == _edges(graph)
    assert cover == lpround.cliques(list(reversed(pairs)))  # deterministic


def test_cliques_of_a_hierarchy_are_its_paths() -> None:
    # document 0 > sections 1, 2 > paragraphs 3, 4 (of 1) and 5 (of 2): pairs of ancestors.
    parent = {1: 0, 2: 0, 3: 1, 4: 1, 5: 2}
    pairs = []
    for node in parent:
        a = parent.get(node)
        while a is not None:
            pairs.append((a, node))
            a = parent.get(a)
    assert sorted(lpround.cliques(pairs)) == [[0, 1, 3], [0, 1, 4], [0, 2, 5]]


def test_applies_by_size_and_limit_alone() -> None:
    p = PROBLEMS[0][2]
    assert not lpround.applies(p, 2.0)  # small: CP-SAT alone
    big = cast(Problem, SimpleNamespace(active=tuple(range(10_000))))
    assert lpround.applies(big, 2.0)  # the 2 s default covers n = 10,000
    assert lpround.applies(big, 1.0)  # and so does a 1 s limit (the LP path replaces the search)
    assert not lpround.applies(big, 0.5)  # half a second does not
    assert lpround.expected_s(big) == pytest.approx(10_000 * lpround.LP_S_PER_ITEM)


def _rule_problems() -> list[Problem]:
    out = []
    for kind in ("mixed", "quotas", "chains", "caps_prefix", "prefer_parent", "pins"):
        for seed in range(30):
            try:
                policy, cands = bf.instance(kind, seed)
                p = reduce(policy, cands)
            except Exception:
                continue
            if (cpsat.trivial_choice(p) is None and len(p.active) >= 6 and not cpsat.knapsack.applies(p)
                    and not cpsat.treeknap.applies(p) and _optimum(p) is not None):
                out.append(p)
    return out


def _rules_problem() -> Problem:
    """All rules at n = 300 (bench/instances.py): hierarchy, quotas, source caps, pins and
    a block, where the rounded LP beats the heuristics (checked below)."""
    instances = load_bench("instances", as_name="bench_instances_lp")
    inst = instances.all_rules(300, "mixed")
    # The objective is pinned to the one this instance was picked under (the default until
    # issue 11's reading-order study): under today's default the heuristics happen to win
    # on it, and the tests below are about the LP step, not the objective.
    from engine.policy import PREVIOUS_DEFAULT_OBJECTIVE

    return reduce(inst.policy.replace(objective=PREVIOUS_DEFAULT_OBJECTIVE), to_candidates(inst.items))


def test_cpsat_searches_the_lp_neighbourhood(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lpround, "LP_MIN_ITEMS", 0)
    monkeypatch.setattr(lpround, "good_enough", lambda lp, gap: False)  # the search after the LP
    p = _rules_problem()
    lp = lpround.solve(p)
    assert lp is not None and lp.chosen is not None
    assert lp.objective > cpsat.best_heuristic(p).objective
    sel = cpsat.solve(p, time_limit_s=10.0)
    proof = sel.stats["proof"]
    assert sel.stats["hint"] == "lp_rounding" and _feasible(p, sel.chosen)
    # The decomposition (in the search's LP step) only tightens the LP's bound.
    assert lp.objective <= sel.objective <= proof["lp"]["bound"] <= lp.bound
    # The neighbourhood's CP-SAT bound is no bound of the problem: never "optimal".
    assert sel.status == "feasible" and sel.bound == max(sel.objective, proof["lp"]["bound"]) and not proof["proven"]
    assert proof["method"].startswith("CP-SAT search of the LP relaxation's neighbourhood")
    assert proof["stopped_by"] == "the LP's neighbourhood searched completely (reproducible)"
    # The neighbourhood: the LP's support and the answer it starts from (the master's here).
    assert len(lp.support) <= sel.stats["neighbourhood"]["free"] < len(p.active)
    assert cpsat.solve(p, time_limit_s=10.0).chosen == sel.chosen  # reproducible


def test_small_models_keep_the_whole_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the heuristics are as good as the rounded LP, CP-SAT searches the whole model
    and proves it (brute force agrees); the LP's bound is recorded next to the proof."""
    monkeypatch.setattr(lpround, "LP_MIN_ITEMS", 0)
    checked = 0
    for p in _rule_problems():
        opt = _optimum(p)
        lp = lpround.solve(p)
        assert lp is not None and opt is not None
        sel = cpsat.solve(p)
        if sel.stats["hint"] == "lp_rounding":
            continue
        assert sel.status == "optimal" and sel.objective == opt and sel.stats["proof"]["proven"]
        assert lp.bound >= sel.stats["proof"]["lp"]["bound"] >= opt  # the decomposition only tightens it
        checked += 1
    assert checked >= 5


def test_restricted_model_is_the_neighbourhood() -> None:
    from engine.compile import compile_problem
    from engine.strategies import params as cpsat_params

    rng = random.Random(3)
    checked = 0
    for kind, seed, p in PROBLEMS:
        only = frozenset(i for i in p.active if i in p.pinned or rng.random() < 0.6)
        best = None
        for k in range(len(only) + 1):
            for combo in itertools.combinations(sorted(only), k):
                s = frozenset(combo)
                if _feasible(p, s):
                    val = sum(p.values[i] for i in s)
                    best = val if best is None or val > best else best
        cm = compile_problem(p, only=only)
        assert set(cm.take) == only
        params = cpsat_params.parameters(p.settings, deterministic_s=5.0, wall_s=10.0)
        solver = cpsat_params.solver(params)
        code = cpsat_params.run(solver, cm.model)
        status = cpsat._status(code)
        if best is None:
            assert status == "infeasible", (kind, seed)
            continue
        assert status == "optimal", (kind, seed)
        chosen = frozenset(i for i, var in cm.take.items() if solver.boolean_value(var))
        assert _feasible(p, chosen) and sum(p.values[i] for i in chosen) == best, (kind, seed)
        checked += 1
    assert checked >= 20


def test_no_time_left_gives_the_rounded_lp_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    p = _rules_problem()
    lp = lpround.solve(p)
    assert lp is not None and lp.chosen is not None
    heuristic = cpsat.best_heuristic(p)
    monkeypatch.setattr(lpround, "LP_MIN_ITEMS", 0)
    real = lpround.solve
    # The LP runs although the time is spent (as on a machine that slowed down after the
    # check): without its wall-clock net, so that it finishes.
    monkeypatch.setattr(lpround, "expected_s", lambda problem: -math.inf)
    monkeypatch.setattr(lpround, "solve", lambda problem, wall_s=None, **_: real(problem))
    sel = cpsat.solve(p, deadline=time.perf_counter() - 1.0)  # the call's time is already spent
    assert lp.objective > heuristic.objective
    assert sel.status == "feasible" and sel.chosen == lp.chosen and sel.bound == max(lp.objective, lp.bound)
    assert sel.stats["solver"] == "glop"
    assert "before CP-SAT's search" in sel.stats["proof"]["stopped_by"]
    assert _feasible(p, sel.chosen)


def test_lp_is_deterministic() -> None:
    rng = random.Random(7)
    _, _, p = PROBLEMS[rng.randrange(len(PROBLEMS))]
    a, b = lpround.solve(p), lpround.solve(p)
    assert a == b
