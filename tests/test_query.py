"""engine.audit.query and engine.audit.export, and `ctxbudget audit query/export`, over
real decisions written by engine.decide (tests/auditcases.py makes the hard kinds)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from auditcases import allocated, fallback, infeasible, repaired, rewrite, support, support_rows
from engine import AuditLog, cli
from engine.audit import query as q
from engine.audit.export import DECISION_COLUMNS, ITEM_COLUMNS, write_parquet
from engine.decide import decide
from engine.errors import UsageError
from engine.policy import BudgetStrategy, Policy

NOV20 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
NOV25 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
DEC01 = datetime(2026, 12, 1, 8, 30, tzinfo=timezone.utc)
OPT, DOC, GREEDY = (f"00000000-0000-4000-8000-00000000000{k}" for k in (1, 2, 3))  # ids are UUIDs
DOCS = [{"source_id": "handbook#p1", "content": "Refunds within 30 days.", "relevance_score": 0.9,
         "metadata": {"doc_id": "handbook"}},
        {"source_id": "faq#p1", "content": "word " * 55, "relevance_score": 0.8,
         "metadata": {"doc": "faq"}},
        {"source_id": "faq#p2", "content": "Shipping takes a week.", "relevance_score": 0.3,
         "metadata": {"doc": "faq"}}]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Log A: optimal (support, Nov 20), docs (Nov 25; faq#p1 over budget), infeasible,
    fallback, repaired greedy. Log B: one greedy support decision (Dec 1)."""
    root = tmp_path_factory.mktemp("query")
    a, b = AuditLog(root / "a.jsonl", signer=None), AuditLog(root / "b.jsonl", signer=None)
    decide(support_rows(), support(False), audit_log=a, decision_id=OPT, now=NOV20)
    docs = Policy.default(60, separator="\n", tokenizer="cl100k_base").replace(name="docs", revision="r7")
    decide(DOCS, docs, audit_log=a, decision_id=DOC, now=NOV25)
    infeasible(a, False)
    with pytest.MonkeyPatch.context() as mp:
        fallback(a, False, mp)
    repaired(a, False, BudgetStrategy.GREEDY)
    decide(support_rows(), support(True), audit_log=b, strategy=BudgetStrategy.GREEDY,
           decision_id=GREEDY, now=DEC01)
    return a.path, b.path


def ids(result: q.QueryResult) -> list[str]:
    return [str(m.record["decision_id"]) for m in result.matches]


def find(paths: tuple[Path, ...] | list[Path], **kw: Any) -> q.QueryResult:
    return q.search(q.Query(**kw), [AuditLog(p, signer=None) for p in paths])


def statuses(result: q.QueryResult) -> list[str | None]:
    return [q.decision_status(m.record) for m in result.matches]


# -- each filter: a match and a non-match ---------------------------------------------------
def test_no_filter_lists_every_decision_of_every_log(logs: tuple[Path, Path]) -> None:
    r = find(logs)
    assert statuses(r) == ["optimal", "optimal", "infeasible", "fallback", "heuristic", "heuristic"]
    assert r.searched == 6 and r.trustworthy
    assert r.summary() == "6 decisions of 6 matched in 2 logs"


def test_source_id_means_sent_to_the_model(logs: tuple[Path, Path]) -> None:
    assert ids(find(logs, source_ids=("handbook#p1",))) == [DOC]
    # faq#p1 was a candidate but left out: not "sent", unless any decision is asked for
    assert ids(find(logs, source_ids=("faq#p1",))) == []
    hit = find(logs, source_ids=("faq#p1",), any_decision=True).matches
    assert [(it["decision"], it["reason"]) for it in hit[0].items] == [("excluded", "over_budget")]


def test_source_id_globs(logs: tuple[Path, Path]) -> None:
    r = find(logs[:1], source_ids=("faq#*",), any_decision=True)
    assert ids(r) == [DOC] and [it["source_id"] for it in r.matches[0].items] == ["faq#p1", "faq#p2"]
    assert ids(find(logs, source_ids=("nosuch*",), any_decision=True)) == []


def test_infeasible_candidates_match_only_with_any_decision(logs: tuple[Path, Path]) -> None:
    assert ids(find(logs, source_ids=("refund-terms",), statuses=("infeasible",))) == []
    r = find(logs, source_ids=("refund-terms",), statuses=("infeasible",), any_decision=True)
    assert len(r.matches) == 1 and r.matches[0].items[0]["decision"] is None


def test_doc_reads_doc_id_and_doc_metadata(logs: tuple[Path, Path]) -> None:
    assert ids(find(logs, docs=("handbook",))) == [DOC]
    r = find(logs, docs=("faq",))  # faq#p2 was sent, faq#p1 was not
    assert [it["source_id"] for it in r.matches[0].items] == ["faq#p2"]
    assert ids(find(logs, docs=("manual",), any_decision=True)) == []


def test_since_and_until(logs: tuple[Path, Path]) -> None:
    since = q.parse_time("2026-11-25")
    until = q.parse_time("2026-11-25", flag="--until", end_of_day=True)
    assert ids(find(logs, since=since, until=until)) == [DOC]
    assert ids(find(logs, until=q.parse_time("2026-11-19T23:59:59Z", flag="--until"))) == []
    # an offset is honoured: 11:00+01:00 is 10:00 UTC, the first decision's time
    assert ids(find(logs, until=q.parse_time("2026-11-20T11:00+01:00", flag="--until"))) == [OPT]


def test_policy_and_revision(logs: tuple[Path, Path]) -> None:
    assert ids(find(logs, policies=("docs",))) == [DOC]
    assert ids(find(logs, revisions=("r7",))) == [DOC]
    assert ids(find(logs, policies=("docs",), revisions=("r8",))) == []
    support_ids = ids(find(logs, policies=("support-assistant",)))  # the infeasible one too
    assert len(support_ids) == 3 and support_ids[0] == OPT and support_ids[2] == GREEDY


def test_status(logs: tuple[Path, Path]) -> None:
    assert statuses(find(logs, statuses=("fallback", "infeasible"))) == ["infeasible", "fallback"]
    assert ids(find(logs, statuses=("feasible",))) == []
    with pytest.raises(UsageError, match="unknown status 'done'; use one of optimal, feasible"):
        q.Query(statuses=("done",))


def test_reason(logs: tuple[Path, Path]) -> None:
    r = find(logs, reasons=("dropped_in_repair",))
    assert statuses(r) == ["heuristic"] and r.matches[0].items[0]["source_id"] == "dash"
    assert ids(find(logs, reasons=("blocked",))) == [OPT, GREEDY]  # support-assistant blocks a source
    assert ids(find(logs, reasons=("level_share",))) == []


def test_filters_and_together_on_the_same_item(logs: tuple[Path, Path]) -> None:
    assert ids(find(logs, source_ids=("faq#p1",), reasons=("over_budget",))) == [DOC]
    assert ids(find(logs, source_ids=("faq#p2",), reasons=("over_budget",))) == []
    assert ids(find(logs, source_ids=("faq#p1",), reasons=("over_budget",), policies=("support-assistant",))) == []
    assert ids(find(logs, policies=("support-assistant",), statuses=("heuristic",))) == [GREEDY]


# -- dates ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "2026-12-01T25:00", ""])
def test_bad_dates_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        q.parse_time(bad, flag="--until")
    assert info.value.code == "query.bad_time"
    assert info.value.message.startswith(f"--until {bad!r} is not an ISO 8601 date or timestamp; write e.g. 2026-12-01")


def test_parse_time_forms() -> None:
    assert q.parse_time("2026-12-01") == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert q.parse_time("2026-12-01", end_of_day=True) == datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=timezone.utc)
    assert q.parse_time("2026-12-01T10:00Z") == q.parse_time("2026-12-01T11:00+01:00")


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(UsageError, match="is after --until"):
        q.Query(since=q.parse_time("2026-12-02"), until=q.parse_time("2026-12-01"))


# -- the command ----------------------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_lines(logs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "audit", "query", str(logs[0]), str(logs[1]), "--doc", "faq",
                         "--any-decision", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert (row["log"], row["seq"], row["decision_id"], row["policy"], row["revision"], row["status"],
            row["checks"]) == (str(logs[0]), 2, DOC, "docs", "r7", "optimal", "ok")
    assert row["timestamp"] == "2026-11-25T12:00:00.000000Z"
    assert [(i["source_id"], i["doc"], i["decision"], i["reason"]) for i in row["items"]] == [
        ("faq#p1", "faq", "excluded", "over_budget"), ("faq#p2", "faq", "included", "selected")]
    assert err.strip() == "1 decisions of 6 matched in 2 logs"


def test_cli_table(logs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "audit", "query", str(logs[0]), str(logs[1]), "--policy", "support-assistant",
                         "--status", "optimal", "--status", "heuristic")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[0].split() == ["LOG", "SEQ", "TIMESTAMP", "DECISION", "POLICY", "REVISION", "STATUS", "ITEMS"]
    assert lines[1].split()[1:4] == ["1", "2026-11-20T10:00:00.000000Z", OPT]
    assert lines[2].split()[1:] == ["1", "2026-12-01T08:30:00.000000Z", GREEDY, "support-assistant",
                                    "2026-11-25.1+stored", "heuristic"]
    # aligned: every column starts at the same offset on every row
    assert lines[0].index("TIMESTAMP") == lines[1].index("2026-11-20") == lines[2].index("2026-12-01")
    assert lines[-1] == "2 decisions of 6 matched in 2 logs"


def test_cli_bad_date_exits_2(logs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "audit", "query", str(logs[0]), "--since", "last week")
    assert (code, out) == (2, "")
    assert "error: query.bad_time: --since 'last week' is not an ISO 8601 date or timestamp" in err


def test_cli_bad_status_exits_2(logs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "audit", "query", str(logs[0]), "--status", "done")
    assert code == 2 and "invalid choice: 'done'" in err


def test_cli_statuses_agree_with_the_module() -> None:
    assert cli.QUERY_STATUSES == q.STATUSES


# -- a tampered log is marked, not shown as good ----------------------------------------------
def test_a_forged_record_is_marked(logs: tuple[Path, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    forged = tmp_path / "forged.jsonl"
    shutil.copy(logs[0], forged)

    def include_faq(rec: dict[str, Any]) -> None:  # flip the excluded item, reseal the chain
        rec["items"][1].update(decision="included", reason="selected")

    rewrite(forged, include_faq, index=1)
    r = find([forged], source_ids=("faq#p1",))
    assert ids(r) == [DOC] and not r.trustworthy
    assert "record.context_order" in {f.code for f in r.matches[0].findings}
    code, out, _ = run(capsys, "audit", "query", str(forged), "--source-id", "faq#p1")
    assert code == cli.EXIT_LOG_NOT_INTACT
    lines = out.splitlines()
    assert lines[1].startswith("! ") and DOC in lines[1]
    assert any(line.startswith(f"! {forged} seq 2: record.context_order") for line in lines)
    assert lines[-1] == "1 decisions of 5 matched in 1 log; 1 FAILED their checks (marked !)"
    code, out, _ = run(capsys, "audit", "query", str(forged), "--source-id", "faq#p1", "--json")
    assert code == 6 and json.loads(out)["checks"] == "failed"


def test_a_broken_chain_is_reported_even_without_a_failed_match(logs: tuple[Path, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.jsonl"
    lines = logs[0].read_bytes().splitlines(keepends=True)
    cut.write_bytes(b"".join(lines[:1] + lines[2:]))  # seq 2 deleted
    r = find([cut], statuses=("optimal",))
    assert ids(r) == [OPT] and not r.matches[0].findings and not r.trustworthy
    assert r.summary().startswith(f"1 decisions of 4 matched in 1 log; NOT INTACT: {cut}")


# -- export -----------------------------------------------------------------------------------
def test_export_csv_one_row_per_decision(logs: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d.csv"
    code, _, err = run(capsys, "audit", "export", str(logs[0]), str(logs[1]), "--out", str(out))
    assert code == 0 and f"wrote 6 decision rows (6 decisions) to {out}" in err
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [c for c, _ in DECISION_COLUMNS]
    docs = rows[1]
    assert {k: docs[k] for k in ("seq", "decision_id", "policy", "revision", "status", "strategy_used",
                                 "tokens_limit", "candidates", "included", "excluded", "checks")} == {
        "seq": "2", "decision_id": DOC, "policy": "docs", "revision": "r7", "status": "optimal",
        "strategy_used": "optimal", "tokens_limit": "60", "candidates": "3", "included": "2",
        "excluded": "1", "checks": "ok"}
    assert int(docs["tokens_used"]) <= 60 and docs["digest"].startswith("sha256:")
    assert [r["status"] for r in rows] == ["optimal", "optimal", "infeasible", "fallback", "heuristic", "heuristic"]
    assert rows[2]["tokens_used"] == "" and rows[2]["outcome"] == "infeasible"


def test_export_csv_items(logs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "i.csv"
    assert run(capsys, "audit", "export", str(logs[0]), "--items", "--out", str(out))[0] == 0
    with out.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["decision_id"] == DOC]
    assert [(r["source_id"], r["doc"], r["level"], r["decision"], r["reason"]) for r in rows] == [
        ("handbook#p1", "handbook", "PARAGRAPH", "included", "selected"),
        ("faq#p1", "faq", "PARAGRAPH", "excluded", "over_budget"),
        ("faq#p2", "faq", "PARAGRAPH", "included", "selected")]
    assert rows[0]["relevance"] == "0.9" and rows[1]["tokens"] == "56"


def test_export_parquet_reads_back(logs: tuple[Path, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d.parquet"
    assert run(capsys, "audit", "export", str(logs[0]), str(logs[1]), "--format", "parquet",
               "--out", str(out))[0] == 0
    table = pq.read_table(out)
    assert table.column_names == [c for c, _ in DECISION_COLUMNS]
    assert str(table.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("tokens_limit").type) == "int64"
    data = table.to_pylist()
    assert [r["decision_id"] for r in data if r["decision_id"] in (OPT, DOC, GREEDY)] == [
        OPT, DOC, GREEDY]
    docs = next(r for r in data if r["decision_id"] == DOC)
    assert (docs["seq"], docs["policy"], docs["revision"], docs["included"], docs["excluded"],
            docs["tokens_limit"], docs["timestamp"]) == (2, "docs", "r7", 2, 1, 60, NOV25)
    assert next(r for r in data if r["status"] == "infeasible")["tokens_used"] is None


def test_export_parquet_items(logs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "i.parquet"
    assert run(capsys, "audit", "export", str(logs[1]), "--format", "parquet", "--items",
               "--out", str(out))[0] == 0
    table = pq.read_table(out)
    assert table.column_names == [c for c, _ in ITEM_COLUMNS]
    rows = table.to_pylist()
    assert len(rows) == 13 and {r["decision_id"] for r in rows} == {GREEDY}
    assert rows[1]["source_id"] == "kb#refunds-0" and rows[1]["decision"] == "included"
    assert isinstance(rows[1]["relevance"], float) and isinstance(rows[1]["tokens"], int)


def test_export_marks_a_forged_record(logs: tuple[Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    forged = tmp_path / "forged.jsonl"
    shutil.copy(logs[0], forged)
    rewrite(forged, lambda rec: rec["items"][1].update(decision="included"), index=1)
    out = tmp_path / "f.csv"
    code, _, err = run(capsys, "audit", "export", str(forged), "--out", str(out))
    assert code == 6 and "warning: 1 decision record(s) FAILED their checks" in err
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["checks"] for r in rows] == ["ok", "failed", "ok", "ok", "ok"]
    assert "record.context_order" in rows[1]["failed_checks"].split()


def test_parquet_without_pyarrow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    with pytest.raises(UsageError) as info:
        write_parquet([], DECISION_COLUMNS, tmp_path / "x.parquet")
    assert info.value.code == "export.missing_extra"
    assert "pip install 'ctxbudget[export]'" in info.value.message
    assert not (tmp_path / "x.parquet").exists()


def test_export_to_a_missing_folder_exits_2(logs: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "audit", "export", str(logs[0]), "--out", str(tmp_path / "no" / "x.csv"))
    assert code == 2 and "error: export.bad_out" in err and "does not exist; create it first" in err


def test_query_and_export_help_load_no_heavy_module() -> None:
    code = ("import sys\nfrom engine import cli\n"
            "for argv in (['audit', 'query', '--help'], ['audit', 'export', '--help']):\n"
            "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'ortools', 'jsonschema')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"


def test_cli_parquet_without_pyarrow_exits_2(logs: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    code, _, err = run(capsys, "audit", "export", str(logs[1]), "--format", "parquet",
                       "--out", str(tmp_path / "x.parquet"))
    assert code == 2 and "error: export.missing_extra: --format parquet needs pyarrow" in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_items_read_what_a_compact_record_leaves_out(logs: tuple[Path, Path]) -> None:
    env = next(e for e in AuditLog(logs[0], signer=None) if e["record"]["decision_id"] == DOC)
    for it in env["record"]["items"]:
        del it["level"], it["relevance"]
    items = q.decision_items(env["record"])
    assert [(i["level"], i["relevance"]) for i in items] == [("PARAGRAPH", 0.9), ("PARAGRAPH", 0.8),
                                                               ("PARAGRAPH", 0.3)]


def test_issue_which_decisions_sent_document_x_last_week(logs: tuple[Path, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The reviewer's question from the issue, answered from the command line."""
    code, out, err = run(capsys, "audit", "query", str(logs[0]), str(logs[1]), "--doc", "handbook",
                         "--since", "2026-11-23", "--until", "2026-11-29", "--json")
    assert code == 0 and [json.loads(line)["decision_id"] for line in out.splitlines()] == [DOC]
    assert err.strip() == "1 decisions of 6 matched in 2 logs"
    code, out, _ = run(capsys, "audit", "query", str(logs[0]), "--doc", "handbook", "--since", "2026-11-26")
    assert code == 0 and out.splitlines() == ["0 decisions of 5 matched in 1 log"]
