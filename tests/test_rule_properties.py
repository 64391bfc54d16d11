"""Property: under random policies with every rule kind, every strategy's allocation
passes the independent verifier (allocate() runs it and raises on any violation), stays
within budget and accounts for each candidate once — or the inputs are infeasible."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import BudgetStrategy, InfeasibleError, allocate
from engine.policy import Policy

LEVELS = ["SECTION", "PARAGRAPH", "SENTENCE"]


@st.composite
def problems(draw: Any) -> tuple[list[dict[str, Any]], Policy]:
    n = draw(st.integers(1, 14))
    cands = []
    for k in range(n):
        parent = draw(st.sampled_from([None] + [f"g{j}#{j}" for j in range(k)])) if k else None
        cands.append({
            "source_id": f"g{k % 3}#{k}", "content": f"item {k}",
            "relevance_score": draw(st.floats(-0.2, 1.0, allow_nan=False)),
            "token_count": draw(st.integers(0, 40)), "level": draw(st.sampled_from(LEVELS)),
            "parent_id": None if parent is None else parent.replace(parent.split("#")[0], f"g{int(parent.split('#')[1]) % 3}"),
            "metadata": {"pii": draw(st.booleans()), "kind": draw(st.sampled_from(["a", "b"]))},
        })
    spec: dict[str, Any] = {"budget": {"max_tokens": draw(st.integers(5, 200)),
                                       "separator": draw(st.sampled_from(["", "\n\n"])),
                                       "template": draw(st.sampled_from(["{content}", "[{source_id}] {content}"]))},
                            "min_relevance": draw(st.sampled_from([0.0, 0.1, 0.3]))}
    if draw(st.booleans()):
        lvl = draw(st.sampled_from(LEVELS))
        spec["levels"] = {lvl: {"max_items": draw(st.integers(1, 4)), "min_items": draw(st.integers(0, 1))}}
    if draw(st.booleans()):
        spec["sources"] = {"group_by": "prefix", "max_items_per_source": draw(st.integers(1, 3)),
                           "max_tokens_per_source": draw(st.integers(10, 80))}
    if draw(st.booleans()):
        spec["pinned"] = [{"id": cands[0]["source_id"]}]
    if draw(st.booleans()):
        spec["blocked"] = [{"metadata": {"pii": True}}]
    if draw(st.booleans()):
        spec["hierarchy"] = {"exclusive": True}
    spec["strategy"] = draw(st.sampled_from([s.value for s in BudgetStrategy]))
    policy = Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                  "metadata": {"name": "p", "revision": "1"}, "spec": spec})
    return cands, policy


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(problems())
def test_every_allocation_passes_the_verifier(case: tuple[list[dict[str, Any]], Policy]) -> None:
    cands, policy = case
    try:
        alloc = allocate(cands, policy)  # raises VerificationError on any broken rule
    except InfeasibleError as exc:
        assert exc.details["core"], "an infeasibility must name its rules"
        return
    # Caller-supplied counts are the contract here (see allocation.build).
    sep = 1 if policy.budget.separator else 0
    used = sum(d.tokens for d in alloc.included) + sep * max(0, len(alloc.included) - 1)
    assert used <= policy.budget.limit_tokens
    assert sorted(d.source_id for d in alloc.decisions) == sorted(c["source_id"] for c in cands)
