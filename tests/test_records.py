"""Record checks (engine/audit/records.py): each recomputed claim, on real records, and
the consistent forgery of issue 12 caught by ``audit verify``, ``replay`` and ``show``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

from auditcases import allocated, envelopes, every_kind, repaired, reseal, rewrite, support_rows
from engine import AuditLog, cli
from engine.allocate import allocate
from engine.audit import record as audit
from engine.audit.compact import expand
from engine.audit.privacy import configured_secret
from engine.audit.records import check_log, check_record
from engine.audit.show import render
from engine.policy import BudgetStrategy, Policy

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "audit.schema.json").read_text())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def codes(record: dict[str, Any]) -> list[str]:
    """The findings on ``record``, checked with the suite's secret (its keyed digests too)."""
    return sorted({f.code for f in check_record(record, 1, configured_secret(None, None))})


def test_every_kind_of_real_record_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    labels = every_kind(log, monkeypatch)
    checks = check_log(log)
    assert len(checks.decisions) == len(labels) == 14
    assert checks.ok and checks.record_findings == ()


def _edit(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def go(rec: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = rec
        for key in head:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value(node[int(last) if last.isdigit() else last])
    return go


CASES = [
    ("policy digest", "policy.digest", lambda v: "sha256:" + "1" * 64, "record.policy_digest"),
    ("an input score", "input.items.1.relevance_score", lambda v: v + 0.01, "record.input_digest"),
    ("input count", "input.count", lambda v: v + 1, "record.input_count"),
    ("an item's decision", "items.1.decision", lambda v: "excluded" if v == "included" else "included",
     "record.context_order"),
    ("a token total", "budget.budgeted_tokens", lambda v: v - 1, "record.tokens"),
    ("assembled tokens", "budget.assembled_tokens", lambda v: v - 1, "record.tokens"),
    ("free tokens", "budget.free_tokens", lambda v: v + 1, "record.tokens"),
    ("context order twice", "context.order", lambda v: v + v[:1], "record.context_order"),
    ("an item's content digest", "items.0.content_sha256", lambda v: "0" * 64, "record.items"),
    ("the tokenizer", "tokenizer.name", lambda v: "gpt2", "record.tokenizer"),
    ("the budget limit", "budget.limit_tokens", lambda v: v + 1, "record.budget_limit"),
]


@pytest.mark.parametrize("what,path,value,code", CASES, ids=[c[0] for c in CASES])
def test_each_claim_is_recomputed(tmp_path: Path, what: str, path: str, value: Any, code: str) -> None:
    rec = allocated(AuditLog(tmp_path / "a.jsonl"), False)
    assert codes(rec) == []
    forged = copy.deepcopy(rec)
    _edit(path, value)(forged)
    assert code in codes(forged), what


def test_stored_content_is_recounted_and_hashed(tmp_path: Path) -> None:
    rec = allocated(AuditLog(tmp_path / "a.jsonl"), True)
    assert codes(rec) == []
    # totals kept consistent with each other: only the recount of the content can tell
    forged = copy.deepcopy(rec)
    forged["context"]["tokens"] -= 5
    forged["budget"]["assembled_tokens"] -= 5
    forged["budget"]["free_tokens"] += 5
    found = check_record(forged, 7)
    assert [f.code for f in found] == ["record.context_recount"]
    assert found[0].seq == 7 and found[0].path == "$.context.tokens"
    assert found[0].message == (f"the stored content assembles to {rec['context']['tokens']:,} tokens in "
                                f"cl100k_base, not the recorded {rec['context']['tokens'] - 5:,}")
    swapped = copy.deepcopy(rec)
    swapped["context"]["order"] = swapped["context"]["order"][::-1]
    assert "record.context_digest" in codes(swapped)
    changed = copy.deepcopy(rec)
    changed["input"]["items"][0]["content"] += " (edited)"
    assert "record.content_digest" in codes(changed)


def test_a_repaired_record_passes_and_a_forged_repair_total_does_not(tmp_path: Path) -> None:
    rec = repaired(AuditLog(tmp_path / "a.jsonl"), True, BudgetStrategy.OPTIMAL)
    assert codes(rec) == []
    rec["items"][1]["decision"] = "included"  # "dash" back in, nothing else changed
    assert codes(rec) == ["record.context_order", "record.tokens"]


def test_a_hand_edited_record_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    rec = allocated(AuditLog(tmp_path / "a.jsonl"), False)
    for mangle in (lambda r: r.pop("items"), lambda r: r["input"].update(items="x"),
                   lambda r: r["context"].update(order=None), lambda r: r.update(policy=[])):
        bad = copy.deepcopy(rec)
        mangle(bad)
        found = check_record(bad, 3)
        assert {"record.schema", "record.malformed"} <= {f.code for f in found}, found
    assert check_record([], 4)[0].message == "the record is not a JSON object"  # type: ignore[arg-type]
    bad = copy.deepcopy(rec)
    bad.pop("items")
    schema, malformed = check_record(bad, 3)
    assert (schema.path, schema.message) == ("$", "the record does not match schemas/audit.schema.json: "
                                             "'items' is a required property")
    assert (malformed.path, malformed.message) == ("$.items", "$.items is missing; the record was not "
                                                   "written by ctxbudget as it stands (hand-edited or damaged)")


def consistent_forgery(path: Path) -> str:
    """Issue 12: re-run the engine with a ``blocked`` rule added to the record's
    ``policy.effective``, keep the original digest, reseal the chain. Returns the item
    the forgery took out."""
    records = [e["record"] for e in envelopes(path)]
    rec = records[0] = expand(records[0])  # compact records are edited in full
    victim = next(it["source_id"] for it in rec["items"]
                  if it["decision"] == "included" and it["reason"] != "pinned")
    effective = copy.deepcopy(rec["policy"]["effective"])
    effective["spec"]["blocked"].append({"id": victim, "reason": "never happened"})
    forged_policy = Policy.from_mapping(effective)
    cands = support_rows()
    alloc = allocate(cands, forged_policy)
    forged = audit.build(forged_policy, cands, alloc, decision_id=rec["decision_id"])
    forged["timestamp"] = rec["timestamp"]
    forged["policy"] = {**rec["policy"], "effective": effective}  # original name, file, digest
    records[0] = forged
    reseal(path, records)
    return victim


def test_consistent_forgery_is_caught_by_verify_replay_and_show(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    allocated(log, False)
    allocated(log, False)
    victim = consistent_forgery(path)
    assert log.verify().ok  # the chain alone cannot tell: it was resealed
    code, out, _ = run(capsys, "audit", "verify", str(path))
    assert code == cli.EXIT_LOG_NOT_INTACT
    assert "record checks: 2 decision records checked, 1 failed" in out
    assert "record.policy_digest at $.policy.digest: the effective policy hashes to sha256:" in out
    code, out, err = run(capsys, "audit", "replay", str(path))
    assert code == cli.EXIT_LOG_NOT_INTACT
    first = out.splitlines()[0]
    assert "[FAILED CHECKS: record.policy_digest]" in first and "identical" not in first
    assert "2 decisions replayed: 1 identical, 0 changed, 1 failing their checks, 0 not replayable" in err
    code, out, err = run(capsys, "audit", "show", str(path))
    assert code == cli.EXIT_LOG_NOT_INTACT
    shown = out.split("decision ")
    assert out.startswith("[FAILED CHECKS: record.policy_digest] do not rely on this record\n")
    assert f"- {victim}" in out and "[blocked] " in out  # the forged reason, marked
    assert out.count("[FAILED CHECKS") == 1 and len(shown) > 2
    assert "1 of 2 shown decision record(s) FAILED their checks" in err


def test_flipping_an_excluded_item_and_resealing_is_caught(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The 40-line forgery: flip one excluded item to included, reseal every line."""
    path = tmp_path / "a.jsonl"
    allocated(AuditLog(path), False)

    def flip(rec: dict[str, Any]) -> None:
        item = next(it for it in rec["items"] if it["decision"] == "excluded")
        item["decision"], item["reason"] = "included", "selected"

    rewrite(path, flip)
    code, out, _ = run(capsys, "audit", "verify", str(path), "--json")
    assert code == cli.EXIT_LOG_NOT_INTACT
    assert '"records_failed": 1' in out and '"code": "record.context_order"' in out


def test_show_json_carries_the_findings_of_a_failing_record(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    allocated(AuditLog(path), False)
    rewrite(path, lambda r: r["input"].update(count=99))
    code, out, _ = run(capsys, "audit", "show", str(path), "--json")
    assert code == cli.EXIT_LOG_NOT_INTACT
    assert '"failed_checks": [{"code": "record.input_count"' in out


def test_render_marks_findings_first() -> None:
    env = {"seq": 1, "record": {"outcome": "infeasible", "infeasibility": {"message": "m", "core": []}}}
    assert not render(env).startswith("[FAILED")
    assert render(env, ["x"]).startswith("[FAILED CHECKS: x] do not rely on this record\n  ! ")


def test_show_prints_a_damaged_record_under_its_banner(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    allocated(AuditLog(path), False)
    rewrite(path, lambda r: r["items"][0].pop("relevance"))
    code, out, _ = run(capsys, "audit", "show", str(path))
    assert code == cli.EXIT_LOG_NOT_INTACT  # digests and totals hold; the schema does not
    assert out.startswith("[FAILED CHECKS: record.schema] do not rely on this record\n"
                          "  ! record.schema at $.items[0]: the record does not match "
                          "schemas/audit.schema.json: 'relevance' is a required property\n")
    assert "seq 1: the record cannot be laid out as text (KeyError: 'relevance'); its JSON follows" in out


@pytest.mark.parametrize("edit", [
    lambda r: r["items"][1].update(tokens=True), lambda r: r["items"][1].update(tokens=-1),
    lambda r: r["items"][1].update(reason="made_up"), lambda r: r["items"][1].update(content_sha256="XY"),
    lambda r: r["items"][1].update(extra=1), lambda r: r["items"][1].pop("rule"),
    lambda r: r["input"]["items"][2].update(source_id=""), lambda r: r["input"]["items"][2].update(level=3),
    lambda r: r["input"]["items"][2].update(token_count=1.5), lambda r: r.update(outcome="maybe"),
    lambda r: None,
], ids=["bool-tokens", "negative", "enum", "pattern", "extra", "missing", "min-length", "type",
        "integer", "skeleton", "valid"])
def test_the_compiled_row_check_agrees_with_jsonschema(tmp_path: Path, edit: Any) -> None:
    rec = allocated(AuditLog(tmp_path / "a.jsonl"), False)
    edit(rec)
    full = [e for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(rec)]
    ours = [f for f in check_record(rec, 1) if f.code == "record.schema"]
    assert bool(full) == bool(ours)
    if full:
        best = jsonschema.exceptions.best_match(iter(full))
        assert ours[0].message.endswith(best.message)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*at, k))
    elif isinstance(value, list):
        for k, v in enumerate(value):
            out += _paths(v, (*at, k))
    return out


_SWAPS: tuple[Any, ...] = (None, True, -1, 1.5, "", "made_up", {}, [None])
_MISSING = object()


def test_the_compiled_record_check_accepts_only_what_jsonschema_accepts(tmp_path: Path) -> None:
    """Issue 13 part 4: a record the compiled check passes skips jsonschema. In an
    allocated and an infeasible record (content stored, so every field is there; the
    first rows of the per-item arrays), every key removed, every value swapped for one
    of a set of wrong values in turn, an extra key added to every object: whenever jsonschema
    finds an error, the compiled check says no (so the error is then reported with
    jsonschema's message)."""
    from auditcases import infeasible

    from engine.audit.recordschema import _record_check

    log = AuditLog(tmp_path / "a.jsonl")
    allocated(log, True)
    infeasible(log, True)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    fast = _record_check()
    tried = caught = 0
    for env in log:
        rec = env["record"]
        for rows in (rec["input"]["items"], rec.get("items", [])):
            del rows[2:]  # the first rows stand for the rest (the schema does not count them)
        assert fast(rec) and validator.is_valid(rec)
        paths = _paths(rec)[1:] if rec["outcome"] == "allocated" else \
            [p for p in _paths(rec)[1:] if p[0] in ("outcome", "infeasibility", "items")]
        for n, path in enumerate(paths):
            *head, last = path
            parent = rec_at(rec, tuple(head))
            old = parent[last]
            # each path: removed, one wrong value (in turn), an extra key if it is an object
            for new in (_MISSING, _SWAPS[n % len(_SWAPS)], "extra"):
                if new == "extra":
                    if not isinstance(old, dict):
                        continue
                    parent[last] = {**old, "unexpected_key": 1}
                elif new is _MISSING:
                    if not isinstance(parent, dict):
                        continue
                    del parent[last]
                else:
                    parent[last] = new
                tried += 1
                if not validator.is_valid(rec):
                    caught += 1
                    assert not fast(rec), (path, new)
                parent[last] = old
            if isinstance(parent, dict):  # back in its place: key order is part of the record
                parent.update({k: parent.pop(k) for k in list(parent)[list(parent).index(last) + 1:]})
    assert tried > 500 and caught > tried // 3


def rec_at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@pytest.mark.parametrize("edit", [
    lambda rows, items: items[-1].update(tokens=True), lambda rows, items: items[-1].update(tokens=-1),
    lambda rows, items: items[-1].update(tokens=float("nan")), lambda rows, items: items[-1].update(value=-0.5),
    lambda rows, items: items[-1].update(reason="made_up"), lambda rows, items: items[-1].update(decision=1),
    lambda rows, items: items[-1].update(decision=["included"]), lambda rows, items: items[-1].update(content_sha256="XY"),
    lambda rows, items: items[-1].update(extra=1), lambda rows, items: items[-1].pop("rule"),
    lambda rows, items: rows[-1].update(source_id=""), lambda rows, items: rows[-1].update(level=3),
    lambda rows, items: rows[-1].update(token_count=1.5), lambda rows, items: rows[-1].update(parent_id=True),
    lambda rows, items: rows.append([]), lambda rows, items: rows[-1].pop("content", None),
    lambda rows, items: None,
], ids=["bool-tokens", "negative", "nan", "negative-float", "enum", "enum-type", "enum-unhashable", "pattern",
        "extra", "missing", "min-length", "type", "integer", "null-or-string", "not-object", "optional-gone",
        "valid"])
def test_the_column_check_of_the_per_item_arrays_agrees_with_jsonschema(tmp_path: Path, edit: Any) -> None:
    """The per-item arrays are checked column by column (recordschema ``_columns``): an
    edit to the last row of a many-row record is caught wherever jsonschema catches it,
    and a valid record passes without jsonschema."""
    from engine.audit.recordschema import _columns, _record_check

    rec = allocated(AuditLog(tmp_path / "a.jsonl"), True)
    rows, items = rec["input"]["items"], rec["items"]
    assert len(rows) >= 3 and len(items) >= 3
    edit(rows, items)
    valid = jsonschema.Draft202012Validator(SCHEMA).is_valid(rec)
    assert _record_check()(rec) is valid
    columns = _columns(SCHEMA["properties"]["items"]["items"], SCHEMA["$defs"])
    assert columns is not None and columns(items) is jsonschema.Draft202012Validator(
        {"$defs": SCHEMA["$defs"], **SCHEMA["properties"]["items"]}).is_valid(items)
