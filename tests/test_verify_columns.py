"""The verifier's column paths (issue 13): its facts are columns by input position, and
inputs where every item is takeable and none names a parent take whole-list paths. An
allocation edited in its own columns (the ``Decisions`` it carries, not a tuple of
decisions) must still be caught there, with the item named; caller counts trusted for
some items only must be read at the right positions."""

from __future__ import annotations

import dataclasses
from typing import Any

from engine import allocate
from engine.allocation import Decisions
from engine.allocate import to_candidates
from engine.policy import Policy
from engine.verify import Verifier, verify


def policy(**budget: Any) -> Policy:
    spec = {"budget": {"max_tokens": 60, "separator": "|", **budget}, "tokenizer": "approx:utf8_bytes",
            "objective": {"transform": "power", "exponent": 2.0, "fill": True}}
    return Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                "metadata": {"name": "columns", "revision": "1"}, "spec": spec})


ROWS = [{"source_id": f"c{i}", "content": "x" * (4 + i % 5), "relevance_score": 1.0 - i / 40}
        for i in range(30)]


def edited(a: Any, *, tokens: list[int] | None = None, values: list[int] | None = None) -> Any:
    d = a.decisions
    assert isinstance(d, Decisions)
    cols = Decisions(d.candidates, tokens if tokens is not None else d.tokens,
                     values if values is not None else d.values, d.included, d._reason)
    return dataclasses.replace(a, decisions=cols)


def test_a_clean_allocation_without_links_passes() -> None:
    cands = to_candidates(ROWS)
    a = allocate(cands, policy())
    assert verify(policy(), cands, a) == ()


def test_a_wrong_value_in_the_columns_is_caught_when_every_item_is_takeable() -> None:
    cands = to_candidates(ROWS)
    a = allocate(cands, policy())
    chosen = sorted(a.selection.chosen)
    values = list(a.decisions.values)
    values[chosen[-1]] += 1
    found = verify(policy(), cands, edited(a, values=values))
    # The item's value, and the selection's total that no longer adds up.
    assert [(v.code, v.items) for v in found] == [("objective.value", (f"c{chosen[-1]}",)),
                                                  ("objective.total", tuple(f"c{i}" for i in chosen))]
    assert f"is valued {values[chosen[-1]]}; the objective gives it {values[chosen[-1]] - 1}" in found[0].message


def test_a_wrong_token_count_in_the_columns_is_caught() -> None:
    cands = to_candidates(ROWS)
    a = allocate(cands, policy())
    tokens = list(a.decisions.tokens)
    tokens[7] -= 1
    found = verify(policy(), cands, edited(a, tokens=tokens))
    assert [(v.code, v.items) for v in found] == [("accounting.tokens", ("c7",))]
    assert "'c7' is reported as" in found[0].message


def test_trusted_caller_counts_for_some_items_are_read_at_their_positions() -> None:
    """``counts: caller`` with counts given for every other item: ours for the rest. An
    allocation whose token column takes ours where the caller's holds is caught."""
    rows = [dict(r, token_count=50 if i % 2 else None) for i, r in enumerate(ROWS)]
    cands = to_candidates(rows)
    p = policy(counts="caller")
    a = allocate(cands, p)
    assert verify(p, cands, a) == ()
    # An item's count is the item alone (the separators are the budget rule's business).
    want = [len(r["content"]) if r["token_count"] is None else 50 for r in rows]
    assert list(a.decisions.tokens) == want
    tokens = list(want)
    tokens[3] = len(rows[3]["content"])  # ours, where the caller's 50 is trusted
    found = verify(p, cands, edited(a, tokens=tokens))
    assert [(v.code, v.items) for v in found] == [("accounting.tokens", ("c3",))]


def test_selections_of_the_same_facts_agree_with_allocate() -> None:
    """The facts built once serve many selections (the brute-force oracle's use)."""
    cands = to_candidates(ROWS)
    v = Verifier(policy(), cands)
    a = allocate(cands, policy())
    chosen = [c.source_id for c in a.included]
    assert v.selection(chosen) == ()
    over = [c.source_id for c in cands]  # everything: over the 60-token budget
    assert {x.code for x in v.selection(over)} == {"budget.over"}
