"""Pins never go missing silently.

A pin that matches no candidate is an ``InfeasibleError`` (``allocation.pin_missing``,
exit 3) naming the pin and its policy file:line, unless the pin says ``required: false``:
then it is recorded as missing in the allocation, the audit record and the CLI summary.
``pack`` fetches pinned nodes from the index whether or not search returned them, and
``ordering: pinned_first`` puts the pinned items at the head of the context.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine import AuditLog, InfeasibleError, PolicyError, allocate, cli, load_policy
from engine.allocate import to_candidates
from engine.audit.record import build as build_record
from engine.audit.show import render
from engine.decide import decide
from engine.retrieval.pack import pack

ROOT = Path(__file__).resolve().parents[1]
AUDIT_SCHEMA = json.loads((ROOT / "schemas" / "audit.schema.json").read_text())
HEAD = "apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: p, revision: '1'}\nspec:\n"

ROWS = [{"source_id": "kb-1", "content": "Refunds for annual plans are prorated.", "relevance_score": 0.9},
        {"source_id": "kb-2", "content": "Monthly plans are not refunded.", "relevance_score": 0.7},
        {"source_id": "disclaimer-eu", "content": "EU customers may withdraw within 14 days.",
         "relevance_score": 0.1}]


def write_policy(tmp_path: Path, body: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + body)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- required pins


def test_regression_missing_required_pin_is_infeasible_naming_the_pin_and_its_line(tmp_path: Path) -> None:
    """Old main: the run succeeded, exit 0, and nothing said the pin was missing."""
    policy = load_policy(write_policy(tmp_path, "  budget: {max_tokens: 200}\n  pinned:\n"
                                                "    - glob: 'disclaimer-*'\n    - id: safety-notice\n"))
    with pytest.raises(InfeasibleError) as err:
        allocate(ROWS, policy)
    exc = err.value
    where = f"{tmp_path / 'p.yaml'}:8:7"
    assert (exc.code, exc.path, str(exc.location)) == ("allocation.pin_missing", "$.spec.pinned[1]", where)
    assert exc.message == (
        f"pinned id 'safety-notice' ($.spec.pinned[1], {where}) matches no candidate; add the pinned item "
        "to the candidates, correct the pin, or set `required: false` on it to allow it to be missing "
        "(then it is recorded as missing instead)")
    assert exc.details["core"] == [{"rule": "pinned id 'safety-notice' (matches no candidate)",
                                    "path": "$.spec.pinned[1]", "location": where}]


def test_every_missing_required_pin_is_named() -> None:
    from engine.policy import Matcher, Policy

    pins = (Matcher("id", "a", None, (), None, "$.spec.pinned[0]"),
            Matcher("metadata", None, None, (("kind", "notice"),), None, "$.spec.pinned[1]"))
    with pytest.raises(InfeasibleError) as err:
        allocate(ROWS, Policy.default(200, pinned=pins))
    assert err.value.message.startswith(
        "pinned id 'a' ($.spec.pinned[0]) and metadata {kind: 'notice'} ($.spec.pinned[1]) match no candidate;")


def test_regression_missing_required_pin_exits_3_from_the_cli_and_is_recorded(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "  budget: {max_tokens: 200}\n  pinned:\n    - id: safety-notice\n")
    cands = tmp_path / "c.jsonl"
    cands.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    log = tmp_path / "a.jsonl"
    code, out, err = run(capsys, "--errors=json", "allocate", "--policy", str(policy), "--candidates", str(cands),
                         "--audit-log", str(log))
    assert code == 3 and out == ""
    data = json.loads(err)
    assert (data["code"], data["path"], data["file"], data["line"]) == (
        "allocation.pin_missing", "$.spec.pinned[0]", str(policy), 7)
    assert "pinned id 'safety-notice' ($.spec.pinned[0]" in data["message"]
    (env,) = list(AuditLog(log))
    assert env["record"]["outcome"] == "infeasible"
    assert env["record"]["infeasibility"]["core"][0]["path"] == "$.spec.pinned[0]"
    code, _, err = run(capsys, "allocate", "--policy", str(policy), "--candidates", str(cands))
    assert code == 3 and err.startswith(f"error: allocation.pin_missing: {policy}:7:7: $.spec.pinned[0]: pinned id")


# --------------------------------------------------------------------------- optional pins


def test_regression_optional_missing_pin_is_recorded_in_allocation_record_and_cli(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_policy(tmp_path, "  budget: {max_tokens: 200}\n  pinned:\n"
                                  "    - {id: safety-notice, required: false}\n    - glob: 'disclaimer-*'\n")
    policy = load_policy(path)
    alloc = allocate(ROWS, policy)
    where = f"{path}:7:7"
    (missing,) = alloc.missing_pins
    assert (missing.label, missing.path, str(missing.location)) == ("id 'safety-notice'", "$.spec.pinned[0]", where)
    assert "disclaimer-eu" in {d.source_id for d in alloc.included}
    assert alloc.warnings == (f"pin id 'safety-notice' ($.spec.pinned[0], {where}) matched no candidate and is "
                              "recorded as missing (required: false)",)
    rec = build_record(policy, to_candidates(ROWS), alloc, decision_id="00000000-0000-4000-8000-000000000000")
    jsonschema.validate(rec, AUDIT_SCHEMA)
    assert rec["missing_pins"] == [{"pin": "id 'safety-notice'", "path": "$.spec.pinned[0]", "location": where}]
    assert f"MISSING PIN (required: false): id 'safety-notice' at $.spec.pinned[0] {where}" in render(rec)
    cands = tmp_path / "c.jsonl"
    cands.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    code, out, err = run(capsys, "allocate", "--policy", str(path), "--candidates", str(cands))
    assert code == 0
    assert json.loads(out)["audit_record"]["missing_pins"][0]["path"] == "$.spec.pinned[0]"
    assert (f"; WARNING: pin id 'safety-notice' ($.spec.pinned[0], {where}) matched no candidate and is recorded "
            "as missing (required: false)") in err


def test_a_found_pin_is_not_missing_and_required_round_trips(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "  budget: {max_tokens: 200}\n  pinned:\n    - {id: kb-2, required: false}\n")
    policy = load_policy(path)
    alloc = allocate(ROWS, policy)
    assert alloc.missing_pins == () and "kb-2" in {d.source_id for d in alloc.included}
    assert policy.to_dict()["spec"]["pinned"] == [{"id": "kb-2", "required": False}]
    again = load_policy(write_policy(tmp_path, "  budget: {max_tokens: 200}\n  pinned: [{id: kb-2}]\n", "q.yaml"))
    assert again.to_dict()["spec"]["pinned"] == [{"id": "kb-2", "required": True}]
    assert again.digest != policy.digest


def test_blocked_entries_take_no_required(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        load_policy(write_policy(tmp_path, "  budget: {max_tokens: 200}\n  blocked: [{id: x, required: true}]\n"))
    assert err.value.code == "policy.unknown_field" and err.value.path == "$.spec.blocked[0].required"


# --------------------------------------------------------------------------- ordering


def test_pinned_first_puts_pins_at_the_head_in_policy_order(tmp_path: Path) -> None:
    rows = ROWS + [{"source_id": "notice", "content": "Read the terms.", "relevance_score": 0.2}]
    policy = load_policy(write_policy(tmp_path, "  budget: {max_tokens: 200}\n  ordering: pinned_first\n"
                                                "  pinned: [{id: notice}, {glob: 'disclaimer-*'}]\n"))
    alloc = allocate(rows, policy)
    assert [d.source_id for d in alloc.included] == ["notice", "disclaimer-eu", "kb-1", "kb-2"]
    assert alloc.context.startswith("Read the terms.\n\nEU customers")
    relevance = allocate(rows, policy.replace(ordering="relevance"))
    assert [d.source_id for d in relevance.included] == ["kb-1", "kb-2", "notice", "disclaimer-eu"]


# --------------------------------------------------------------------------- pack


def _docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds for annual plans are prorated to the day.\n\n"
                                     "Monthly plans are not refunded after the first week.\n")
    (docs / "safety.md").write_text("Never share your password with anyone, including support staff.\n")
    return docs


def test_regression_pack_fetches_a_pinned_node_that_search_did_not_return(tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    policy = load_policy(write_policy(tmp_path, "  budget: {max_tokens: 300}\n  ordering: pinned_first\n"
                                                "  pinned: [{id: safety.md/p1}]\n"))
    packed = pack(policy, "refund annual plan", [docs])
    ids = [d.source_id for d in packed.decided.allocation.included]
    assert ids[0] == "safety.md/p1"  # search never returns it: no query term is in it
    assert packed.fetched_pins == ("safety.md/p1",)
    assert packed.notes == ("1 pinned node(s) that search did not return were fetched from the index: safety.md/p1",)
    item = next(r for r in packed.decided.record["input"]["items"] if r["source_id"] == "safety.md/p1")
    assert item["relevance_score"] == 0.0 and item["metadata"]["fetched_for"] == "$.spec.pinned[0]"
    assert item["metadata"]["doc_id"] == "safety.md" and item["parent_id"] == "safety.md"


def test_pack_with_a_pin_not_in_the_index_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    policy = write_policy(tmp_path, "  budget: {max_tokens: 300}\n  pinned: [{id: safety-notice}]\n")
    code, out, err = run(capsys, "pack", "--policy", str(policy), "--query", "refund annual plan", str(docs))
    assert code == 3 and out == ""
    assert err.startswith(f"error: allocation.pin_missing: {policy}:6:12: $.spec.pinned[0]: pinned id 'safety-notice'")


def test_pack_glob_pins_fetch_every_matching_node_once(tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    policy = load_policy(write_policy(tmp_path, "  budget: {max_tokens: 300}\n  hierarchy: {exclusive: false}\n"
                                                "  pinned: [{glob: 'safety*'}, {id: safety.md}]\n"))
    packed = pack(policy, "refund annual plan", [docs])
    assert packed.fetched_pins == ("safety.md", "safety.md/p1", "safety.md/p1/t1")
    included = {d.source_id for d in packed.decided.allocation.included}
    assert {"safety.md", "safety.md/p1", "safety.md/p1/t1"} <= included


def _row_ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["source_id"] for r in rows]


def test_pack_and_the_spec_facade_share_one_conversion() -> None:
    from engine import HierarchicalIndex, SemanticSearch, TokenBudgetManager
    from engine.policy import Policy
    from engine.retrieval.convert import search_rows

    index = HierarchicalIndex()
    index.index_document("# Refunds\n\nRefunds for annual plans are prorated.\n", "kb")
    results = SemanticSearch(index).search("refund annual", top_k=5)
    rows, missing = search_rows(results, index)
    items = TokenBudgetManager().create_budget_items_from_search(results, index)
    assert missing == [] and _row_ids(rows) == [i.source_id for i in items]
    assert [r["metadata"] for r in rows] == [i.metadata for i in items]
    decided = decide(rows, Policy.default(200))
    assert decided.allocation.included
