"""OPTIMAL equals brute force for n <= 12 under every rule kind, not only the budget.

Seeded random instances per rule kind (``tests/bruteforce.py``): every subset is
enumerated, feasibility is decided by the independent verifier, and OPTIMAL must be
infeasible exactly when no subset is feasible and otherwise reach the maximum. The suite
runs ``CTXBUDGET_BRUTEFORCE_N`` instances per kind (default 20); the big run is
``CTXBUDGET_BRUTEFORCE_N=300 pytest tests/test_bruteforce.py`` or
``bench/bruteforce_report.py``.
"""

from __future__ import annotations

import os

import bruteforce as bf
import numpy as np
import pytest

from engine import InfeasibleError, allocate
from engine.allocate import to_candidates
from engine.policy import Policy
from engine.verify import Verifier

N = int(os.environ.get("CTXBUDGET_BRUTEFORCE_N", "20"))

#: What each kind's policies must contain, so a kind cannot silently test less.
HAS = {
    "budget": lambda p: not (p.levels or p.sources or p.pinned or p.blocked or p.hierarchy.exclusive),
    "min_relevance": lambda p: p.min_relevance > 0,
    "quotas": lambda p: bool(p.levels),
    "caps_prefix": lambda p: p.sources is not None and p.sources.group_by.value == "prefix",
    "caps_metadata": lambda p: p.sources is not None and p.sources.group_by.value == "metadata",
    "caps_document": lambda p: p.sources is not None and p.sources.group_by.value == "document",
    "pins": lambda p: bool(p.pinned),
    "blocks": lambda p: bool(p.blocked),
    "chains": lambda p: p.hierarchy.exclusive,
    "prefer_parent": lambda p: p.hierarchy.prefer_parent_ratio is not None,
    "mixed": lambda p: sum(map(bool, (p.min_relevance, p.levels, p.sources, p.pinned, p.blocked,
                                      p.hierarchy.exclusive))) >= 2,
}


@pytest.mark.parametrize("kind", bf.KINDS)
def test_optimal_equals_brute_force(kind: str) -> None:
    assert all(HAS[kind](bf.instance(kind, seed)[0]) for seed in range(N))
    outs = [bf.compare(kind, seed) for seed in range(N)]
    bad = [f"seed {o.seed} (n={o.n}): {o.detail}" for o in outs if not o.ok]
    assert not bad, "\n".join(bad)
    assert sum(o.feasible for o in outs) >= N // 2
    assert max(o.n for o in outs) >= min(10, bf.MAX_N)
    if kind in ("quotas", "pins") and N >= 20:
        assert not all(o.feasible for o in outs), "the infeasible side is exercised too"


@pytest.mark.parametrize("kind", ["budget", "quotas", "mixed"])
def test_the_oracles_budget_shortcut_is_the_verifiers_budget_rule(kind: str) -> None:
    for seed in range(3):
        pol, cands = bf.instance(kind, seed)
        check = Verifier(pol, cands)
        n = len(cands)
        bits = (np.arange(1 << n)[:, None] >> np.arange(n)) & 1
        fast = bf.over_budget(check, bits)
        for row, over in zip(bits, fast):
            found = check.selection([c.source_id for c, b in zip(cands, row) if b])
            assert bool(over) == ("budget.over" in {v.code for v in found})


def _policy(**spec: object) -> Policy:
    body = {"tokenizer": "approx:utf8_bytes", "budget": {"max_tokens": 60, "separator": ""},
            "objective": {"transform": "identity"}, **spec}
    return Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                "metadata": {"name": "oracle", "revision": "1"}, "spec": body})


def test_oracle_on_the_issue_knapsack() -> None:
    """Issue 10's instance: the best is the last two items (0.764 + 0.553 = 1.317)."""
    rows = [{"source_id": f"i{k}", "content": "x" * t, "relevance_score": r}
            for k, (r, t) in enumerate([(0.969, 47), (0.029, 15), (0.764, 32), (0.553, 23)])]
    pol, cands = _policy(), to_candidates(rows)
    best = bf.oracle(pol, cands, [c.relevance_score for c in cands])
    assert best == frozenset({2, 3})
    assert {d.source_id for d in allocate(cands, pol).included} == {"i2", "i3"}


def test_oracle_finds_no_subset_when_a_pin_cannot_fit() -> None:
    pol = _policy(pinned=[{"id": "big"}])
    cands = to_candidates([{"source_id": "big", "content": "x" * 61, "relevance_score": 0.5},
                           {"source_id": "small", "content": "x", "relevance_score": 0.9}])
    assert bf.oracle(pol, cands, [1.0, 1.0]) is None
    with pytest.raises(InfeasibleError):
        allocate(cands, pol)
