"""Budget plus an exclusive hierarchy: the tree DP against CP-SAT's own model, the forest
rebuilt from the conflict pairs, and when it steps aside."""

from __future__ import annotations

import random

import pytest

from engine import BudgetItem, allocate
from engine.allocate import to_candidates
from engine.policy import BudgetStrategy, Hierarchy, Policy
from engine.problem import reduce
from engine.strategies import cpsat, treeknap


def forest_items(rng: random.Random, n: int) -> list[BudgetItem]:
    """Documents, paragraphs and sentences: each item's parent is an earlier item or none."""
    items: list[BudgetItem] = []
    levels = ("DOCUMENT", "SECTION", "PARAGRAPH", "SENTENCE")
    depth: list[int] = []
    for k in range(n):
        parent = rng.randrange(-1, k) if k and rng.random() < 0.8 else -1
        d = 0 if parent < 0 else min(depth[parent] + 1, 3)
        depth.append(d)
        meta = {"parent_id": f"id{parent}"} if parent >= 0 else {}
        items.append(BudgetItem(f"c{k}", round(rng.random(), 3), rng.randint(5, 120), f"id{k}", levels[d], meta))
    return items


def policy(budget: int) -> Policy:
    return Policy.default(budget, separator="", strategy=BudgetStrategy.OPTIMAL, hierarchy=Hierarchy(exclusive=True))


@pytest.mark.parametrize("seed", range(6))
def test_the_tree_dp_proves_the_same_optimum_as_cpsat(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    for _ in range(8):
        items = forest_items(rng, rng.randint(2, 40))
        pol = policy(rng.randint(20, 900))
        problem = reduce(pol, to_candidates(items))
        if not treeknap.applies(problem):
            continue
        tree = treeknap.solve(problem)
        assert tree is not None and tree.status == "optimal"
        assert all(not {a, b} <= tree.chosen for a, b in (ch.members for ch in problem.chains))
        assert sum(problem.weights[i] for i in tree.chosen) <= problem.capacity
        with monkeypatch.context() as m:
            m.setattr(treeknap, "applies", lambda _p: False)
            ref = cpsat.solve(problem, time_limit_s=10.0)
        assert ref.status in ("optimal", "trivial")
        assert tree.objective == ref.objective


def test_allocate_takes_the_tree_dp_and_states_its_proof() -> None:
    rng = random.Random(11)
    items = forest_items(rng, 50)
    alloc = allocate(items, policy(400))
    sel = alloc.selection
    assert sel.status == "optimal" and sel.stats["solver"] == "tree-knapsack"
    assert sel.stats["proof"]["proven"] is True and sel.stats["proof"]["bound"] == sel.objective


def test_the_forest_is_rebuilt_from_the_pairs_or_refused() -> None:
    # 0 > 1 > 2 and 0 > 3: the ancestor pairs of that tree.
    pairs = [(0, 1), (0, 2), (1, 2), (0, 3)]
    assert treeknap.forest((0, 1, 2, 3), pairs) == {0: None, 1: 0, 2: 1, 3: 0}
    # 0-1 and 1-2 without 0-2: 1 is the root of both.
    assert treeknap.forest((0, 1, 2), [(0, 1), (1, 2)]) == {0: 1, 1: None, 2: 1}
    # A path of four (0-1, 1-2, 2-3): no forest has exactly these ancestor pairs.
    assert treeknap.forest((0, 1, 2, 3), [(0, 1), (1, 2), (2, 3)]) is None


def test_other_rules_leave_the_problem_to_cpsat() -> None:
    items = forest_items(random.Random(3), 30)
    pol = policy(300).replace(min_relevance=0.0, pinned=())
    problem = reduce(pol.replace(hierarchy=Hierarchy(exclusive=True, prefer_parent_ratio=0.5)), to_candidates(items))
    assert not treeknap.applies(problem)  # prefer-parent adds linear rules


def _roots_dp_dense(root_opts: list[list[treeknap.Option]], cap: int) -> tuple[list[int], int]:
    """The roots' DP over every capacity (the implementation the banded one replaced)."""
    import numpy as np

    best = np.zeros(cap + 1, dtype=np.int64)
    picks = []
    grid = np.arange(cap + 1)
    pad = np.empty(2 * (cap + 1), dtype=np.int64)
    pad[:cap + 1] = -(2 ** 62)
    for opts in root_opts:
        wp = np.array([o[:2] for o in opts], dtype=np.int64)
        pad[cap + 1:] = best
        cand = pad[(cap + 1 - wp[:, :1]) + grid]
        cand += wp[:, 1:]
        pick = cand.argmax(axis=0)
        best = cand[pick, grid]
        picks.append((pick, opts))
    chosen: list[int] = []
    x = cap
    for pick, opts in reversed(picks):
        k = int(pick[x])
        if k > 0:
            chosen.extend(opts[k][2])
            x -= opts[k][0]
    return chosen, int(best[cap])


@pytest.mark.parametrize("seed", range(4))
def test_the_banded_roots_dp_picks_what_the_dense_one_picks(seed: int) -> None:
    rng = random.Random(seed)
    item = 0
    for _ in range(300):
        cap = rng.randint(0, 400)
        roots = []
        for _r in range(rng.randint(0, 12)):
            opts: list[treeknap.Option] = [(0, 0, ())]
            for _o in range(rng.randint(1, 6)):
                # Coarse profits: ties between options and between roots are common.
                opts.append((rng.randint(0, min(cap, 150)), rng.randint(0, 6) * 10, (item,)))
                item += 1
            roots.append(opts)
        assert treeknap.roots_dp(roots, cap) == _roots_dp_dense(roots, cap)
