"""engine/objective.py, issue 11: ``calibrate: zscore`` (each score as
``exp((score - best) / sd)`` within its group): values by hand, invariance under a
positive rescaling and shift, the degenerate group, the policy key and its error, and
the verifier's own recomputation."""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import allocate
from engine.allocate import to_candidates
from engine.errors import PolicyError
from engine.objective import RELEVANCE_SCALE, objective_values, zscore_spread
from engine.policy import Calibration, CalibrationGroup, Objective, Policy, Transform
from engine.verify import verify

S = RELEVANCE_SCALE
Z = Objective(Transform.IDENTITY, calibrate=Calibration.ZSCORE, calibrate_within=CalibrationGroup.ALL)


def policy(**spec: Any) -> Policy:
    body = {"budget": {"max_tokens": 1000, "separator": "|"}, "tokenizer": "approx:utf8_bytes", **spec}
    return Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                "metadata": {"name": "zscore", "revision": "1"}, "spec": body})


def row(sid: str, rel: float, size: int = 10, level: str = "SENTENCE") -> dict[str, Any]:
    return {"source_id": sid, "content": sid[0] * size, "relevance_score": rel, "level": level}


def values(objective: Objective, rows: list[dict[str, Any]], active: Sequence[int] | None = None) -> list[int]:
    cands = to_candidates(rows)
    order = sorted(range(len(cands)), key=lambda i: (-cands[i].relevance_score, i))
    act = list(range(len(cands))) if active is None else list(active)
    return list(objective_values(objective, cands, act, order, {c.source_id: c for c in cands}))


def test_each_score_is_exp_of_its_distance_to_the_best_in_standard_deviations() -> None:
    # scores 3, 1, 1, 1 (mean 1.5, population sd sqrt(0.75)): the best 1, the others exp(-2 / 0.866)
    rows = [row("a", 3.0), row("b", 1.0), row("c", 1.0), row("d", 1.0)]
    sd = math.sqrt(0.75)
    assert zscore_spread([3.0, 1.0, 1.0, 1.0]) == pytest.approx(sd)
    low = round(S * math.exp(-2.0 / sd))
    assert values(Z, rows) == [S, low, low, low]
    # the transform comes after: power 2 squares the calibrated value
    assert values(dataclasses.replace(Z, transform=Transform.POWER, exponent=2.0), rows) == [
        S] + [round(S * math.exp(-4.0 / sd))] * 3


def test_a_positive_rescaling_and_shift_of_the_scores_changes_no_value() -> None:
    """What makes it robust across scorers: a cosine scorer's narrow band and BM25's wide
    range are one affine map apart in the simplest case; max-calibration sees them differently."""
    base = [0.9, 0.7, 0.65, 0.2, 0.0]
    rows = [row(f"n{i}", x) for i, x in enumerate(base)]
    moved = [row(f"n{i}", 0.3 + 0.05 * x) for i, x in enumerate(base)]
    assert values(Z, rows) == values(Z, moved)
    flat_max = dataclasses.replace(Z, calibrate=Calibration.MAX)
    assert values(flat_max, rows) != values(flat_max, moved)


def test_a_group_of_equal_scores_values_its_best_at_one_and_nothing_below() -> None:
    # the active ones all score 0.5 (sd 0): 1 for them and for anything above; 0 below
    rows = [row("a", 0.5), row("b", 0.5), row("c", 0.2), row("d", 0.9)]
    assert values(Z, rows, active=[0, 1]) == [S, S, 0, 0]
    # with c active too the sd is sqrt(0.02): c is exp(-0.3 / sqrt(0.02)) of the best
    assert values(Z, rows, active=[0, 1, 2]) == [S, S, round(S * math.exp(-0.3 / math.sqrt(0.02))), 0]
    assert values(Z, [row("only", 0.4)]) == [S]


def test_zscore_within_level_calibrates_each_level_on_its_own() -> None:
    rows = [row("p", 10.0, level="PARAGRAPH"), row("q", 0.0, level="PARAGRAPH"), row("s", 0.5), row("t", 0.1)]
    by_level = dataclasses.replace(Z, calibrate_within=CalibrationGroup.LEVEL)
    # each level: scores two apart by 2 sd (sd = half the gap): best 1, the other exp(-2)
    low = round(S * math.exp(-2.0))
    assert values(by_level, rows) == [S, low, S, low]


def test_the_policy_key_reads_writes_and_changes_the_digest() -> None:
    pol = policy(objective={"calibrate": "zscore", "calibrate_within": "level", "transform": "power", "exponent": 2})
    assert pol.objective.calibrate is Calibration.ZSCORE
    assert pol.to_dict()["spec"]["objective"]["calibrate"] == "zscore"
    assert Policy.from_record(pol.to_dict()).objective == pol.objective
    other = policy(objective={"calibrate": "max", "calibrate_within": "level", "transform": "power", "exponent": 2})
    assert pol.digest != other.digest


def test_an_unknown_calibration_names_the_choices_and_the_file_line(tmp_path: Path) -> None:
    from engine.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: d, revision: '1'}\n"
                    "spec:\n  budget: {max_tokens: 100}\n  objective: {calibrate: z-score}\n", encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    text = str(err.value)
    assert "$.spec.objective.calibrate" in text and "p.yaml:6:" in text and "zscore" in text


def test_the_verifier_recomputes_zscore_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that calibrates by the best score while the policy says zscore: the
    verifier's own recomputation names the item and both values."""
    problem_module = sys.modules["engine.problem"]
    pol = policy(objective={"transform": "identity", "calibrate": "zscore", "calibrate_within": "all"})
    rows = [row("a", 3.0), row("b", 1.0), row("c", 1.0), row("d", 1.0)]
    cands = to_candidates(rows)
    real = problem_module.objective_values  # type: ignore[attr-defined]
    monkeypatch.setattr(problem_module, "objective_values", lambda obj, c, active, order, by_id: real(
        dataclasses.replace(obj, calibrate=Calibration.MAX), c, active, order, by_id))
    alloc = allocate(cands, pol, check=False)
    found = [(v.code, v.items, v.message) for v in verify(pol, cands, alloc)]
    want = round(S * math.exp(-2.0 / math.sqrt(0.75)))
    assert ("objective.value", ("b",), f"'b' is valued 333333; the objective gives it {want}") in found


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_engine_and_verifier_agree_under_zscore(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12))
    rows = [{**row(f"n{i}", data.draw(st.sampled_from([0.0, 0.1, 0.5, 0.5, 0.9, 1.0, 7.5, -0.1])),
                   data.draw(st.integers(1, 60)), level=data.draw(st.sampled_from(["PARAGRAPH", "SENTENCE"]))),
             "metadata": {"doc_id": d} if (d := data.draw(st.sampled_from(["A", "B", None]))) else {}}
            for i in range(n)]
    objective = {"calibrate": data.draw(st.sampled_from(["zscore", "max", "rank"])),
                 "zscore_weight": data.draw(st.sampled_from([0.0, 0.5, 1.0])),
                 "transform": data.draw(st.sampled_from(["identity", "power"])),
                 "exponent": data.draw(st.sampled_from([1.0, 2.0, 6.0])),
                 "calibrate_within": data.draw(st.sampled_from(["level", "all"])),
                 "document_prior": data.draw(st.sampled_from([0.0, 0.4])),
                 "document_decay": data.draw(st.sampled_from([1.0, 0.5])), "fill": data.draw(st.booleans())}
    pol = policy(objective=objective, min_relevance=data.draw(st.sampled_from([0.0, 0.2])),
                 budget={"max_tokens": data.draw(st.integers(40, 150)), "separator": "|"})
    cands = to_candidates(rows)
    alloc = allocate(cands, pol, check=False)
    assert verify(pol, cands, alloc) == ()
    assert alloc.selection.objective == sum(d.value for d in alloc.decisions if d.index in alloc.selection.chosen)


def test_zscore_weight_blends_the_calibrations_geometrically() -> None:
    # scores 3, 1, 1, 1: max gives 1/3 to the others, zscore exp(-2 / sd); x = 0.5 their geometric mean
    rows = [row("a", 3.0), row("b", 1.0), row("c", 1.0), row("d", 1.0)]
    z = math.exp(-2.0 / math.sqrt(0.75))
    mix = dataclasses.replace(Z, calibrate=Calibration.MAX, zscore_weight=0.5)
    low = round(S * (1 / 3) ** 0.5 * z ** 0.5)
    assert values(mix, rows) == [S, low, low, low]
    # x = 1 is zscore alone, x = 0 (the base) is the calibration alone
    assert values(dataclasses.replace(mix, zscore_weight=1.0), rows) == values(Z, rows)
    assert values(dataclasses.replace(mix, zscore_weight=0.0), rows) == [S, 333_333, 333_333, 333_333]


def test_zscore_weight_is_spelled_out_only_when_on() -> None:
    plain = policy(objective={"transform": "power", "exponent": 2})
    assert "zscore_weight" not in plain.to_dict()["spec"]["objective"]
    on = policy(objective={"transform": "power", "exponent": 2, "zscore_weight": 0.5})
    assert on.to_dict()["spec"]["objective"]["zscore_weight"] == 0.5
    assert on.digest != plain.digest and Policy.from_record(on.to_dict()).objective == on.objective


def test_a_zscore_weight_out_of_range_names_the_key_and_the_file_line(tmp_path: Path) -> None:
    from engine.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: d, revision: '1'}\n"
                    "spec:\n  budget: {max_tokens: 100}\n  objective: {zscore_weight: 1.5}\n", encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    text = str(err.value)
    assert err.value.code == "policy.out_of_range" and "$.spec.objective.zscore_weight" in text
    assert "p.yaml:6:" in text and "must be <= 1; got 1.5" in text


def test_the_verifier_recomputes_the_zscore_blend(monkeypatch: pytest.MonkeyPatch) -> None:
    problem_module = sys.modules["engine.problem"]
    pol = policy(objective={"transform": "identity", "calibrate_within": "all", "zscore_weight": 0.5})
    rows = [row("a", 3.0), row("b", 1.0), row("c", 1.0), row("d", 1.0)]
    cands = to_candidates(rows)
    real = problem_module.objective_values  # type: ignore[attr-defined]
    monkeypatch.setattr(problem_module, "objective_values", lambda obj, c, active, order, by_id: real(
        dataclasses.replace(obj, zscore_weight=0.0), c, active, order, by_id))
    alloc = allocate(cands, pol, check=False)
    found = [(v.code, v.items, v.message) for v in verify(pol, cands, alloc)]
    want = round(S * (1 / 3) ** 0.5 * math.exp(-2.0 / math.sqrt(0.75)) ** 0.5)
    assert ("objective.value", ("b",), f"'b' is valued 333333; the objective gives it {want}") in found


def test_an_item_far_above_the_takeable_best_is_worth_1_not_an_overflow() -> None:
    """A score far above the takeable items' best (the item itself over the budget): its
    z-score is capped at 1 instead of exp overflowing (found by the CLI fuzz test once the
    default objective blended in z-scores), in the engine and in the verifier."""
    rows = [row("h", 1_000_000.0, size=900), row("a", 1.0), row("b", 0.9)]
    got = values(Z, rows, active=[1, 2])
    assert got[0] == 0 and got[1] == S and 0 < got[2] < S
    pol = policy(objective={"transform": "identity", "calibrate": "zscore", "calibrate_within": "all"},
                 budget={"max_tokens": 100, "separator": "|"})
    cands = to_candidates(rows)
    alloc = allocate(cands, pol, check=False)
    assert sorted(d.source_id for d in alloc.included) == ["a", "b"]
    assert verify(pol, cands, alloc) == ()
