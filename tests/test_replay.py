"""Replay (engine/audit/replay.py and ``ctxbudget audit replay``): every kind of real
decision replays identical under its own policy, stored content is recounted, status,
tokens, order and context digest are compared, differences exit 7, a what-if reports a
diff summary, and a bad record is a per-record error while the run goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditcases import SUPPORT, allocated, envelopes, every_kind, fallback, infeasible, repaired, rewrite
from engine import AuditLog, cli
from engine.audit.replay import DiffSummary, replay, replay_log
from engine.policy import BudgetStrategy
from engine.tokens import get_tokenizer


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_kind_replays_identical_under_its_own_policy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Infeasible, BPE-repaired (each strategy) and forced-fallback decisions, with and
    without stored content: before this change 7 of these 14 replayed 'different'."""
    path = tmp_path / "a.jsonl"
    labels = every_kind(AuditLog(path), monkeypatch)
    results = replay_log(AuditLog(path))
    assert [(label, r.identical, r.differences) for label, r in zip(labels, results)] == [
        (label, True, ()) for label in labels]
    code, _, err = run(capsys, "audit", "replay", str(path))
    assert code == 0
    assert err.startswith("14 decisions replayed: 14 identical, 0 changed, 0 failing their checks, "
                          "0 not replayable; items +0 -0")


def test_what_cannot_be_recounted_without_content_is_said(tmp_path: Path) -> None:
    rec = repaired(AuditLog(tmp_path / "a.jsonl"), False, BudgetStrategy.GREEDY)
    r = replay(rec)
    assert r.identical and r.notes == (
        "1 BPE repair(s) taken as recorded: content not stored, the assembled text cannot be recounted",
        "context tokens and digest not recounted: content not stored")
    assert replay(repaired(AuditLog(tmp_path / "b.jsonl"), True, BudgetStrategy.GREEDY)).notes == ()


def test_a_fallback_replays_the_heuristic_that_answered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = fallback(AuditLog(tmp_path / "a.jsonl"), True, monkeypatch)
    r = replay(rec)
    assert r.identical and r.notes[0].startswith(f"fallback re-run with {rec['strategy']['used']} "
                                                 "(the recorded solver failure: CP-SAT raised MemoryError")


def test_an_infeasible_replay_compares_the_conflicting_rules(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    infeasible(log, False)
    (env,) = list(log)
    rendered = "[refund-terms] " + "word " * 200  # the policy's template around the content
    assert env["record"]["infeasibility"]["item_tokens"] == [get_tokenizer("cl100k_base").count(rendered)]
    assert replay(env["record"]).identical
    env["record"]["infeasibility"]["core"] = env["record"]["infeasibility"]["core"][:1]
    r = replay(env["record"])
    assert [d.path for d in r.differences] == ["$.infeasibility.core"]


def test_stored_counts_are_never_trusted(tmp_path: Path) -> None:
    """A record whose item token counts (and totals) were rewritten consistently passes
    its checks, but the stored content is recounted on replay."""
    rec = allocated(AuditLog(tmp_path / "a.jsonl"), True)
    inc = [it for it in rec["items"] if it["decision"] == "included"]
    inc[0]["tokens"] -= 3
    rec["budget"]["budgeted_tokens"] -= 3
    r = replay(rec)
    assert r.findings == ()
    assert [d.path for d in r.differences] == ["$.items[*].tokens", "$.budget.budgeted_tokens"]
    assert r.differences[0].before == {inc[0]["source_id"]: inc[0]["tokens"]}
    assert not r.identical


@pytest.mark.parametrize("field,edit,store", [
    ("$.solver.status", lambda r: r["solver"].update(status="feasible"), False),
    ("$.strategy.used", lambda r: r["strategy"].update(used="greedy"), False),
    ("$.context.order", lambda r: r["context"].update(order=r["context"]["order"][::-1]), False),
    ("$.repairs", lambda r: r.update(repairs=[{"dropped": "x", "tokens_before": 9, "tokens_after": 1}]), True),
])
def test_status_strategy_order_and_repairs_are_compared(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, field: str, edit: Any, store: bool) -> None:
    path = tmp_path / "a.jsonl"
    allocated(AuditLog(path), store)
    rewrite(path, edit)
    r, = replay_log(AuditLog(path))
    assert field in [d.path for d in r.differences] and r.findings == ()
    code, out, err = run(capsys, "audit", "replay", str(path))
    assert code == cli.EXIT_REPLAY_DIFFERS == 7
    assert f"fields: {field}" in out and "1 changed" in err


def test_context_digest_is_compared(tmp_path: Path) -> None:
    rec = allocated(AuditLog(tmp_path / "a.jsonl"), True)
    rec["context"]["sha256"] = "0" * 64
    r = replay(rec)
    assert "$.context.sha256" in [d.path for d in r.differences]
    assert [f.code for f in r.findings] == ["record.context_digest"]


def test_what_if_reports_a_diff_summary_and_exits_0_unless_asked(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    allocated(log, False)
    allocated(log, True)
    tighter = tmp_path / "tighter.yaml"
    (tmp_path / "base.yaml").write_text((SUPPORT.parent / "base.yaml").read_text())
    tighter.write_text(SUPPORT.read_text().replace("max_items_per_source: 3", "max_items_per_source: 1"))
    code, out, err = run(capsys, "audit", "replay", str(path), "--policy", str(tighter))
    assert code == 0
    summary = err.splitlines()[-1]
    assert summary.startswith("2 decisions replayed: 0 identical, 2 changed, 0 failing their checks, "
                              "0 not replayable; items +0 -")
    assert summary.endswith(f"(what-if policy {tighter})")
    results = [json.loads(line) for line in run(capsys, "audit", "replay", str(path), "--policy",
                                                 str(tighter), "--json")[1].splitlines()]
    total = DiffSummary.of(replay_log(AuditLog(path), __import__("engine").load_policy(tighter)))
    assert total.items_removed == sum(len(r["removed"]) for r in results) > 0
    assert total.tokens_after < total.tokens_before
    assert total.to_dict()["tokens_delta"] == sum(r["tokens_moved"] for r in results) < 0
    code, _, _ = run(capsys, "audit", "replay", str(path), "--policy", str(tighter), "--fail-on-diff")
    assert code == cli.EXIT_REPLAY_DIFFERS


def test_an_unreadable_or_unreplayable_record_is_reported_and_the_run_goes_on(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    for _ in range(3):
        allocated(log, False)
    rewrite(path, lambda r: r["policy"]["effective"]["spec"].update(budget="nonsense"), index=1)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]))
    code, out, err = run(capsys, "audit", "replay", str(path))
    assert code == cli.EXIT_LOG_NOT_INTACT
    rows = out.splitlines()
    assert rows[0].startswith("line 2: error: line 2 is not JSON: Expecting property name enclosed in double "
                              "quotes at column 2")
    assert "error: the record cannot be replayed: " in rows[2] and "[FAILED CHECKS: " in rows[2]
    assert sum("identical" in r for r in rows) == 2
    assert err.startswith("4 decisions replayed: 2 identical, 0 changed, 1 failing their checks, "
                          "2 not replayable")


def test_help_documents_exit_7(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "7 replay differs" in out


def test_a_record_missing_a_field_the_checks_do_not_cover_is_a_per_record_error(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    allocated(log, False)
    allocated(log, False)
    rewrite(path, lambda r: r.pop("solver"))
    code, out, err = run(capsys, "audit", "replay", str(path))
    assert code == cli.EXIT_LOG_NOT_INTACT
    first, second = out.splitlines()
    assert first.endswith(": error: the record cannot be replayed (KeyError: 'solver'); it was "
                          "hand-edited or damaged [FAILED CHECKS: record.schema]")
    assert "identical" in second and "1 not replayable" in err
    # without the checks' verdict, replay alone still answers per record
    r = replay(envelopes(path)[0]["record"], findings=())
    assert r.error == "the record cannot be replayed (KeyError: 'solver'); it was hand-edited or damaged"


def test_a_line_changed_without_resealing_marks_its_replay(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    allocated(AuditLog(path), False)
    path.write_text(path.read_text().replace('"relevance_score":0.9', '"relevance_score":0.91', 1))
    code, out, _ = run(capsys, "audit", "replay", str(path))
    assert code == cli.EXIT_LOG_NOT_INTACT
    assert "[FAILED CHECKS: chain.modified, record.input_digest]" in out
