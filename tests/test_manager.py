"""TokenBudgetManager with a policy: as written (allocate) or with the call's arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import BudgetItem, BudgetStrategy, PolicyError, TokenBudgetManager, load_policy

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
