"""Compact records (engine.audit.compact): written once per record what items repeat,
read back in full; an old (version 1) record still verifies, shows and replays."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.audit.compact import compact, expand
from engine.audit.lineformat import encode_record
from engine.audit.log import AuditLog
from engine.audit.record import build
from engine.audit.records import check_log
from engine.candidates import from_mappings
from engine.decide import decide
from engine.policy import load_policy

from auditcases import every_kind, support, support_rows

GOLDEN_LOG = Path(__file__).parent / "golden" / "audit" / "v1-log.jsonl"


def test_every_kind_of_record_expands_to_exactly_what_was_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path / "kinds.jsonl", signer=None)
    every_kind(log, monkeypatch)
    raw = [json.loads(line)["record"] for line in log.path.read_bytes().splitlines()]
    assert raw and all(r["schema_version"] == "2" for r in raw)
    for stored in raw:
        full = expand(stored)
        assert "item_defaults" not in full
        assert compact(full) == stored  # compact is a function of the full record
        assert expand(compact(full)) == full
    checks = check_log(log)
    assert checks.ok, checks.summary()


def test_the_full_record_round_trips_and_items_shrink() -> None:
    policy = support(False)
    full = decide(support_rows(), policy).record
    small = compact(full)
    assert expand(json.loads(encode_record(small))) == json.loads(encode_record(
        {**full, "schema_version": "2"}))
    assert len(encode_record(small)) < len(encode_record(full))
    item = small["items"][0]
    for gone in ("content_sha256", "relevance", "level", "decision"):
        assert gone not in item
    row = next(r for r in small["input"]["items"] if r["source_id"] == item["source_id"])
    assert "parent_id" not in row or row["parent_id"] is not None


def test_an_item_that_differs_from_the_defaults_keeps_its_own_values() -> None:
    rows = [{"source_id": f"d{i}", "content": "word " * (10 + i), "relevance_score": 0.9 - i * 0.01}
            for i in range(40)]
    policy = load_policy(Path(__file__).parents[1] / "examples" / "policy.yaml")
    odd = json.loads(json.dumps(build(policy, from_mappings([(r, None) for r in rows]),
                                      _alloc(policy, rows))))
    k = [n for n, it in enumerate(odd["items"]) if it["reason"] == "over_budget"][-1]
    odd["items"][k]["evidence"] = "written by hand"
    odd["items"][k]["rule"] = "$.spec.somewhere"
    odd["items"][k]["relevance"] = 0.123456
    odd["items"][k]["decision"] = "included"
    small = compact(odd)
    assert {key: small["items"][k][key] for key in ("evidence", "rule", "relevance", "decision")} == \
        {"evidence": "written by hand", "rule": "$.spec.somewhere", "relevance": 0.123456,
         "decision": "included"}
    assert "evidence" not in small["items"][k - 1] and "rule" not in small["items"][k - 1]
    assert expand(small) == {**odd, "schema_version": "2"}


def test_evidence_templates_rebuild_numbers_exactly() -> None:
    rows = [{"source_id": f"d{i}", "content": "word " * (10 + i), "relevance_score": 0.9 - i * 0.01}
            for i in range(40)]
    policy = load_policy(Path(__file__).parents[1] / "examples" / "policy.yaml")
    full = build(policy, from_mappings([(r, None) for r in rows]), _alloc(policy, rows))
    small = compact(full)
    assert small["item_defaults"]["evidence"]  # at least one code has a template
    over = [it for it in small["items"] if it["reason"] == "over_budget"]
    assert over and all("evidence" not in it for it in over)
    assert expand(small) == {**full, "schema_version": "2"}


def _alloc(policy: Any, rows: list[dict[str, Any]]) -> Any:
    from engine.allocate import allocate

    return allocate(from_mappings([(r, None) for r in rows]), policy)


def test_hostile_compact_records_never_raise() -> None:
    for bad in ({"schema_version": "2", "items": [1, None, {"reason": 3}], "item_defaults": 7},
                {"schema_version": "2", "items": [{"reason": "x", "numbers": 5}],
                 "item_defaults": {"rule": [], "numbers": {"x": 1}, "evidence": {"x": "{a:,}"}}},
                {"schema_version": "2", "input": {"items": [3, {"source_id": []}]}},
                {"schema_version": "2", "items": [{"reason": "x", "numbers": {"a": "s"}}],
                 "item_defaults": {"evidence": {"x": "{a:,}"}}}):
        expand(bad)


def test_a_golden_version_1_log_still_verifies_shows_and_replays(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tests/golden/audit/v1-log.jsonl was written by the code before compaction (schema
    version 1, solver log kept; only its policy paths were made relative to the repository
    and the chain resealed); it must keep verifying and replaying identical."""
    path = tmp_path / "v1.jsonl"
    shutil.copy(GOLDEN_LOG, path)
    records = [json.loads(line)["record"] for line in path.read_bytes().splitlines()]
    assert {r["schema_version"] for r in records} == {"1"}
    assert all("text" in r["solver"]["log"] for r in records if r.get("solver"))
    assert check_log(AuditLog(path)).ok
    assert cli.main(["audit", "verify", str(path)]) == 0
    assert cli.main(["audit", "replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "identical" in out
    assert cli.main(["audit", "show", str(path)]) == 0
    assert cli.main(["audit", "query", str(path), "--json"]) == 0
    # and a forgery in it is still caught
    lines = path.read_bytes().splitlines()
    env = json.loads(lines[0])
    env["record"]["items"][0]["tokens"] += 1
    from auditcases import reseal

    reseal(path, [env["record"]] + [json.loads(line)["record"] for line in lines[1:]])
    assert not check_log(AuditLog(path)).ok


def test_the_solver_log_is_kept_only_when_the_policy_says_keep() -> None:
    import dataclasses

    from engine.policy import SolverLog

    policy = support(False)
    assert policy.solver.log is SolverLog.HASH  # the default
    log = decide(support_rows(), policy).record["solver"]["log"]
    assert set(log) == {"lines", "sha256"} and log["lines"] > 0
    keep = policy.replace(solver=dataclasses.replace(policy.solver, log=SolverLog.KEEP))
    kept = decide(support_rows(), keep).record["solver"]["log"]
    assert len(kept["text"]) == kept["lines"] == log["lines"]
