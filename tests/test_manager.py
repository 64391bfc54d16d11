"""TokenBudgetManager: without a policy it maximises the seed's objective (the plain sum of
relevance, proven against brute force); with one, the policy as written (allocate) or with
the call's arguments."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest

from engine import BudgetItem, BudgetStrategy, PolicyError, TokenBudgetManager, load_policy
from engine.policy import DEFAULT_OBJECTIVE, Objective, Transform
from engine.problem import RELEVANCE_SCALE

POLICY = Path(__file__).resolve().parents[1] / "policies" / "support-assistant.yaml"


def items() -> list[BudgetItem]:
    mgr = TokenBudgetManager()
    texts = {"refund-terms": "Refunds within 30 days.", "kb#a": "Alpha " * 40, "kb#b": "Beta " * 40,
             "kb#c": "Gamma " * 40, "kb#d": "Delta " * 40, "crm#1": "Jane Doe's phone number"}
    rel = {"refund-terms": 0.2, "kb#a": 0.9, "kb#b": 0.8, "kb#c": 0.7, "kb#d": 0.6, "crm#1": 0.95}
    return [BudgetItem(t, rel[k], mgr.count_tokens(t), k, "PARAGRAPH",
                       {"pii": True} if k.startswith("crm") else {}) for k, t in texts.items()]


def test_policy_as_written() -> None:
    mgr = TokenBudgetManager(policy=POLICY)
    out = mgr.allocate(items())
    got = {i.source_id for i in out.included}
    assert "refund-terms" in got            # pinned
    assert "crm#1" not in got               # blocked: pii
    assert len(got & {"kb#a", "kb#b", "kb#c", "kb#d"}) == 3  # max_items_per_source
    assert out.budget_limit == 6400
    assert out.audit_trail["strategy"] == "optimal"


def test_call_arguments_take_precedence_over_the_policy() -> None:
    mgr = TokenBudgetManager(policy=load_policy(POLICY))
    out = mgr.optimize_for_budget(items(), 130, strategy=BudgetStrategy.GREEDY, min_relevance=0.5)
    assert out.budget_limit == 130 and out.audit_trail["strategy"] == "greedy"
    assert out.total_tokens_used <= 130
    # The pin still holds (pins beat min_relevance); the block still holds.
    got = {i.source_id for i in out.included}
    assert "refund-terms" in got and "crm#1" not in got


def test_bad_policy_path_is_a_policy_error(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: x, revision: '1'}\nspec: {}\n")
    with pytest.raises(PolicyError, match="budget"):
        TokenBudgetManager(policy=bad)


# --------------------------------------------------------------------------- the seed's objective


def test_regression_optimal_through_the_spec_api_maximises_the_relevance_sum() -> None:
    """Issue 10: on these four items OPTIMAL returned only the first (0.969, reported
    `optimal`) because the default `power 2` objective leaked into the spec's API; the
    most relevance that fits 60 tokens is 0.764 + 0.553 = 1.317 (55 tokens)."""
    spec = [("a", 0.969, 47), ("b", 0.029, 15), ("c", 0.764, 32), ("d", 0.553, 23)]
    items = [BudgetItem(f"text {sid}", rel, tok, sid, "PARAGRAPH", {}) for sid, rel, tok in spec]
    out = TokenBudgetManager().optimize_for_budget(items, 60, strategy=BudgetStrategy.OPTIMAL)
    assert [i.source_id for i in out.included] == ["c", "d"]
    assert out.total_tokens_used == 55
    assert sum(i.relevance_score for i in out.included) == pytest.approx(1.317)
    trail = out.audit_trail
    assert trail["objective_function"] == "identity" and trail["objective_params"] == {}
    assert trail["solver_status"] == "optimal"


_WORDS = ("alpha", "budget", "context", "token", "policy", "refund", "answer", "model",
          "prompt", "source", "search", "level", "quota", "chain", "proof")


def _instance(rng: random.Random, mgr: TokenBudgetManager) -> tuple[list[BudgetItem], int]:
    """Up to 12 items with exact token counts. Each text ends in ".\n" and starts with a
    word, so joined with the manager's empty separator the context counts exactly the sum
    of the items' counts (no BPE merge across an item boundary)."""
    items = []
    for k in range(rng.randint(1, 12)):
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 45))) + ".\n"
        items.append(BudgetItem(text, round(rng.random(), 3), mgr.count_tokens(text), f"i{k}", "PARAGRAPH", {}))
    total = sum(i.token_count for i in items)
    return items, max(1, int(total * rng.uniform(0.15, 0.9)))


def _brute_force_max(items: list[BudgetItem], budget: int) -> float:
    n = len(items)
    masks = np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.int64)
    tokens = masks @ np.array([i.token_count for i in items], dtype=np.int64)
    relevance = masks @ np.array([i.relevance_score for i in items])
    return float(relevance[tokens <= budget].max())


def test_optimal_without_a_policy_equals_brute_force_on_the_relevance_sum() -> None:
    """300 seeded instances of <= 12 items: OPTIMAL's total relevance_score equals the
    brute-force maximum (up to the documented integer scaling, RELEVANCE_SCALE = 10^6 of
    the best score per item) and never exceeds the budget."""
    rng = random.Random(20240610)
    mgr = TokenBudgetManager()
    mismatches = []
    for case in range(300):
        items, budget = _instance(rng, mgr)
        out = mgr.optimize_for_budget(items, budget, strategy=BudgetStrategy.OPTIMAL)
        got = sum(i.relevance_score for i in out.included)
        best = _brute_force_max(items, budget)
        tolerance = len(items) * max(i.relevance_score for i in items) / RELEVANCE_SCALE
        assert out.total_tokens_used <= budget and out.audit_trail["context_tokens"] <= budget
        assert out.audit_trail["objective_function"] == "identity"
        if got < best - tolerance:
            mismatches.append((case, got, best))
    assert mismatches == []


def test_a_policy_keeps_its_own_objective_and_the_trail_names_it() -> None:
    out = TokenBudgetManager(policy=POLICY).allocate(items())
    assert out.audit_trail["objective_function"] == "power"
    assert out.audit_trail["objective_params"] == {"exponent": DEFAULT_OBJECTIVE.exponent}  # the file has none
    rr = load_policy(POLICY).replace(objective=Objective(Transform.RECIPROCAL_RANK, k=30))
    out = TokenBudgetManager(policy=rr).optimize_for_budget(items(), 300, strategy=BudgetStrategy.OPTIMAL)
    assert out.audit_trail["objective_function"] == "reciprocal_rank"
    assert out.audit_trail["objective_params"] == {"k": 30}
