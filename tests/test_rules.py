"""One test per policy rule per strategy, on inputs where the rule binds.

Items carry explicit token counts and the template is ``{content}`` with no separator,
so every number below can be checked by hand.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine import BudgetStrategy, InfeasibleError, allocate
from engine.policy import Policy

STRATEGIES = [s for s in BudgetStrategy]


def pol(strategy: BudgetStrategy, budget: int = 100, **spec: Any) -> Policy:
    body = {"budget": {"max_tokens": budget, "separator": ""}, "strategy": strategy.value, **spec}
    return Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                "metadata": {"name": "t", "revision": "1"}, "spec": body})


def cand(sid: str, rel: float, tokens: int = 10, level: str = "PARAGRAPH", parent: str | None = None,
         **meta: Any) -> dict[str, Any]:
    return {"source_id": sid, "content": f"text {sid}", "relevance_score": rel, "token_count": tokens,
            "level": level, "parent_id": parent, "metadata": meta}


def run(cands: list[dict[str, Any]], policy: Policy) -> tuple[set[str], dict[str, str]]:
    alloc = allocate(cands, policy)
    return ({d.source_id for d in alloc.included},
            {d.source_id: d.reason.code.value for d in alloc.decisions})


@pytest.mark.parametrize("s", STRATEGIES, ids=lambda s: s.value)
def test_min_relevance_global_and_per_level(s: BudgetStrategy) -> None:
    cands = [cand("p-hi", 0.5), cand("p-lo", 0.15), cand("s-mid", 0.3, level="SECTION")]
    inc, why = run(cands, pol(s, min_relevance=0.1, levels={"SECTION": {"min_relevance": 0.4}}))
    assert inc == {"p-hi", "p-lo"}
    assert why["s-mid"] == "below_min_relevance"


@pytest.mark.parametrize("s", STRATEGIES, ids=lambda s: s.value)
def test_level_max_items_and_max_tokens(s: BudgetStrategy) -> None:
    cands = [cand(f"s{k}", 0.9 - k / 100, level="SECTION") for k in range(4)] + [cand("p", 0.1)]
    inc, why = run(cands, pol(s, levels={"SECTION": {"max_items": 2}}))
    assert inc == {"s0", "s1", "p"} and why["s2"] == "level_quota"
    inc, why = run(cands, pol(s, levels={"SECTION": {"max_tokens": 30}}))
    assert inc == {"s0", "s1", "s2", "p"} and why["s3"] == "level_quota"


@pytest.mark.parametrize("s", STRATEGIES, ids=lambda s: s.value)
def test_level_minimums_are_filled_first(s: BudgetStrategy) -> None:
    # Without the minimum every strategy would spend the 30 tokens on the three sections.
    cands = [cand(f"s{k}", 0.9, level="SECTION") for k in range(3)] + [
        cand("p0", 0.2), cand("p1", 0.1), cand("p2", 0.05)]
    inc, _ = run(cands, pol(s, budget=30, levels={"PARAGRAPH": {"min_items": 2}}))
    assert {"p0", "p1"} <= inc and len(inc) == 3
    inc, _ = run(cands, pol(s, budget=30, levels={"PARAGRAPH": {"min_tokens": 20}}))
    assert {"p0", "p1"} <= inc


@pytest.mark.parametrize("s", STRATEGIES, ids=lambda s: s.value)
def test_source_caps(s: BudgetStrategy) -> None:
    cands = [cand(f"kb#{k}", 0.9 - k / 100) for k in range(4)] + [cand("web#0", 0.2), cand("web#1", 0.1)]
    inc, why = run(cands, pol(s, sources={"group_by": "prefix", "max_items_per_source": 2}))
    assert inc == {"kb#0", "kb#1", "web#0", "web#1"} and why["kb#2"] == "source_cap"
    meta = [cand(f"x{k}", 0.9 - k / 100, vendor="acme") for k in range(3)] + [cand("y", 0.1, vendor="zed")]
    inc, why = run(meta, pol(s, sources={"group_by": "metadata", "field": "vendor",
                                          "max_tokens_per_source": 20}))
    assert inc == {"x0", "x1", "y"} and why["x2"] == "source_cap"


@pytest.mark.parametrize("s", STRATEGIES, ids=lambda s: s.value)
def test_pins_by_id_glob_and_metadata_beat_relevance(s: BudgetStrategy) -> None:
    cands = [cand(f"hi{k}", 0.9) for k in range(3)] + [
        cand("terms", 0.01), cand("legal-1", 0.0), cand("notice", 0.02, kind="notice")]
    pins = [{"id": "terms"}, {"glob": "legal-*"}, {"metadata": {"kind": "notice"}}]
    inc, why = run(cands, pol(s, budget=40, min_relevance=0.05, pinned=pins))
    assert {"terms", "legal-1", "notice"} <= inc and len(inc) == 4
    assert why["terms"] == why["legal-1"] == why["notice"] == "pinned"


@pytest.mark.parametrize("s", STRATEGIES, ids=lambda s: s.value)
def test_blocked_items_never_go_in(s: BudgetStrategy) -> None:
    cands = [cand("secret", 0.99, pii=True), cand("draft-1", 0.95), cand("ok", 0.5)]
    inc, why = run(cands, pol(s, blocked=[{"metadata": {"pii": True}}, {"glob": "draft-*"}]))
    assert inc == {"ok"} and why["secret"] == why["draft-1"] == "blocked"


@pytest.mark.parametrize("s", STRATEGIES, ids=lambda s: s.value)
def test_hierarchy_never_sends_a_node_with_its_ancestor(s: BudgetStrategy) -> None:
    cands = [cand("doc", 0.9, 30, "SECTION"), cand("doc/p1", 0.8, 10, parent="doc"),
             cand("doc/p1/t1", 0.85, 5, "SENTENCE", parent="doc/p1"), cand("other", 0.1)]
    inc, why = run(cands, pol(s, hierarchy={"exclusive": True}))
    chain = {"doc", "doc/p1", "doc/p1/t1"}
    assert len(inc & chain) == 1 and "other" in inc
    assert all(why[x] == "hierarchy_conflict" for x in chain - inc)


@pytest.mark.parametrize("s", STRATEGIES, ids=lambda s: s.value)
def test_prefer_parent_when_most_children_would_be_chosen(s: BudgetStrategy) -> None:
    cands = [cand("sec", 0.5, 25, "SECTION"), cand("sec/a", 0.6, 10, parent="sec"),
             cand("sec/b", 0.55, 10, parent="sec")]
    inc, _ = run(cands, pol(s, hierarchy={"exclusive": True, "prefer_parent_ratio": 0.75}))
    assert inc in ({"sec"}, {"sec/a"}), inc  # never both children
    assert not {"sec/a", "sec/b"} <= inc


@pytest.mark.parametrize("s", STRATEGIES, ids=lambda s: s.value)
def test_pins_that_cannot_fit_are_infeasible_with_a_minimal_core(s: BudgetStrategy) -> None:
    cands = [cand("legal-disclaimer", 0.1, 1200), cand("sec1", 0.9, 100, "SECTION"),
             cand("sec2", 0.8, 100, "SECTION"), cand("p", 0.5)]
    policy = pol(s, budget=1000, pinned=[{"id": "legal-disclaimer"}],
                 levels={"SECTION": {"min_items": 2}})
    with pytest.raises(InfeasibleError) as err:
        allocate(cands, policy)
    core = err.value.details["core"]
    assert [c["key"] for c in core] == ["budget", "pinned[legal-disclaimer]"]
    assert err.value.message == (
        "pinned 'legal-disclaimer' (1,200 tokens) ($.spec.pinned[0]) cannot fit in "
        "budget 1,000 tokens ($.spec.budget); relax one of them")


def test_optimal_core_is_minimal_for_competing_minimums() -> None:
    cands = [cand("terms", 0.1, 400, "DOCUMENT"), cand("s1", 0.9, 300, "SECTION"), cand("s2", 0.8, 300, "SECTION"),
             cand("p1", 0.5, 50), cand("p2", 0.4, 50)]
    policy = pol(BudgetStrategy.OPTIMAL, budget=1000, pinned=[{"id": "terms"}],
                 levels={"SECTION": {"min_items": 2}, "PARAGRAPH": {"min_tokens": 100},
                         "SENTENCE": {"max_items": 1}})
    with pytest.raises(InfeasibleError) as err:
        allocate(cands, policy)
    keys = [c["key"] for c in err.value.details["core"]]
    assert sorted(keys) == ["budget", "levels.PARAGRAPH.min_tokens", "levels.SECTION.min_items",
                            "pinned[terms]"]
    assert err.value.details["minimal"] is True
    # Minimal: dropping any one member makes the rest feasible.
    relaxed = {
        "budget": pol(BudgetStrategy.OPTIMAL, budget=2000, pinned=[{"id": "terms"}],
                      levels={"SECTION": {"min_items": 2}, "PARAGRAPH": {"min_tokens": 100}}),
        "levels.PARAGRAPH.min_tokens": pol(BudgetStrategy.OPTIMAL, budget=1000, pinned=[{"id": "terms"}],
                                           levels={"SECTION": {"min_items": 2}}),
        "levels.SECTION.min_items": pol(BudgetStrategy.OPTIMAL, budget=1000, pinned=[{"id": "terms"}],
                                        levels={"PARAGRAPH": {"min_tokens": 100}}),
        "pinned[terms]": pol(BudgetStrategy.OPTIMAL, budget=1000,
                             levels={"SECTION": {"min_items": 2}, "PARAGRAPH": {"min_tokens": 100}}),
    }
    for key, p in relaxed.items():
        assert allocate(cands, p).included, key


def test_heuristics_report_unmet_minimums_instead_of_hiding_them() -> None:
    cands = [cand("s1", 0.9, 60, "SECTION"), cand("p1", 0.5, 50)]
    policy = pol(BudgetStrategy.GREEDY, budget=100, levels={"PARAGRAPH": {"min_items": 2}})
    alloc = allocate(cands, policy)
    assert alloc.unmet == ("levels.PARAGRAPH.min_items=2 (got 1)",)
    with pytest.raises(InfeasibleError):
        allocate(cands, policy.replace(strategy="optimal"))
