"""What-if at scale (engine/audit/whatif*.py, ``ctxbudget audit whatif``): shards cut on
line boundaries and anchored to the line before; every shard's chain verified before its
records are used; the aggregate diff agrees with a plain serial replay; it is identical
inline, on a process pool of 2 and on Dask; memory does not grow with the log; JSON,
Parquet and the report section."""

from __future__ import annotations

import json
import os
import random
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from auditcases import ROOT, envelopes, reseal
from engine import AuditLog, cli, load_policy
from engine.audit import whatifshard
from engine.audit.lineformat import GENESIS_HASH, EnvelopeKind, encode_record, scan_line, seal
from engine.audit.replay import replay_log
from engine.audit.whatif import Task, collect, run_shard, whatif
from engine.audit.whatifshard import plan
from engine.decide import decide
from engine.policy import Policy, Rotate

SUPPORT_DECISIONS = 18
LEGAL_DECISIONS = 3


def _variant(rows: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Support candidates as traffic varies them: some chunks missing (often most of
    them), scores moved."""
    out = []
    keep = rng.choice((0.15, 0.3, 0.9))
    for r in rows:
        if r["source_id"] != "refund-terms" and rng.random() > keep:
            continue
        out.append({**r, "relevance_score": round(min(1.0, max(0.0, r["relevance_score"] + rng.uniform(-0.2, 0.2))), 3)})
    return out


def _rows(name: str) -> list[dict[str, Any]]:
    path = ROOT / "tests" / "fixtures" / "candidates" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_policy(folder: Path, *, cap: int, revision: str) -> Path:
    """The shipped support policy with another per-source cap (a real policy change).
    Its solver gets 30 s instead of 2: under a wall-clock limit that a loaded machine
    can reach, the answer would depend on the load, not on who ran it."""
    base = (ROOT / "policies" / "base.yaml").read_text()
    assert "time_limit_s: 2.0" in base
    (folder / "base.yaml").write_text(base.replace("time_limit_s: 2.0", "time_limit_s: 30.0"))
    text = (ROOT / "policies" / "support-assistant.yaml").read_text()
    assert "max_items_per_source: 3" in text and 'revision: "2026-11-25.1"' in text
    text = text.replace("max_items_per_source: 3", f"max_items_per_source: {cap}")
    path = folder / f"support-cap{cap}.yaml"
    path.write_text(text.replace('revision: "2026-11-25.1"', f'revision: "{revision}"'))
    return path


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A log of 18 support and 3 legal decisions in segments of 8 lines, and the new
    policy (support, at most 2 chunks per source instead of 3)."""
    folder = tmp_path_factory.mktemp("whatif")
    (folder / "logs").mkdir()
    log = AuditLog(folder / "logs" / "decisions.jsonl", signer=None, rotate=Rotate(max_records=8))
    rng = random.Random(17)
    support = load_policy(ROOT / "policies" / "support-assistant.yaml")
    legal = load_policy(ROOT / "policies" / "legal-research.yaml")
    rows = _rows("support-assistant")
    for k in range(SUPPORT_DECISIONS + LEGAL_DECISIONS):
        if k % 7 == 3:
            decide(_rows("legal-research"), legal, audit_log=log)
        else:
            decide(_variant(rows, rng), support, audit_log=log)
    return log.path, _write_policy(folder, cap=2, revision="2026-12-01.1")


def _lines(log: Path) -> list[tuple[str, bytes]]:
    names = AuditLog(log, signer=None).segments()
    return [(n, raw) for n in names for raw in log.with_name(n).read_bytes().splitlines()]


def test_shards_cut_on_line_ends_and_anchor_to_the_line_before(logged: tuple[Path, Path]) -> None:
    log, _ = logged
    shards, problems = plan([log], 9000)
    assert problems == []
    assert len(AuditLog(log, signer=None).segments()) == 3
    assert len(shards) > 3 * 2  # several shards per segment
    previous: tuple[int, str] | None = None
    for seg in AuditLog(log, signer=None).segments():
        data = log.with_name(seg).read_bytes()
        mine = [s for s in shards if s.segment == seg]
        assert mine[0].start == 0 and mine[-1].end == len(data)
        assert all(a.end == b.start for a, b in zip(mine, mine[1:]))
        for s in mine:
            assert data[s.end - 1:s.end] == b"\n"
            assert s.first_line == data[:s.start].count(b"\n") + 1
            assert s.anchor == previous
            last = scan_line(data[:s.end - 1].rsplit(b"\n", 1)[-1], 0)
            previous = (last.seq, last.stored_hash)  # type: ignore[assignment]


def _serial(log: Path, policy: Policy) -> list[Any]:
    """The same what-if the slow way: ``replay_log`` over the support decisions."""
    envs = [e for e in AuditLog(log) if e["kind"] == "decision" and e["record"]["policy"]["name"] == policy.name]
    return replay_log(envs, policy)


def test_the_diff_agrees_with_a_serial_replay(logged: tuple[Path, Path]) -> None:
    log, new_path = logged
    policy = load_policy(new_path)
    diff = whatif([log], policy, workers=1, shard_bytes=9000)
    results = _serial(log, policy)
    changed = [r for r in results if r.error is None and r.differences]
    assert diff.intact and diff.problems == []
    assert diff.skipped == {"legal-research": LEGAL_DECISIONS}
    assert list(diff.groups) == [("support", "2026-11-25.1")]
    g = diff.groups[("support", "2026-11-25.1")]
    assert (g.decisions, g.changed, g.unchanged, g.errors) == (SUPPORT_DECISIONS, len(changed),
                                                             SUPPORT_DECISIONS - len(changed), 0)
    assert 0 < g.changed < SUPPORT_DECISIONS  # the cap binds in some decisions, not all
    assert diff.changed_ids == [r.decision_id for r in changed]
    assert g.items_lost == sum(len(r.removed) for r in results) > 0
    assert g.items_gained == sum(len(r.added) for r in results)
    # a chunk lost to the tighter cap is lost to source_cap; the budget freed goes to others
    assert set(g.lost_by_reason) == {"source_cap"}
    assert sum(g.gained_by_reason.values()) == g.items_gained
    assert (g.tokens_before, g.tokens_after) == (sum(r.tokens_before for r in results),
                                                 sum(r.tokens_after for r in results))
    assert g.objective_compared == SUPPORT_DECISIONS and g.objective_after < g.objective_before
    assert sum(g.solver_outcomes.values()) == SUPPORT_DECISIONS
    assert set(g.solver_outcomes) <= {"optimal->optimal", "trivial->optimal", "trivial->trivial"}
    assert g.newly_infeasible == 0
    text = diff.summary()
    assert f"support @ 2026-11-25.1: {SUPPORT_DECISIONS} decisions: {g.changed} changed" in text
    assert "(lost: source_cap " in text
    assert f"not replayed (decisions of other policies; --all-policies replays them): legal-research {LEGAL_DECISIONS}" in text


def test_identical_inline_on_a_pool_of_two_and_on_dask(logged: tuple[Path, Path]) -> None:
    log, new_path = logged
    policy = load_policy(new_path)
    one = whatif([log], policy, workers=1, shard_bytes=9000)
    two = whatif([log], policy, workers=2, start_method="fork")  # shards sized for 2 workers
    dask = whatif([log], policy, workers=2, dask="local", dask_processes=False, shard_bytes=6000)
    assert one.run is not None and two.run is not None and dask.run is not None
    assert (one.run.engine, two.run.engine, dask.run.engine) == ("inline", "pool", "dask")
    # each worker process that ran a shard is reported, none of them this process (a
    # pool of two may hand all three shards to the first worker on a busy machine)
    assert 1 <= len(two.run.peak_rss_kib) <= 2 and all(v > 0 for v in two.run.peak_rss_kib.values())
    assert not any(k.endswith(f"/{os.getpid()}") for k in two.run.peak_rss_kib)
    assert one.run.shards != dask.run.shards
    for other in (two, dask):
        a, b = one.to_dict(run=False), other.to_dict(run=False)
        assert {k: (a[k], b[k]) for k in a if a[k] != b[k]} == {}
    # any engine that maps run_shard over the shards folds to the same diff (docs/whatif.md)
    shards, problems = plan([log], 7000)
    task = Task(policy.to_dict(), policy.name)
    other = collect(policy, [log], [(s, run_shard(s, task)) for s in reversed(shards)][::-1], problems)
    assert other.to_dict(run=False) == one.to_dict(run=False)
    every = whatif([log], policy, workers=1, all_policies=True)
    assert every.skipped == {} and sorted(every.groups) == [("legal", "2026-11-25.1"), ("support", "2026-11-25.1")]


def _tamper(log: Path, seg: str, line_no: int, old: bytes, new: bytes) -> None:
    path = log.with_name(seg)
    lines = path.read_bytes().split(b"\n")
    assert old in lines[line_no - 1]
    lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
    path.write_bytes(b"\n".join(lines))


def test_a_shard_whose_chain_fails_is_not_replayed(tmp_path: Path, logged: tuple[Path, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src, new_path = logged
    log = tmp_path / "decisions.jsonl"
    for name in AuditLog(src, signer=None).segments():
        log.with_name(name).write_bytes(src.with_name(name).read_bytes())
    (tmp_path / "decisions.jsonl.policies").mkdir()
    for f in src.with_name("decisions.jsonl.policies").iterdir():
        (tmp_path / "decisions.jsonl.policies" / f.name).write_bytes(f.read_bytes())
    seg = AuditLog(log, signer=None).segments()[1]
    _tamper(log, seg, 3, b'"relevance_score":', b'"relevance_score":0.999,"x":')  # not resealed
    diff = whatif([log], load_policy(new_path), workers=1, shard_bytes=9000)
    assert not diff.intact and diff.unverified >= 1
    assert any(f"{seg}: line 3 seq " in p and ": modified: content hashes to" in p for p in diff.problems)
    # the other shards' decisions are still replayed and counted
    assert diff.total().decisions + sum(diff.skipped.values()) + diff.unverified == SUPPORT_DECISIONS + LEGAL_DECISIONS
    assert diff.total().decisions > 0
    code = cli.main(["audit", "whatif", str(log), "--policy", str(new_path), "--workers", "1"])
    out, _ = capsys.readouterr()
    assert code == 6 and "NOT INTACT: 1 chain problem(s)" in out


def test_a_deleted_line_at_a_shard_seam_is_found(tmp_path: Path, logged: tuple[Path, Path]) -> None:
    src, new_path = logged
    log = tmp_path / "decisions.jsonl"
    data = src.read_bytes()  # segment 0 only: a log of its own
    shards, _ = plan([src], 9000)
    cut = next(s for s in shards if s.segment == src.name and s.start > 0)
    line_end = data.index(b"\n", cut.start) + 1
    log.write_bytes(data[:cut.start] + data[line_end:])  # the first line of a shard removed
    diff = whatif([log], load_policy(new_path), workers=1, shard_bytes=cut.start)
    assert any(": deleted: seq " in p and "missing before this line" in p for p in diff.problems), diff.problems


def test_a_resealed_forged_record_is_counted_never_used(tmp_path: Path, logged: tuple[Path, Path]) -> None:
    src, new_path = logged
    log = tmp_path / "decisions.jsonl"
    records = [e["record"] for e in envelopes(src)]
    records[1]["input"]["items"][0]["relevance_score"] = 0.01  # the forger reseals the chain
    reseal(log, records)
    diff = whatif([log], load_policy(new_path), workers=1, all_policies=True)
    assert diff.problems == [] and diff.failed_count == 1
    assert diff.failed[0]["seq"] == 2 and "record.input_digest" in diff.failed[0]["codes"]
    assert not diff.intact
    assert diff.total().failed_checks == 1 and diff.total().decisions == len(records)


def test_memory_stays_bounded_as_the_log_grows(tmp_path: Path, logged: tuple[Path, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Peak traced memory of the what-if's own work (plan, verify, read, check, fold)
    grows by less than a tenth of what the log grows by, from a log of 8 records to
    one of 32 and one of 128 (loading the log would take at least all of it). The
    record checks and the re-solve are stood in for by fixed results: the same work
    per record whatever the log's length (bench/whatif_speed.py measures the real one). The changed ids, the one
    part of the result that grows with the log, are not kept here; the planner reads in
    blocks of a fixed size, made smaller than every log here."""
    from engine.audit import whatif as whatif_module
    from engine.audit.replay import Difference, ReplayResult

    monkeypatch.setattr(whatifshard, "_CHUNK", 4096)
    monkeypatch.setattr(whatifshard, "_BACK", 1024)

    def solved(record: Any, _policy: Any, *, seq: Any, findings: Any, observe: Any) -> ReplayResult:
        return ReplayResult(record["decision_id"], False, "allocated", (), ("x",), (("x", "selected", "source_cap"),),
                            100, 90, differences=(Difference("$.items[*].decision", ["x"], []),), seq=seq)

    monkeypatch.setattr(whatif_module, "replay", solved)
    monkeypatch.setattr(whatif_module, "check_record_notes", lambda *_a: ((), ()))
    src, new_path = logged
    encoded = [encode_record(json.loads(x)["record"]) for x in src.read_bytes().splitlines()]
    logs = []
    for n in (1, 4, 16):
        logs.append(tmp_path / f"x{n}.jsonl")
        prev, lines = GENESIS_HASH, []
        for seq, rec in enumerate(encoded * n, 1):
            lines.append(seal(seq, prev, EnvelopeKind.DECISION, rec))
            prev = json.loads(lines[-1])["hash"]
        logs[-1].write_bytes(b"".join(lines))
    policy = load_policy(new_path)
    whatif([logs[0]], policy, workers=1, shard_bytes=8000, all_policies=True)  # warm the caches

    def peak(path: Path) -> int:
        lines = path.read_bytes().count(b"\n")
        tracemalloc.start()
        try:
            diff = whatif([path], policy, workers=1, shard_bytes=8000, all_policies=True, keep_ids=False)
            used = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert diff.total().changed == diff.total().decisions == lines
        return used

    peaks = [peak(p) for p in logs]
    sizes = [p.stat().st_size for p in logs]
    assert sizes[2] > 15 * sizes[0]
    for k in (1, 2):
        assert peaks[k] - peaks[0] < 0.1 * (sizes[k] - sizes[0]), (peaks, sizes)


def test_cli_writes_json_and_parquet(tmp_path: Path, logged: tuple[Path, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet as pq

    log, new_path = logged
    out, groups, changed = tmp_path / "diff.json", tmp_path / "groups.parquet", tmp_path / "changed.parquet"
    code = cli.main(["audit", "whatif", str(log), "--policy", str(new_path), "--workers", "1", "--out", str(out),
                     "--parquet", str(groups), "--changed-parquet", str(changed)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert stdout.startswith("what-if: policy support-assistant revision 2026-12-01.1")
    assert doc["intact"] and doc["policy"]["revision"] == "2026-12-01.1"
    ids = doc["changed_decision_ids"]
    assert len(ids) == doc["total"]["changed"] > 0
    table = pq.read_table(changed).to_pylist()
    assert [r["decision_id"] for r in table] == ids
    assert all(r["product"] == "support" and r["items_removed"] > 0 for r in table)
    rows = pq.read_table(groups).to_pylist()
    assert [(r["product"], r["revision"], r["changed"]) for r in rows] == [("support", "2026-11-25.1", len(ids))]
    assert json.loads(rows[0]["lost_by_reason"]) == doc["groups"][0]["items"]["lost_by_reason"]
    assert f"wrote {len(ids)} changed decision row(s) to {changed}" in err
    code = cli.main(["audit", "whatif", str(log), "--policy", str(new_path), "--workers", "1", "--fail-on-diff"])
    capsys.readouterr()
    assert code == 7
    listed, again = tmp_path / "changed.txt", tmp_path / "again.json"
    code = cli.main(["audit", "whatif", str(log), "--policy", str(new_path), "--workers", "2", "--out", str(again),
                     "--changed-ids", str(listed)])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert listed.read_text().splitlines() == ids and f"wrote {len(ids)} changed decision id(s) to {listed}" in err
    held = json.loads(again.read_text())
    assert held["changed_decision_ids"] is None and held["total"] == doc["total"]


def test_bad_options_say_how_to_fix_them(logged: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    log, new_path = logged
    code = cli.main(["audit", "whatif", str(log), "--policy", str(new_path), "--workers", "0"])
    assert code == 2 and "--workers must be a whole number >= 1, got 0" in capsys.readouterr().err
    code = cli.main(["audit", "whatif", str(log.with_name("nope.jsonl")), "--policy", str(new_path), "--workers", "1"])
    assert code == 5 and f"no audit log at {log.with_name('nope.jsonl')}" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "distributed", None)  # the dask extra not installed
    code = cli.main(["audit", "whatif", str(log), "--policy", str(new_path), "--dask", "local"])
    err = capsys.readouterr().err
    assert code == 2 and "install the dask extra: pip install 'ctxbudget[dask]'" in err


def test_the_report_shows_a_whatif_section(tmp_path: Path, logged: tuple[Path, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from engine.audit.whatifreport import whatif_html

    log, new_path = logged
    out, html = tmp_path / "diff.json", tmp_path / "report.html"
    assert cli.main(["audit", "whatif", str(log), "--policy", str(new_path), "--workers", "1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert cli.main(["audit", "report", str(log), "--out", str(html), "--whatif", str(out)]) == 0
    page = html.read_text()
    g = doc["groups"][0]
    assert "<h2>what-if: support-assistant revision 2026-12-01.1</h2>" in page
    assert (f"<td>support</td><td>2026-11-25.1</td><td class=n>{g['decisions']}</td>"
            f"<td class=n>{g['changed']}</td>") in page
    assert f"-{g['items']['lost']:,} (source_cap {g['items']['lost_by_reason']['source_cap']:,})" in page
    assert f"<code>{doc['changed_decision_ids'][0]}</code>" in page
    # hostile values from a diff made elsewhere are escaped
    evil = {**doc, "groups": [{**g, "product": "<script>x</script>"}], "intact": False, "problems": ["<b>p</b>"]}
    section = whatif_html(evil)
    assert "&lt;script&gt;x&lt;/script&gt;" in section and "<script>" not in section
    assert "<b class=failed>NOT INTACT</b>" in section and "&lt;b&gt;p&lt;/b&gt;" in section
    (tmp_path / "bad.json").write_text("[1]")
    code = cli.main(["audit", "report", str(log), "--out", str(html), "--whatif", str(tmp_path / "bad.json")])
    assert code == 2 and "not a what-if diff (a JSON object)" in capsys.readouterr().err


def test_a_contentless_record_gets_its_candidates_in_bulk_as_item_by_item(logged: tuple[Path, Path],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay builds a content-less decision's candidates in bulk under a template with
    an overhead (the support policy's ``[{source_id}] {content}``): recorded count minus
    the template's own tokens, as the item-by-item route computes them, field for field;
    and a record the bulk route cannot take (a count not recorded) goes item by item."""
    from engine.audit import replay as rp

    log, new_path = logged
    policy = load_policy(new_path)
    assert policy.budget.template != "{content}"
    records = [e["record"] for e in AuditLog(log) if e["kind"] == "decision"
               and e["record"]["policy"]["name"] == policy.name]
    bulk = [rp._candidates(r, policy, False) for r in records]
    tokens = [{it["source_id"]: it["tokens"] for it in r["items"]} for r in records]
    tok = rp.policy_tokenizer(policy)
    assert all(rp._bulk_candidates(r["input"]["items"], t, policy.budget.template, tok) is not None
               for r, t in zip(records, tokens))  # the bulk route was taken
    monkeypatch.setattr(rp, "_bulk_candidates", lambda *args: None)
    assert bulk == [rp._candidates(r, policy, False) for r in records]
    assert all(c.token_count is not None for cands in bulk for c in cands)
    monkeypatch.undo()
    assert rp._bulk_candidates(records[0]["input"]["items"], {}, policy.budget.template, tok) is None
