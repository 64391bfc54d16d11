"""engine/objective.py, issue 11: the reading-order steps (``position_decay``,
``lead_weight``): values by hand, positions by ``metadata.doc_id`` and level in input
order (siblings, else by document), the policy keys (spelled out only when used), their errors, the optimiser's
choice, and the verifier's own recomputation."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

import objectivecases as cases
from objectivecases import FLAT, row, values
from engine import allocate
from engine.allocate import to_candidates
from engine.errors import PolicyError
from engine.objective import RELEVANCE_SCALE
from engine.policy import Calibration, DocumentScope, Objective, Policy, Transform
from engine.verify import verify

S = RELEVANCE_SCALE


def policy(**spec: Any) -> Policy:
    return cases.policy("positions", **spec)


# Document A in reading order a0, a1, a2 (scores 0.5, 1.0, 0.8); b0 alone; "z" has no doc_id.
ROWS = [row("a0", 0.5, "A"), row("a1", 1.0, "A"), row("a2", 0.8, "A"), row("b0", 0.4, "B"), row("z", 0.6, None)]


def test_position_decay_discounts_the_rth_item_of_each_document_in_input_order() -> None:
    obj = dataclasses.replace(FLAT, position_decay=0.5)
    # a0 .5 (position 0), a1 1.0 * .5 = .5, a2 .8 * .25 = .2, b0 .4 (its document's first), z .6 (no document)
    assert values(obj, ROWS) == [833_333, 833_333, 333_333, 666_667, S]


def test_lead_weight_lifts_the_first_item_of_each_document() -> None:
    obj = dataclasses.replace(FLAT, lead_weight=1.0)
    # a0 .5 * 2 = 1.0, b0 .4 * 2 = .8; the others unchanged
    assert values(obj, ROWS) == [S, S, 800_000, 800_000, 600_000]
    both = dataclasses.replace(obj, position_decay=0.5)
    assert values(both, ROWS) == [S, 500_000, 200_000, 800_000, 600_000]


def test_positions_count_every_item_of_the_document_and_level() -> None:
    # An inactive item keeps its place (its document's reading order does not change), and
    # the paragraph is its own group at its level.
    rows = [row("p", 1.0, "A", level="PARAGRAPH"), row("s0", 0.4, "A"), row("s1", 0.8, "A")]
    obj = dataclasses.replace(FLAT, position_decay=0.5)
    assert values(obj, rows) == [S, 400_000, 400_000]
    assert values(obj, rows, active=[0, 2]) == [S, 0, 400_000]


def test_in_a_hierarchy_positions_are_among_siblings_whatever_the_scope() -> None:
    # s0, s1 are the paragraph's children (siblings: s1 is second); s2 has no parent
    # candidate, so it is the first of document A's parentless sentences.
    rows = [row("p", 1.0, "A", level="PARAGRAPH"), row("s0", 0.5, "A", parent="p"), row("s1", 1.0, "A", parent="p"),
            row("s2", 0.8, "A")]
    every = dataclasses.replace(FLAT, position_decay=0.5)
    assert values(every, rows) == [S, S // 2, S // 2, 800_000]
    assert values(dataclasses.replace(every, document_scope=DocumentScope.FLAT), rows) == values(every, rows)
    # siblings need no doc_id
    bare = [{**r, "metadata": {}} for r in rows]
    assert values(every, bare) == [S, S // 2, S // 2, 800_000]


def test_without_doc_ids_the_reading_order_steps_change_nothing() -> None:
    rows = [row("x", 0.9, None), row("y", 0.3, None, level="PARAGRAPH"), row("w", 0.6, None)]
    for base in (FLAT, Objective(), Objective(Transform.RECIPROCAL_RANK, calibrate=Calibration.RANK)):
        on = dataclasses.replace(base, position_decay=0.3, lead_weight=2.0)
        assert values(on, rows) == values(base, rows)


def test_the_keys_are_spelled_out_only_when_a_reading_order_step_is_on() -> None:
    plain = policy(objective={"transform": "power", "exponent": 2})
    assert not {"position_decay", "lead_weight"} & set(plain.to_dict()["spec"]["objective"])
    on = policy(objective={"transform": "power", "exponent": 2, "position_decay": 0.7})
    spelled = on.to_dict()["spec"]["objective"]
    assert (spelled["position_decay"], spelled["lead_weight"]) == (0.7, 0.0)
    assert on.objective == dataclasses.replace(plain.objective, position_decay=0.7)
    assert on.digest != plain.digest
    lead = policy(objective={"transform": "power", "exponent": 2, "lead_weight": 2})
    assert lead.objective == dataclasses.replace(plain.objective, lead_weight=2.0)
    # the effective policy reads back to the same objective (what replay and audit verify do)
    assert Policy.from_record(on.to_dict()).objective == on.objective
    assert Policy.from_record(lead.to_dict()).objective == lead.objective


@pytest.mark.parametrize(("objective", "where", "fix"), [
    ("{position_decay: 0}", "position_decay", "got 0"),
    ("{position_decay: 1.5}", "position_decay", "must be <= 1; got 1.5"),
    ("{lead_weight: -1}", "lead_weight", "got -1"),
])
def test_bad_reading_order_keys_name_the_key_and_the_file_line(tmp_path: Path, objective: str, where: str,
                                                               fix: str) -> None:
    from engine.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: d, revision: '1'}\n"
                    f"spec:\n  budget: {{max_tokens: 100}}\n  objective: {objective}\n", encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    text = str(err.value)
    assert err.value.code == "policy.out_of_range" and f"$.spec.objective.{where}" in text
    assert "p.yaml:6:" in text and fix in text


def test_the_optimiser_takes_the_opening_under_a_lead_weight() -> None:
    # Room for one of A: by score a1; with the lead weight the document's opening a0.
    rows = [row("a0", 0.6, "A"), row("a1", 0.9, "A")]
    base = {"transform": "identity", "calibrate_within": "all"}
    tight = {"max_tokens": 10, "separator": "|"}
    plain = allocate(to_candidates(rows), policy(objective=base, budget=tight))
    lead = allocate(to_candidates(rows), policy(objective={**base, "lead_weight": 1.0}, budget=tight))
    assert [d.source_id for d in plain.included] == ["a1"]
    assert [d.source_id for d in lead.included] == ["a0"]


def test_the_verifier_recomputes_the_reading_order_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine leaving the reading-order steps out while the policy asks for them: the
    verifier's own recomputation names the item and both numbers."""
    problem_module = sys.modules["engine.problem"]
    pol = policy(objective={"transform": "identity", "calibrate_within": "all", "position_decay": 0.5})
    cands = to_candidates(ROWS)
    real = problem_module.objective_values  # type: ignore[attr-defined]
    monkeypatch.setattr(problem_module, "objective_values", lambda obj, c, active, order, by_id: real(
        dataclasses.replace(obj, position_decay=1.0), c, active, order, by_id))
    alloc = allocate(cands, pol, check=False)
    found = verify(pol, cands, alloc)
    assert ("objective.value", ("a1",), "'a1' is valued 1000000; the objective gives it 833333") in [
        (v.code, v.items, v.message) for v in found]


# The engine and the verifier agreeing on random objectives with the reading-order steps
# is the property test in tests/test_objective_documents.py, which draws every objective key.
