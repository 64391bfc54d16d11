"""Retention (engine.audit.retention): `audit prune` removes whole closed segments older
than the period, after a signed prune record naming each; `verify` reports the span as
pruned, and a segment deleted without such a record as tampering."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.audit.log import AuditLog
from engine.audit.note import VerifierKey
from engine.audit.retention import cutoff_for, prune
from engine.audit.segproofs import mark_pruned_signed, verify_signed_segments
from engine.audit.signing import KEY_ENV, Signer
from engine.errors import AuditError, PolicyError, UsageError
from engine.policy import Policy, Rotate

from auditcases import allocated

UTC = timezone.utc


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def _key(tmp: Path) -> tuple[Path, Path]:
    out = tmp / "keys"
    assert cli.main(["audit", "keygen", "--out", str(out), "--name", "acme"]) == 0
    return out / "acme.key", out / "acme.pub"


def _log(tmp: Path, days: list[int], signer: Signer | None = None) -> AuditLog:
    """One decision a day (2026-01-<day>); 3 lines per segment; headers dated like the
    record that opens the segment."""
    (tmp / "logs").mkdir(exist_ok=True)
    when = {"now": "2026-01-01T00:00:00Z"}
    log = AuditLog(tmp / "logs" / "decisions.jsonl", signer=signer, clock=lambda: when["now"],
                   rotate=Rotate(max_records=3))
    for i, day in enumerate(days):
        when["now"] = f"2026-01-{day:02d}T00:00:00Z"
        log.append({"decision_id": f"d{i}", "timestamp": when["now"]})
    log.close()
    return log


def _files(log: AuditLog) -> list[str]:
    return sorted(os.listdir(log.path.parent))


def test_a_short_retention_in_a_policy_is_refused_with_the_fix() -> None:
    raw = Policy.default(100).to_dict()
    spec = raw["spec"]
    spec["audit"] = {"retention_days": 30}
    with pytest.raises(PolicyError) as err:
        Policy.from_mapping(raw)
    assert err.value.code == "policy.semantic.retention_too_short"
    assert err.value.path == "$.spec.audit.retention_days"
    assert err.value.message == (
        "retention_days 30 is shorter than six months: the EU AI Act (Art. 19, Art. 26(6)) "
        "requires deployers and providers of high-risk systems to keep automatic logs at least "
        "six months; set retention_days >= 183, or add allow_short_retention: true if the law "
        "that applies to you permits less")
    spec["audit"]["allow_short_retention"] = True
    assert Policy.from_mapping(raw).audit.retention_days == 30
    spec["audit"] = {"retention_days": 183}
    assert Policy.from_mapping(raw).effective["spec"]["audit"]["retention_days"] == 183


def test_the_cutoff_refuses_less_than_six_months_unless_overridden() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert cutoff_for(retention_days=200, before=None, now=now, allow_short=False) == \
        datetime(2026, 5, 15, tzinfo=UTC)
    with pytest.raises(UsageError) as err:
        cutoff_for(retention_days=None, before=datetime(2026, 11, 1, tzinfo=UTC), now=now,
                   allow_short=False)
    assert err.value.code == "audit.retention_too_short"
    assert "keeps only 30.0 days of log: the EU AI Act (Art. 19, Art. 26(6)) requires at least " \
        "six months (183 days); use a period of >= 183 days, or pass --allow-short-retention" \
        in err.value.message
    assert cutoff_for(retention_days=10, before=None, now=now, allow_short=True) == \
        datetime(2026, 11, 21, tzinfo=UTC)
    with pytest.raises(UsageError, match="name the retention period"):
        cutoff_for(retention_days=None, before=None, now=now, allow_short=False)


def test_prune_removes_old_closed_segments_and_verify_reports_the_signed_span(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    log = _log(tmp_path, [1, 2, 3, 4, 5, 20, 21, 22], Signer.from_file(private, clock=lambda: 0.0))
    assert log.segments() == ["decisions.jsonl", "decisions.00001.jsonl", "decisions.00002.jsonl",
                              "decisions.00003.jsonl"]
    result = prune(log, datetime(2026, 1, 10, tzinfo=UTC), retention_days=183)
    assert [s.file for s in result.removed] == ["decisions.jsonl", "decisions.00001.jsonl"]
    assert result.kept_because == ("decisions.00002.jsonl has records from 2026-01-21T00:00:00Z "
                                   "(not before the cutoff)")
    assert log.segments() == ["decisions.00002.jsonl", "decisions.00003.jsonl"]
    assert "decisions.jsonl.checkpoints" not in _files(log)  # the sidecars go too
    assert result.record is not None and result.record["kind"] == "prune"
    named = result.record["record"]["segments"]
    assert [(d["file"], d["first_seq"], d["last_seq"], d["tree_size"]) for d in named] == \
        [("decisions.jsonl", 1, 3, 3), ("decisions.00001.jsonl", 4, 6, 3)]
    assert all(d["signed_checkpoint"].startswith("ctxbudget.audit/") for d in named)
    report = log.verify()
    assert report.ok, report.summary()
    assert str(report.pruned[0]) == ("seq 1..6 (decisions.jsonl, decisions.00001.jsonl) pruned by "
                                     "record 12 (signature not checked: pass --key PUB)")
    combined, per = verify_signed_segments(log.path, VerifierKey.load(public))
    assert combined.ok, combined.summary()
    signed = mark_pruned_signed(report, per, log.path)
    assert str(signed.pruned[0]).endswith("pruned by record 12 (signed)")


def test_deleting_a_segment_without_a_prune_record_is_tampering(tmp_path: Path) -> None:
    log = _log(tmp_path, [1, 2, 3, 4, 5, 20, 21, 22])
    (tmp_path / "logs" / "decisions.jsonl").unlink()
    report = log.verify()
    assert not report.ok
    assert "segment file decisions.jsonl is missing and no prune record names it: it was deleted " \
        "or moved outside `audit prune` (tampering); restore it from a copy" in \
        [p.message for p in report.problems]
    assert report.pruned == ()


def test_a_prune_record_forged_without_the_key_is_not_signed(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    log = _log(tmp_path, [1, 2, 3, 4, 5, 20], Signer.from_file(private, clock=lambda: 0.0))
    forger = AuditLog(log.path, signer=None, clock=log.clock)  # writes the file, has no key
    prune(forger, datetime(2026, 1, 10, tzinfo=UTC), require_signed=False)
    report = log.verify()
    assert report.ok  # the chain alone cannot tell
    combined, per = verify_signed_segments(log.path, VerifierKey.load(public))
    assert "signature.unsigned_tail" in {c for c, _ in combined.problems}
    marked = mark_pruned_signed(report, per, log.path)
    assert "(NOT covered by a valid signed checkpoint)" in str(marked.pruned[0])


def test_prune_needs_a_key_unless_told_the_log_is_unsigned(tmp_path: Path) -> None:
    log = _log(tmp_path, [1, 2, 3, 4, 20])
    with pytest.raises(AuditError) as err:
        prune(log, datetime(2026, 1, 10, tzinfo=UTC))
    assert err.value.code == "audit.no_key"
    assert "set CTXBUDGET_AUDIT_KEY to the log's signing key (or pass --unsigned" in err.value.message
    assert len(log.segments()) == 2


def test_dry_run_changes_nothing_and_the_active_segment_is_never_pruned(tmp_path: Path) -> None:
    log = _log(tmp_path, [1, 2, 3, 4, 5])
    before = {n: (tmp_path / "logs" / n).read_bytes() for n in _files(log)}
    result = prune(log, datetime(2027, 1, 1, tzinfo=UTC), dry_run=True)
    assert [s.file for s in result.removed] == ["decisions.jsonl"]
    assert result.kept_because == "decisions.00001.jsonl is the active segment (never pruned)"
    assert {n: (tmp_path / "logs" / n).read_bytes() for n in _files(log)} == before
    result = prune(log, datetime(2027, 1, 1, tzinfo=UTC), require_signed=False)
    assert log.segments() == ["decisions.00001.jsonl"]  # old, but active: kept
    assert log.verify().ok


def test_a_second_prune_may_remove_the_segment_holding_the_first_prune_record(tmp_path: Path) -> None:
    log = _log(tmp_path, [1, 2, 3, 4, 5])
    prune(log, datetime(2026, 1, 3, 12, tzinfo=UTC), require_signed=False)  # decisions.jsonl
    when = {"now": "2026-01-06T00:00:00Z"}
    log = AuditLog(log.path, signer=None, clock=lambda: when["now"], rotate=Rotate(max_records=3))
    for i, day in enumerate([6, 7, 8, 9], 10):
        when["now"] = f"2026-01-{day:02d}T00:00:00Z"
        log.append({"decision_id": f"d{i}", "timestamp": when["now"]})
    # decisions.00001.jsonl holds the first prune record; prune it too
    result = prune(log, datetime(2026, 1, 7, 12, tzinfo=UTC), require_signed=False)
    assert "decisions.00001.jsonl" in [s.file for s in result.removed]
    assert result.record is not None and result.record["record"]["pruned_through"] == 0
    report = log.verify()
    assert report.ok, report.summary()
    assert report.pruned[0].files[0] == "decisions.jsonl"


def test_a_prune_cut_short_before_the_unlinks_still_verifies_and_is_finished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(tmp_path, [1, 2, 3, 4, 5, 20])
    real_unlink = os.unlink

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "unlink", crash)
    with pytest.raises(KeyboardInterrupt):
        prune(log, datetime(2026, 1, 10, tzinfo=UTC), require_signed=False)
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert len(log.segments()) == 3  # the record is there, the files too
    assert log.verify().ok
    result = prune(log, datetime(2026, 1, 10, tzinfo=UTC), require_signed=False)
    assert result.removed == () and result.record is None
    assert result.finished == ("decisions.00001.jsonl", "decisions.jsonl")
    assert log.segments() == ["decisions.00002.jsonl"]
    report = log.verify()
    assert report.ok and report.pruned[0].files == ("decisions.jsonl", "decisions.00001.jsonl")


def test_cli_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = _key(tmp_path)
    (tmp_path / "logs").mkdir()
    log = AuditLog(tmp_path / "logs" / "decisions.jsonl", rotate=Rotate(max_records=2),
                   signer=Signer.from_file(private, clock=lambda: 0.0))
    for _ in range(4):  # real decisions, dated now: [d, d] [h, d] [h, d]
        allocated(log, store=True)
    log.close()
    capsys.readouterr()
    args = ["audit", "prune", str(log.path), "--now", "2099-01-01"]
    assert cli.main(args + ["--retention-days", "30"]) == 2
    assert "audit.retention_too_short" in capsys.readouterr().err
    assert cli.main(args + ["--retention-days", "190", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 2 segment(s)" in out and "decisions.00001.jsonl: seq 3..4" in out
    assert cli.main(args + ["--retention-days", "190"]) == 5  # no key
    assert "audit.no_key" in capsys.readouterr().err
    monkeypatch.setenv(KEY_ENV, str(private))
    assert cli.main(args + ["--retention-days", "190"]) == 0
    assert "removed 2 segment(s)" in capsys.readouterr().out
    assert cli.main(["audit", "verify", str(log.path), "--key", str(public)]) == 0
    out = capsys.readouterr().out
    assert "seq 1..4 (decisions.jsonl, decisions.00001.jsonl) pruned by record 7 (signed)" in out
    assert cli.main(["audit", "verify", str(log.path), "--key", str(public), "--json"]) == 0
    pruned = json.loads(capsys.readouterr().out)["pruned"]
    assert pruned == [{"from_seq": 1, "to_seq": 4, "files": ["decisions.jsonl", "decisions.00001.jsonl"],
                       "by_seq": 7, "by_file": "decisions.00002.jsonl", "signed": True}]
    assert cli.main(["audit", "replay", str(log.path)]) == 0  # what is left still replays


def test_report_marks_signed_records_per_segment_after_rotation_and_pruning(tmp_path: Path) -> None:
    """`audit report --key` on a rotated, pruned log: seqs no longer start at 1 and each
    segment has its own tree, so "signed" is decided per segment, not by a global count."""
    from engine.audit.reportcard import SignatureInfo
    from engine.audit.segproofs import signed_spans

    key, pub = _key(tmp_path)
    signer = Signer.from_file(key)
    log = _log(tmp_path, [1, 2, 3, 4, 5, 6, 7], signer)
    prune(AuditLog(log.path, signer=signer), datetime(2026, 1, 10, tzinfo=UTC), retention_days=183)
    tail = AuditLog(log.path, signer=None)  # one more record, never signed
    tail.append({"decision_id": "late", "timestamp": "2026-01-09T00:00:00Z"})
    tail.close()
    seqs = {e["record"].get("decision_id"): e["seq"] for _n, e, _why in AuditLog(log.path, signer=None).scan()
            if e is not None and "decision_id" in e["record"]}
    assert "d0" not in seqs and min(seqs.values()) > 1  # the first segment was pruned
    combined, per = verify_signed_segments(log.path, VerifierKey.load(pub), max_unsigned=10**6)
    sig = SignatureInfo(True, combined.signed_size, combined.records, combined.problems,
                        spans=signed_spans(log.path, per))
    for did, seq in seqs.items():
        covering = sig.covering(seq)
        if did == "late":
            assert covering is None, seq
        else:
            assert covering is not None and "checkpoints" in covering, (did, seq, covering)
    # the old global count would call the last signed decision unsigned
    assert SignatureInfo(True, combined.signed_size, combined.records).covering(seqs["d6"]) is None
