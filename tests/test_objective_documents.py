"""engine/objective.py, issue 11: the document steps (``document_prior``, ``document_score``,
``document_decay``): values by hand, grouping by ``metadata.doc_id`` and level, the policy
keys (spelled out only when used), their errors, and the verifier's own recomputation."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import objectivecases as cases
from objectivecases import FLAT, row, values
from objectivecases import policy
from engine import allocate
from engine.allocate import to_candidates
from engine.errors import PolicyError
from engine.objective import RELEVANCE_SCALE
from engine.policy import Calibration, DocumentScope, DocumentScore, Objective, Policy, Transform
from engine.verify import verify

S = RELEVANCE_SCALE


# Document A: 1.0 and 0.2 (mean 0.6); document B: 0.5 alone; "z" carries no doc_id.
ROWS = [row("a1", 1.0, "A"), row("a2", 0.2, "A"), row("b1", 0.5, "B"), row("z", 0.4, None)]


def test_document_prior_blends_each_item_with_its_documents_mean() -> None:
    obj = dataclasses.replace(FLAT, document_prior=0.5)
    # a1: .5*1 + .5*.6 = .8 (the best: 10^6); a2: .5*.2 + .5*.6 = .4; b1 alone: .5; z: .4
    assert values(obj, ROWS) == [S, S // 2, 625_000, S // 2]


def test_document_prior_max_lifts_the_documents_weak_items_to_its_best() -> None:
    obj = dataclasses.replace(FLAT, document_prior=0.5, document_score=DocumentScore.MAX)
    # a1: 1.0; a2: .5*.2 + .5*1 = .6; b1 and z unchanged
    assert values(obj, ROWS) == [S, 600_000, S // 2, 400_000]


def test_documents_are_grouped_per_level_and_use_the_active_items() -> None:
    rows = [row("p", 1.0, "A", level="PARAGRAPH"), row("s1", 0.8, "A"), row("s2", 0.0, "A"), row("s3", 0.6, "A")]
    obj = dataclasses.replace(FLAT, document_prior=1.0)
    # The paragraph is its own group at its level; the sentences' mean is .4 (.8, 0, .6 / 3 ... of the active: s1, s2)
    assert values(obj, rows, active=[0, 1, 2]) == [S, 400_000, 400_000, 0]
    assert values(obj, rows) == [S, 466_667, 466_667, 466_667]


def test_document_decay_discounts_the_rth_item_of_each_document() -> None:
    obj = dataclasses.replace(FLAT, document_decay=0.5)
    rows = [row("a1", 1.0, "A"), row("a2", 0.8, "A"), row("a3", 0.6, "A"), row("b1", 0.5, "B"), row("z", 0.3, None)]
    assert values(obj, rows) == [S, 400_000, 150_000, S // 2, 300_000]
    # an item that cannot be taken does not take a place: a1 inactive, a2 is first of A
    assert values(obj, rows, active=[1, 2, 3, 4]) == [0, S, 375_000, 625_000, 375_000]


def test_document_decay_breaks_ties_in_relevance_order() -> None:
    obj = dataclasses.replace(FLAT, document_decay=0.5)
    rows = [row("a1", 0.5, "A"), row("a2", 0.5, "A"), row("top", 1.0, None)]
    assert values(obj, rows) == [S // 2, S // 4, S]


def test_scope_flat_leaves_items_with_a_parent_or_a_child_candidate_alone() -> None:
    # "p" and its child "s1" are a hierarchy; "s2" (no parent candidate) is flat. All three
    # share document A at level SENTENCE but "p", which is a PARAGRAPH.
    rows = [row("p", 1.0, "A", level="PARAGRAPH"), {**row("s1", 0.9, "A"), "parent_id": "p"}, row("s2", 0.3, "A"),
            row("s3", 0.6, "A")]
    every = dataclasses.replace(FLAT, document_prior=1.0)
    flat = dataclasses.replace(every, document_scope=DocumentScope.FLAT)
    # all: s1, s2, s3 share the mean .6; flat: only s2 and s3 (mean .45), s1 keeps .9
    assert values(every, rows) == [S, 600_000, 600_000, 600_000]
    assert values(flat, rows) == [S, 900_000, 450_000, 450_000]
    decay = dataclasses.replace(FLAT, document_decay=0.5, document_scope=DocumentScope.FLAT)
    assert values(decay, rows) == [S, 900_000, 150_000, 600_000]
    pol = policy(objective={"transform": "identity", "calibrate_within": "all", "document_prior": 1.0,
                            "document_scope": "flat"}, hierarchy={"exclusive": True})
    cands = to_candidates(rows)
    alloc = allocate(cands, pol, check=False)
    assert [d.value for d in alloc.decisions] == [S, 900_000, 450_000, 450_000]
    assert verify(pol, cands, alloc) == ()


def test_without_doc_ids_the_document_steps_change_nothing() -> None:
    rows = [row("x", 0.9, None), row("y", 0.3, None, level="PARAGRAPH"), row("w", 0.6, None)]
    for base in (FLAT, Objective(), Objective(Transform.RECIPROCAL_RANK, calibrate=Calibration.RANK)):
        on = dataclasses.replace(base, document_prior=0.7, document_decay=0.3)
        assert values(on, rows) == values(base, rows)


def test_the_keys_are_spelled_out_only_when_a_document_step_is_on() -> None:
    plain = policy(objective={"transform": "power", "exponent": 2})
    assert not {"document_prior", "document_score", "document_decay"} & set(plain.to_dict()["spec"]["objective"])
    on = policy(objective={"transform": "power", "exponent": 2, "document_prior": 0.3, "document_decay": 0.5})
    spelled = on.to_dict()["spec"]["objective"]
    assert (spelled["document_prior"], spelled["document_score"], spelled["document_decay"],
            spelled["document_scope"]) == (0.3, "mean", 0.5, "all")
    assert on.objective == dataclasses.replace(plain.objective, document_prior=0.3, document_decay=0.5)
    assert on.digest != plain.digest
    # the effective policy reads back to the same objective (what replay and audit verify do)
    assert Policy.from_record(on.to_dict()).objective == on.objective


@pytest.mark.parametrize(("objective", "where", "code", "fix"), [
    ("{document_prior: 1.5}", "document_prior", "policy.out_of_range", "must be <= 1; got 1.5"),
    ("{document_decay: 0}", "document_decay", "policy.out_of_range", "got 0"),
    ("{document_decay: 1.2}", "document_decay", "policy.out_of_range", "must be <= 1; got 1.2"),
    ("{document_score: median}", "document_score", "", "mean"),
])
def test_bad_document_keys_name_the_key_and_the_file_line(tmp_path: Path, objective: str, where: str, code: str,
                                                          fix: str) -> None:
    from engine.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: d, revision: '1'}\n"
                    f"spec:\n  budget: {{max_tokens: 100}}\n  objective: {objective}\n", encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    text = str(err.value)
    assert err.value.code.startswith(code or "policy.") and f"$.spec.objective.{where}" in text
    assert "p.yaml:6:" in text and fix in text


def test_the_optimiser_spreads_over_documents_under_decay() -> None:
    # Room for two: without decay the two best of document A; with decay 0.3 the best of A and of B.
    rows = [row("a1", 1.0, "A"), row("a2", 0.9, "A"), row("b1", 0.8, "B")]
    base = {"transform": "identity", "calibrate_within": "all"}
    tight = {"max_tokens": 21, "separator": "|"}
    plain = allocate(to_candidates(rows), policy(objective=base, budget=tight))
    spread = allocate(to_candidates(rows), policy(objective={**base, "document_decay": 0.3}, budget=tight))
    assert sorted(d.source_id for d in plain.included) == ["a1", "a2"]
    assert sorted(d.source_id for d in spread.included) == ["a1", "b1"]


def test_the_verifier_recomputes_the_document_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine leaving the document steps out while the policy asks for them: the
    verifier's own recomputation names the item and both numbers."""
    problem_module = sys.modules["engine.problem"]
    pol = policy(objective={"transform": "identity", "calibrate_within": "all", "document_prior": 0.5})
    cands = to_candidates(ROWS)
    real = problem_module.objective_values  # type: ignore[attr-defined]
    monkeypatch.setattr(problem_module, "objective_values", lambda obj, c, active, order, by_id: real(
        dataclasses.replace(obj, document_prior=0.0), c, active, order, by_id))
    alloc = allocate(cands, pol, check=False)
    found = verify(pol, cands, alloc)
    assert ("objective.value", ("a2",), "'a2' is valued 200000; the objective gives it 500000") in [
        (v.code, v.items, v.message) for v in found]


def _parent(data: st.DataObject, i: int, n: int) -> str | None:
    """Another item as parent (cycles allowed: the objective ignores them), or none."""
    j = data.draw(st.integers(0, n - 1))
    return f"n{j}" if j != i and data.draw(st.booleans()) else None


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_engine_and_verifier_agree_with_documents(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12))
    rows = [row(f"n{i}", data.draw(st.sampled_from([0.0, 0.1, 0.5, 0.5, 0.9, 1.0, -0.1])),
                data.draw(st.sampled_from(["A", "B", "C", None])), data.draw(st.integers(1, 60)),
                level=data.draw(st.sampled_from(["PARAGRAPH", "SENTENCE"])),
                parent=_parent(data, i, n))
            for i in range(n)]
    objective = {"transform": data.draw(st.sampled_from(["identity", "power", "reciprocal_rank"])),
                 "exponent": data.draw(st.sampled_from([2.0, 6.0])),
                 "calibrate": data.draw(st.sampled_from(["max", "minmax", "rank", "zscore"])),
                 "calibrate_within": data.draw(st.sampled_from(["level", "all"])),
                 "document_prior": data.draw(st.sampled_from([0.0, 0.3, 1.0])),
                 "document_score": data.draw(st.sampled_from(["mean", "max"])),
                 "document_decay": data.draw(st.sampled_from([1.0, 0.5, 0.1])),
                 "document_scope": data.draw(st.sampled_from(["all", "flat"])),
                 "position_decay": data.draw(st.sampled_from([1.0, 0.7, 0.2])),
                 "lead_weight": data.draw(st.sampled_from([0.0, 1.0, 3.0])),
                 "inherit": data.draw(st.sampled_from([0.0, 0.3])),
                 "fill": data.draw(st.booleans())}
    pol = policy(objective=objective, min_relevance=data.draw(st.sampled_from([0.0, 0.2])),
                 budget={"max_tokens": data.draw(st.integers(40, 150)), "separator": "|"})
    cands = to_candidates(rows)
    alloc = allocate(cands, pol, check=False)
    assert verify(pol, cands, alloc) == ()
    assert alloc.selection.objective == sum(d.value for d in alloc.decisions if d.index in alloc.selection.chosen)
