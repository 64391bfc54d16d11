"""reduce builds its columns once: the arrays on the Problem match the candidates, and the
bulk steps (relevance order, pre-decisions) decide exactly what item-by-item code did."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.allocate import to_candidates
from engine.pins import match_pins
from engine.policy import Policy
from engine.problem import Problem, Reason, ReasonCode, reduce


def policy(**spec: Any) -> Policy:
    body = {"budget": {"max_tokens": 60, "separator": ""}, "tokenizer": "approx:utf8_bytes", **spec}
    return Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                "metadata": {"name": "columns", "revision": "1"}, "spec": body})


def old_pre_decide(pol: Policy, problem: Problem) -> tuple[dict[int, Reason], list[int]]:
    """The per-item loop reduce ran before the bulk version (its decisions, not its text)."""
    cands = problem.candidates
    matched = match_pins(pol, cands, {c.source_id: c for c in cands})
    pre: dict[int, Reason] = {}
    pins = []
    for i, c in enumerate(cands):
        if matched.block_of[i] is not None:
            pre[i] = Reason(ReasonCode.BLOCKED, "", "")
            continue
        if matched.pin_of[i] is not None:
            pins.append(i)
            continue
        lvl = pol.level(c.level)
        threshold = lvl.min_relevance if lvl is not None and lvl.min_relevance is not None else pol.min_relevance
        if c.relevance_score < threshold:
            pre[i] = Reason(ReasonCode.BELOW_MIN_RELEVANCE, "", "")
        elif problem.weights[i] > problem.capacity:
            pre[i] = Reason(ReasonCode.TOO_LARGE, "", "")
    return pre, pins


ROW = st.tuples(st.sampled_from([0.0, -0.0, 0.1, 0.5, 0.5, 0.9, -0.2]), st.integers(1, 80),
                st.sampled_from(["PARAGRAPH", "SENTENCE", "DOCUMENT"]), st.sampled_from(["a", "b", None]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, max_size=12), level_floor=st.sampled_from([None, 0.3, 0.6]),
       floor=st.sampled_from([0.0, 0.2]), blocks=st.booleans(), pins=st.booleans())
def test_bulk_reduce_decides_as_item_by_item(rows: list[tuple[float, int, str, str | None]],
                                             level_floor: float | None, floor: float, blocks: bool,
                                             pins: bool) -> None:
    spec: dict[str, Any] = {"min_relevance": floor}
    if level_floor is not None:
        spec["levels"] = {"SENTENCE": {"min_relevance": level_floor}}
    if blocks:
        spec["blocked"] = [{"glob": "i1*"}]
    if pins:
        spec["pinned"] = [{"glob": "i2*", "required": False}]
    pol = policy(**spec)
    items = [{"source_id": f"i{k}", "content": "x" * size, "relevance_score": score, "level": level,
              **({"parent_id": f"i{k - 1}"} if parent == "a" and k else {}),
              **({"metadata": {"doc_id": parent}} if parent else {})}
             for k, (score, size, level, parent) in enumerate(rows)]
    cands = to_candidates(items)
    problem = reduce(pol, cands)
    assert problem.order == tuple(sorted(range(len(cands)), key=lambda i: (-cands[i].relevance_score, i)))
    pre, pinned = old_pre_decide(pol, problem)
    assert {i: r.code for i, r in problem.pre.items()} == {i: r.code for i, r in pre.items()}
    assert list(problem.pre) == sorted(problem.pre)  # input order, as before
    assert [p.index for p in problem.pins] == pinned
    assert problem.active == tuple(i for i in range(len(cands)) if i not in pre)
    assert problem.source_ids == tuple(c.source_id for c in cands)
    assert problem.scores == tuple(c.relevance_score for c in cands)
    assert problem.levels == tuple(c.level for c in cands)
    ids = {c.source_id: c.index for c in cands}
    assert problem.parent_index == tuple(ids.get(c.parent_id, -1) if c.parent_id else -1 for c in cands)
    assert problem.group_index == (-1,) * len(cands)


def test_group_index_ranks_the_source_groups() -> None:
    pol = policy(sources={"group_by": "metadata", "field": "doc", "max_items_per_source": 1})
    cands = to_candidates([{"source_id": s, "content": "x", "relevance_score": 0.5, "metadata": m}
                           for s, m in [("a", {"doc": "zeta"}), ("b", {"doc": "alpha"}), ("c", {}),
                                        ("d", {"doc": "zeta"})]])
    problem = reduce(pol, cands)
    assert problem.group_of == ("zeta", "alpha", "<missing>", "zeta")
    assert problem.group_index == (2, 1, 0, 2)  # sorted: '<missing>', 'alpha', 'zeta'
    assert [r.key for r in problem.constraints] == [f"sources[{g}].max_items_per_source"
                                                     for g in ("<missing>", "alpha", "zeta")]


def test_the_level_threshold_path_and_message_are_kept() -> None:
    pol = policy(min_relevance=0.1, levels={"SENTENCE": {"min_relevance": 0.6}})
    problem = reduce(pol, to_candidates([
        {"source_id": "s", "content": "x", "relevance_score": 0.5, "level": "SENTENCE"},
        {"source_id": "p", "content": "x", "relevance_score": 0.05},
        {"source_id": "big", "content": "x" * 61, "relevance_score": 0.9}]))
    assert [(r.code.value, r.evidence, r.rule) for r in problem.pre.values()] == [
        ("below_min_relevance", "relevance 0.5 < min 0.6", "$.spec.levels.SENTENCE.min_relevance"),
        ("below_min_relevance", "relevance 0.05 < min 0.1", "$.spec.min_relevance"),
        ("too_large", "needs 61 tokens alone; the budget is 60", "$.spec.budget")]
