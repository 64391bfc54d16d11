"""reduce: the budget rule is named, the counter is resolved once and travels forward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from engine.allocate import to_candidates
from engine.allocation import build
from engine.audit import record
from engine.policy import BudgetStrategy, LevelRule, Policy
from engine.problem import RuleKind, reduce
from engine.strategies import greedy
from engine.tokens import get_tokenizer

ROWS = [{"source_id": f"doc#{i}", "content": f"paragraph {i} about refunds", "relevance_score": 1 - i / 10,
         "level": "SECTION" if i % 2 else "PARAGRAPH"} for i in range(6)]


class SpyCounter:
    """The real counter, recording every text it is asked to count."""

    def __init__(self) -> None:
        self.inner = get_tokenizer()
        self.name, self.exact = self.inner.name, self.inner.exact
        self.seen: list[str] = []

    def count(self, text: str) -> int:
        self.seen.append(text)
        return self.inner.count(text)

    def count_many(self, texts: Sequence[str], hashes: Sequence[str] | None = None, *,
                   keys: Sequence[str] | None = None) -> list[int]:
        self.seen += list(texts)
        return self.inner.count_many(texts, hashes=hashes, keys=keys)


def test_the_budget_rule_is_a_named_field_not_rules_zero() -> None:
    policy = Policy.default(40, levels=(LevelRule("SECTION", max_items=2),))
    problem = reduce(policy, to_candidates(ROWS))
    assert problem.budget.kind is RuleKind.BUDGET and problem.budget.upper == problem.capacity
    assert [r.kind for r in problem.constraints] == [RuleKind.LEVEL_MAX_ITEMS]
    assert problem.linear_rules == (problem.budget, *problem.constraints)
    assert problem.rule("budget") is problem.budget


def test_the_counter_is_resolved_once_and_reused_downstream(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.default(40, template="[{source_id}] {content}")
    spy: Any = SpyCounter()
    problem = reduce(policy, to_candidates(ROWS), counter=spy)
    assert problem.counter is spy and problem.tokenizer == "cl100k_base"

    def no_lookup(*_a: object, **_k: object) -> None:
        raise AssertionError("a later stage resolved the tokenizer by name again")

    monkeypatch.setattr(record, "policy_tokenizer", no_lookup)
    alloc = build(problem, greedy.greedy(problem), BudgetStrategy.GREEDY, None)
    assert spy.seen[-1] == alloc.context  # the recount went through the Problem's counter
    rec = record.build(policy, problem.candidates, alloc, decision_id="00000000-0000-4000-8000-000000000000")
    assert rec["budget"]["separator_tokens"] == problem.separator_tokens == get_tokenizer().count("\n\n")
    assert rec["budget"]["template_overhead_tokens"] == get_tokenizer().count("[] ")
    assert rec["tokenizer"] == {"name": "cl100k_base", "exact": True}
