"""engine.integrations.core (no framework needed) and the policy field it reads,
``spec.candidates.default_score`` (schema and semantic checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.audit.log import AuditLog
from engine.errors import CandidateError, PolicyError
from engine.integrations.core import META_KEYS, Item, Selector, default_ids, resolve_log, resolve_policy
from engine.policy import CandidateDefaults, Policy, load_policy

from integrationcases import CHILDREN, audit_verify, write_policy


def _mapping(**spec: object) -> dict[str, object]:
    return {"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy", "metadata": {"name": "t", "revision": "1"},
            "spec": {"budget": {"max_tokens": 100}, **spec}}


def test_default_score_is_read_and_only_written_when_set() -> None:
    plain = Policy.from_mapping(_mapping())
    assert plain.candidates is None and "candidates" not in plain.effective["spec"]
    with_default = Policy.from_mapping(_mapping(candidates={"default_score": 0.25}))
    assert with_default.candidates == CandidateDefaults(0.25)
    assert with_default.effective["spec"]["candidates"] == {"default_score": 0.25}
    assert with_default.digest != plain.digest
    assert Policy.from_mapping(with_default.effective).digest == with_default.digest  # round trip


def test_default_score_schema_errors() -> None:
    with pytest.raises(PolicyError) as err:
        Policy.from_mapping(_mapping(candidates={"default_score": "high"}))
    assert (err.value.code, err.value.path) == ("policy.wrong_type", "$.spec.candidates.default_score")
    with pytest.raises(PolicyError) as err:
        Policy.from_mapping(_mapping(candidates={"default": 0.1}))
    assert err.value.code == "policy.unknown_field"
    assert err.value.message == "unknown field 'default'; did you mean 'default_score'?"


def test_default_score_below_min_relevance_is_a_semantic_error(tmp_path: Path) -> None:
    path = write_policy(tmp_path, extra="  min_relevance: 0.3\n  candidates: {default_score: 0.1}\n")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert err.value.code == "policy.semantic.default_score_below_min_relevance"
    assert err.value.path == "$.spec.candidates.default_score"
    assert err.value.location is not None and err.value.location.line == 9
    assert err.value.message == (
        "default_score 0.1 is below min_relevance 0.3: every item without a score would be excluded; "
        "raise default_score to at least min_relevance, or remove it")


def test_default_ids_keep_given_ids_and_number_repeated_texts() -> None:
    items = [Item(None, "same", 1.0), Item("item-x", "other", 1.0), Item(None, "same", 1.0), Item("", "b", 1.0)]
    ids = default_ids(items)
    assert ids[1] == "item-x"
    assert ids[0].startswith("item-") and len(ids[0]) == 17
    assert ids[2] == ids[0] + "~2"
    assert ids[3].startswith("item-") and len(set(ids)) == 4


def test_selector_fills_scores_strips_old_annotations_and_logs(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, extra="  candidates: {default_score: 0.5}\n")
    (tmp_path / "elsewhere").mkdir()
    log = tmp_path / "elsewhere" / "log.jsonl"
    sel = Selector(policy, audit_log=str(log))
    old = {key: "stale" for key in META_KEYS}
    out = sel.select([Item("a", CHILDREN[0], None, metadata={**old, "k": 1}), Item("b", CHILDREN[1], 0.9)], "q")
    assert [n.source_id for n in out.annotations] == ["a", "b"]
    assert out.record["input"]["items"][0]["metadata"] == {"k": 1}
    assert out.record["input"]["items"][0]["relevance_score"] == 0.5
    assert all(n.decision_id == out.decision_id for n in out.annotations)
    assert out.annotations[0].as_metadata() == {
        "ctxbudget_decision_id": out.decision_id, "ctxbudget_decision": "included",
        "ctxbudget_reason": "selected", "ctxbudget_tokens": 13}
    assert audit_verify(log)[0] == 0
    assert not (tmp_path / "audit").exists()  # the given log, not the policy's


def test_resolve_policy_and_log_reject_other_types(tmp_path: Path) -> None:
    policy = resolve_policy(write_policy(tmp_path))
    assert resolve_policy(policy) is policy
    assert resolve_log(policy, False) is None
    assert resolve_log(policy, None) == AuditLog(tmp_path / "audit" / "decisions.jsonl", root=tmp_path)
    with pytest.raises(TypeError, match="policy must be a Policy or the path of a policy file, got int"):
        resolve_policy(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="audit_log must be an AuditLog, a path, None or False, got int"):
        resolve_log(policy, 3)  # type: ignore[arg-type]


def test_missing_score_without_default_names_the_item() -> None:
    sel = Selector(Policy.default(100), audit_log=False, score_hint="set NodeWithScore.score")
    with pytest.raises(CandidateError) as err:
        sel.select([Item("a", "x", 1.0), Item(None, "y", None)])
    assert err.value.code == "candidate.missing_score"
    assert err.value.message.startswith("item 'item-")
    assert err.value.message.endswith("(#1) has no relevance score; set NodeWithScore.score, or set "
                                      "spec.candidates.default_score in the policy to score such items")


def test_the_core_imports_no_framework() -> None:
    """Lazy by module: ``engine.integrations`` and its core load none of the three
    frameworks (each adapter module imports only its own)."""
    code = ("import sys, engine.integrations, engine.integrations.core\n"
            "print(sorted(n for n in ('langchain_core', 'llama_index', 'haystack') if n in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]"]
