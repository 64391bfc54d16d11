"""Audit records: schema, golden files per policy, determinism, no content leaks, replay."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine import AuditLog, InfeasibleError, load_policy
from engine.audit.privacy import AuditSecret
from engine.audit.record import stable_view
from engine.audit.request import Request
from engine.candfile import load_candidates_file
from engine.candidates import from_mappings
from engine.decide import decide
from engine.reasons import ReasonCode
from engine.audit.replay import replay, replay_log
from engine.audit.show import render

ROOT = Path(__file__).resolve().parents[1]
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))
GOLDEN = Path(__file__).parent / "golden" / "audit"
SCHEMA = json.loads((ROOT / "schemas" / "audit.schema.json").read_text())
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
#: Golden records key their digests under a fixed secret (records never written would
#: otherwise use this process's ephemeral key).
GOLDEN_SECRET = AuditSecret.from_bytes(bytes(range(32)))
#: Who asked, in every golden record (the request part is reviewed like the rest).
GOLDEN_REQUEST = Request.of("req-golden-0001", "svc:golden-tests", {"team": "search", "ticket": "AUD-12"})


def candidates_for(policy_file: Path) -> Any:
    return from_mappings(load_candidates_file(ROOT / "tests" / "fixtures" / "candidates" / f"{policy_file.stem}.jsonl"))


def golden_view(record: dict[str, Any]) -> dict[str, Any]:
    """What must not change without review: no ids, clocks, versions or solver internals."""
    view = stable_view(record)
    view.pop("engine", None)
    view["policy"] = {**view["policy"], "file": Path(view["policy"]["file"]).name}
    solver = view.get("solver") or {}
    for key in ("deterministic_time", "branches", "conflicts"):
        solver.pop(key, None)
    return view


def test_schema_reason_codes_match_the_enum() -> None:
    reasons = SCHEMA["properties"]["items"]["items"]["properties"]["reason"]["enum"]
    assert reasons == [r.value for r in ReasonCode]


@pytest.mark.parametrize("policy_file", POLICIES, ids=lambda p: p.stem)
def test_golden_audit_record_per_policy(policy_file: Path) -> None:
    policy = load_policy(policy_file)
    decided = decide(candidates_for(policy_file), policy, decision_id="00000000-0000-4000-8000-000000000000",
                     now=NOW, secret=GOLDEN_SECRET, request=GOLDEN_REQUEST)
    jsonschema.validate(decided.record, SCHEMA)
    got = json.dumps(golden_view(decided.record), indent=2, sort_keys=True) + "\n"
    target = GOLDEN / f"{policy_file.stem}.json"
    if os.environ.get("CTXBUDGET_REGEN_GOLDEN") == "1":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(got)
    assert target.exists(), f"missing golden file; regenerate with CTXBUDGET_REGEN_GOLDEN=1 pytest {__file__}"
    assert got == target.read_text(), "audit output changed; review and regenerate the golden file"


def test_twenty_runs_give_byte_identical_records_apart_from_volatile_fields() -> None:
    policy_file = ROOT / "policies" / "code-assistant.yaml"
    policy = load_policy(policy_file)
    cands = candidates_for(policy_file)
    seen = {json.dumps(golden_view(decide(cands, policy).record), sort_keys=True) for _ in range(20)}
    assert len(seen) == 1


def test_content_never_reaches_the_log_unless_asked(tmp_path: Path) -> None:
    secret = "SECRET-7f3a9-never-log-me"
    rows = [({"source_id": "a", "content": f"text with {secret}", "relevance_score": 0.9}, None),
            ({"source_id": "b", "content": "plain", "relevance_score": 0.5}, None)]
    example = load_policy(ROOT / "examples" / "policy.yaml")
    assert example.audit.store_content  # the public example stores; the default does not
    policy = example.replace(audit=type(example.audit)(log=None, store_content=False))
    log = AuditLog(tmp_path / "audit.jsonl")
    decide(from_mappings(rows), policy, audit_log=log)
    assert (tmp_path / "audit.jsonl").read_bytes().count(secret.encode()) == 0
    stored = policy.replace(audit=type(policy.audit)(log=None, store_content=True), revision="1+stored")
    decide(from_mappings(rows), stored, audit_log=log)
    assert (tmp_path / "audit.jsonl").read_bytes().count(secret.encode()) == 1
    assert log.verify().ok


def test_infeasible_decisions_are_recorded_with_their_core(tmp_path: Path) -> None:
    policy = load_policy(ROOT / "policies" / "support-assistant.yaml").replace(max_tokens=50, context_window=None,
                                                                            reserve_output=0, reserve_prompt=0)
    rows = [({"source_id": "refund-terms", "content": "word " * 200, "relevance_score": 0.5}, None)]
    log = AuditLog(tmp_path / "a.jsonl")
    with pytest.raises(InfeasibleError):
        decide(from_mappings(rows), policy, audit_log=log)
    (env,) = list(log)
    rec = env["record"]
    jsonschema.validate(rec, SCHEMA)
    assert rec["outcome"] == "infeasible"
    assert [c["path"] for c in rec["infeasibility"]["core"]] == ["$.spec.budget", "$.spec.pinned[0]"]
    assert "INFEASIBLE" in render(env)


def test_replay_is_identical_and_what_if_reports_the_change(tmp_path: Path) -> None:
    policy_file = ROOT / "policies" / "support-assistant.yaml"
    policy = load_policy(policy_file)
    log = AuditLog(tmp_path / "a.jsonl")
    decide(candidates_for(policy_file), policy, audit_log=log)
    (env,) = list(log)
    same = replay(env["record"])
    assert same.identical, same.summary()
    assert [r.identical for r in replay_log(log)] == [True]
    tighter = policy.replace(sources=type(policy.sources)(group_by=policy.sources.group_by,
                                                          max_items_per_source=1))
    diff = replay(env["record"], tighter)
    assert not diff.identical and diff.removed and not diff.added
    assert diff.tokens_after < diff.tokens_before


def test_show_names_budget_reasons_and_verdict(tmp_path: Path) -> None:
    policy_file = ROOT / "policies" / "support-assistant.yaml"
    log = AuditLog(tmp_path / "a.jsonl")
    decide(candidates_for(policy_file), load_policy(policy_file), audit_log=log)
    text = render(next(iter(log)))
    assert "budget   used" in text and "reserved 1,792" in text
    assert "verdict  proven optimal" in text
    assert "[source_cap]" in text and "[blocked]" in text and "[pinned]" in text
