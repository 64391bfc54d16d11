"""The seed spec's behaviours, restated in our own words (plus what its TODOs promised)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pytest

from engine import (
    BudgetAllocation,
    BudgetItem,
    BudgetStrategy,
    CandidateError,
    HierarchicalIndex,
    SemanticSearch,
    TokenBudgetManager,
)
from engine.tokens import get_tokenizer


def item(sid: str, rel: float, tokens: int = 10, level: str = "PARAGRAPH", **meta: Any) -> BudgetItem:
    return BudgetItem(f"text of {sid}", rel, tokens, sid, level, dict(meta))


@pytest.fixture(scope="module")
def mgr() -> TokenBudgetManager:
    return TokenBudgetManager()


def test_public_types_keep_the_seed_fields_in_order() -> None:
    assert [f.name for f in dataclasses.fields(BudgetItem)] == [
        "content", "relevance_score", "token_count", "source_id", "level", "metadata"]
    assert [f.name for f in dataclasses.fields(BudgetAllocation)][:6] == [
        "included", "excluded", "total_tokens_used", "budget_limit", "efficiency", "audit_trail"]
    assert [m.value for m in BudgetStrategy][:3] == ["greedy", "balanced", "optimal"]
    m = TokenBudgetManager()
    assert m.default_budget == 8000
    assert TokenBudgetManager(default_budget=123).default_budget == 123


def test_a_hard_budget_splits_twenty_items_ten_and_ten(mgr: TokenBudgetManager) -> None:
    items = [item(f"i{k}", 1.0 - k * 0.04) for k in range(20)]
    for strategy in BudgetStrategy:
        out = mgr.optimize_for_budget(items, 100, strategy=strategy)
        assert out.total_tokens_used == 100
        assert [i.source_id for i in out.included] == [f"i{k}" for k in range(10)]
        assert len(out.excluded) == 10


def test_greedy_takes_the_two_most_relevant_of_three(mgr: TokenBudgetManager) -> None:
    items = [item("c", 0.2), item("a", 0.8), item("b", 0.5)]
    out = mgr.optimize_for_budget(items, 20, strategy=BudgetStrategy.GREEDY)
    assert [i.source_id for i in out.included] == ["a", "b"]
    assert [i.source_id for i in out.excluded] == ["c"]
    assert out.included[0] is items[1]  # the caller's own objects come back


def test_items_under_the_threshold_are_excluded_with_a_reason(mgr: TokenBudgetManager) -> None:
    items = [item("keep", 0.7), item("drop", 0.1)]
    out = mgr.optimize_for_budget(items, 1000, min_relevance=0.4)
    assert [i.source_id for i in out.included] == ["keep"]
    assert [i.source_id for i in out.excluded] == ["drop"]
    reason = next(d.reason for d in out.details.decisions if d.source_id == "drop")
    assert reason.code.value == "below_min_relevance"
    assert reason.evidence == "relevance 0.1 < min 0.4"
    assert out.audit_trail["candidates_considered"] == 2


def test_audit_trail_has_the_seed_keys_and_what_ran(mgr: TokenBudgetManager) -> None:
    items = [item(f"i{k}", 0.9 - k * 0.05) for k in range(6)]
    out = mgr.optimize_for_budget(items, 30, strategy=BudgetStrategy.OPTIMAL)
    a = out.audit_trail
    for key in ("strategy", "candidates_considered", "included_count", "excluded_count",
                "tokens_used", "budget_utilization", "avg_relevance_included",
                "excluded_high_relevance"):
        assert key in a
    assert a["candidates_considered"] == 6
    assert a["included_count"] + a["excluded_count"] == 6
    assert a["tokens_used"] == 30 and a["budget_utilization"] == 1.0
    assert a["strategy"] == "optimal" and a["strategy_requested"] == "optimal"
    assert a["fallback_reason"] is None
    assert a["solver_status"] in ("optimal", "trivial")
    assert math.isclose(a["avg_relevance_included"], (0.9 + 0.85 + 0.8) / 3)


def test_counts_are_exact_cl100k_tokens(mgr: TokenBudgetManager) -> None:
    text = "This is a test sentence with several words."
    enc = get_tokenizer("cl100k_base").encoding
    assert mgr.count_tokens(text) == len(enc.encode(text)) == 9
    assert mgr.count_tokens("") == 0


def test_efficiency_is_relevance_per_token(mgr: TokenBudgetManager) -> None:
    out = mgr.optimize_for_budget([item("x", 0.6, 30), item("y", 0.3, 10)], 40)
    assert math.isclose(out.efficiency, 0.9 / 40)


def test_an_excluded_high_relevance_item_is_flagged(mgr: TokenBudgetManager) -> None:
    out = mgr.optimize_for_budget([item("small", 0.9, 5), item("big", 0.8, 500)], 20)
    flagged = out.audit_trail["excluded_high_relevance"]
    assert flagged == [{"id": "big", "relevance": 0.8, "reason": "too_large"}]


def test_optimal_and_balanced_are_real_strategies(mgr: TokenBudgetManager) -> None:
    items = [item("big", 0.6, 10), item("s1", 0.5, 5), item("s2", 0.4, 5)]
    greedy = mgr.optimize_for_budget(items, 10, strategy=BudgetStrategy.GREEDY)
    optimal = mgr.optimize_for_budget(items, 10, strategy=BudgetStrategy.OPTIMAL)
    assert [i.source_id for i in greedy.included] == ["big"]
    assert sorted(i.source_id for i in optimal.included) == ["s1", "s2"]
    mixed = [item("d", 0.9, 50, "DOCUMENT"), item("p1", 0.5, 20), item("p2", 0.45, 20),
             item("s", 0.4, 10, "SENTENCE")]
    bal = mgr.optimize_for_budget(mixed, 60, strategy=BudgetStrategy.BALANCED)
    levels = {i.level for i in bal.included}
    assert levels == {"PARAGRAPH", "SENTENCE"}  # greedy spends 50 of the 60 tokens on the DOCUMENT
    assert bal.audit_trail["strategy"] == "balanced"


@pytest.mark.parametrize(
    ("bad", "code", "fragment"),
    [
        (dict(relevance_score=float("nan")), "candidate.bad_relevance", "relevance_score is nan"),
        (dict(relevance_score=float("inf")), "candidate.bad_relevance", "relevance_score is inf"),
        (dict(token_count=-3), "candidate.bad_token_count", "token_count is -3"),
        (dict(token_count=2.5), "candidate.bad_token_count", "whole number >= 0, got 2.5"),
    ],
)
def test_bad_items_are_named_with_their_field(mgr: TokenBudgetManager, bad: dict[str, Any],
                                              code: str, fragment: str) -> None:
    good = item("ok", 0.5)
    broken = dataclasses.replace(item("broken", 0.5), **bad)
    with pytest.raises(CandidateError) as err:
        mgr.optimize_for_budget([good, broken], 100)
    assert err.value.code == code
    assert "'broken'" in err.value.message and fragment in err.value.message
    assert err.value.path.startswith("$[1].")


def test_negative_scores_are_valid_and_excluded_below_the_threshold(mgr: TokenBudgetManager) -> None:
    # The seed's own tests score items 1.0 - 0.1*i for i up to 19 and expect the negative
    # ones in ``excluded``: they are valid input, excluded by min_relevance (>= 0), never lost.
    out = mgr.optimize_for_budget([item("pos", 0.2), item("neg", -0.3)], 100)
    assert [i.source_id for i in out.excluded] == ["neg"]
    reason = out.details.decisions[1].reason
    assert (reason.code.value, reason.evidence) == ("below_min_relevance", "relevance -0.3 < min 0")
    with pytest.raises(ValueError, match="min_relevance must be a number >= 0, got -1.0"):
        mgr.optimize_for_budget([item("pos", 0.2)], 100, min_relevance=-1.0)


def test_duplicate_ids_budget_and_strategy_errors(mgr: TokenBudgetManager) -> None:
    with pytest.raises(CandidateError, match=r"duplicate source_id 'a'"):
        mgr.optimize_for_budget([item("a", 0.5), item("a", 0.4)], 100)
    for budget in (0, -5, 2.5):
        with pytest.raises(ValueError, match="token_budget must be a whole number > 0"):
            mgr.optimize_for_budget([item("a", 0.5)], budget)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown strategy"):
        mgr.optimize_for_budget([item("a", 0.5)], 10, strategy="fastest")  # type: ignore[arg-type]


# --- search integration: any objects shaped like the spec's SearchResult / index ---------

class Lvl(Enum):
    SECTION = 1
    PARAGRAPH = 2


@dataclass
class FakeNode:
    content: str
    level: Any
    parent_id: str | None = None


@dataclass
class FakeIndex:
    nodes: dict[str, FakeNode] = field(default_factory=dict)


@dataclass
class FakeResult:
    node_id: str
    relevance_score: float
    metadata: dict[str, Any]


def test_search_results_become_budget_items(mgr: TokenBudgetManager) -> None:
    idx = FakeIndex({"s": FakeNode("Section text here.", Lvl.SECTION),
                     "s/p": FakeNode("A paragraph.", "PARAGRAPH", parent_id="s")})
    items = mgr.create_budget_items_from_search(
        [FakeResult("s/p", 0.8, {"q": 1}), FakeResult("s", 0.6, {})], idx)
    assert [(i.source_id, i.level, i.relevance_score) for i in items] == [
        ("s/p", "PARAGRAPH", 0.8), ("s", "SECTION", 0.6)]
    assert items[0].token_count == mgr.count_tokens("A paragraph.")
    assert items[0].metadata == {"q": 1, "parent_id": "s", "ancestors": ["s"]}


def test_missing_nodes_are_reported_not_skipped(mgr: TokenBudgetManager) -> None:
    idx = FakeIndex({"a": FakeNode("x", "PARAGRAPH")})
    results = [FakeResult("a", 0.5, {}), FakeResult("gone", 0.4, {})]
    with pytest.raises(CandidateError, match=r"1 search result\(s\) name nodes that are not in the index: 'gone'"):
        mgr.create_budget_items_from_search(results, idx)
    with pytest.warns(UserWarning, match="skipped 1"):
        items = mgr.create_budget_items_from_search(results, idx, on_missing="skip")
    assert [i.source_id for i in items] == ["a"] and mgr.last_missing == ["gone"]


def test_with_the_engine_index_and_search_end_to_end(mgr: TokenBudgetManager) -> None:
    index = HierarchicalIndex()
    index.index_document(
        "# Refunds\n\nAnnual plans can be refunded within 30 days of purchase.\n\n"
        "# Security\n\nEnable two-factor authentication in the account settings.\n", "doc-1")
    results = SemanticSearch(index).search("refund annual plan", top_k=5)
    items = mgr.create_budget_items_from_search(results, index)
    assert items and "refunded" in items[0].content
    out = mgr.optimize_for_budget(items, 40, strategy=BudgetStrategy.OPTIMAL)
    assert out.total_tokens_used <= 40
    assert len(out.included) + len(out.excluded) == len(items)
