"""Segment rotation (engine.audit.segments): a log rotated by size or record count is
one chain across files; `verify` spans every segment and detects a missing, renamed,
swapped or replaced one; `verify --key`, `prove` and `check-proof` work per segment."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.audit.lineformat import EnvelopeKind
from engine.audit.log import AuditLog
from engine.audit.note import VerifierKey
from engine.audit.proofs import check_proof
from engine.audit.segments import segment_name, segment_number
from engine.audit.segproofs import prove_segmented, verify_signed_segments
from engine.audit.signing import KEY_ENV, Signer
from engine.audit.verify import ProblemKind
from engine.errors import AuditError
from engine.policy import Rotate

from auditcases import allocated, support


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def _record(i: int, day: int = 1) -> dict[str, Any]:
    return {"decision_id": f"d{i}", "timestamp": f"2026-01-{day:02d}T00:00:00Z"}


def _rotated(tmp: Path, n: int, *, max_records: int | None = 3, max_bytes: int | None = None,
             signer: Signer | None = None, day: int = 1) -> AuditLog:
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    log = AuditLog(tmp / "logs" / "decisions.jsonl", signer=signer,
                   rotate=Rotate(max_bytes=max_bytes, max_records=max_records),
                   clock=lambda: "2026-01-01T00:00:00Z")
    for i in range(n):
        log.append(_record(i, day))
    log.close()
    return log


def _key(tmp: Path) -> tuple[Path, Path]:
    out = tmp / "keys"
    assert cli.main(["audit", "keygen", "--out", str(out), "--name", "acme"]) == 0
    return out / "acme.key", out / "acme.pub"


def _kinds(report: Any) -> list[str]:
    return [p.kind.value for p in report.problems]


def test_segment_names_round_trip() -> None:
    assert segment_name("decisions.jsonl", 0) == "decisions.jsonl"
    assert segment_name("decisions.jsonl", 7) == "decisions.00007.jsonl"
    assert segment_name("log", 3) == "log.00003"
    assert segment_name("decisions.jsonl", 123456) == "decisions.123456.jsonl"
    for k in (0, 1, 99999, 123456):
        assert segment_number("decisions.jsonl", segment_name("decisions.jsonl", k)) == k
    for other in ("decisions.1.jsonl", "decisions.00000.jsonl", "decisions.00001.json",
                  "other.00001.jsonl", "decisions.jsonl.checkpoints", "decisions.000001.jsonl"):
        assert segment_number("decisions.jsonl", other) is None, other


def test_rotation_by_records_chains_every_segment(tmp_path: Path) -> None:
    log = _rotated(tmp_path, 8)
    assert log.segments() == ["decisions.jsonl", "decisions.00001.jsonl",
                              "decisions.00002.jsonl", "decisions.00003.jsonl"]
    envs = list(log)
    assert [e["seq"] for e in envs] == list(range(1, 12))
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(envs, envs[1:]))
    headers = [e for e in envs if e["kind"] == EnvelopeKind.SEGMENT.value]
    assert [h["record"]["segment"] for h in headers] == [1, 2, 3]
    assert headers[0]["record"]["previous"]["file"] == "decisions.jsonl"
    assert headers[0]["record"]["previous"]["last_seq"] == 3
    assert headers[0]["record"]["previous"]["tree_size"] == 3
    # every segment holds at most max_records lines, header included
    for name in log.segments():
        assert len((tmp_path / "logs" / name).read_bytes().splitlines()) <= 3
    report = log.verify()
    assert report.ok, report.summary()
    assert report.segments == tuple(log.segments())
    assert "4 segment(s): decisions.jsonl, decisions.00001.jsonl" in report.summary()
    assert log.checkpoint()["seq"] == 11 and log.checkpoint()["records"] == 11
    assert [e["record"]["decision_id"] for e in envs if e["kind"] == "decision"] == \
        [f"d{i}" for i in range(8)]


def test_rotation_by_bytes_and_an_oversized_record_goes_in_alone(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    log = AuditLog(tmp_path / "logs" / "d.jsonl", signer=None, rotate=Rotate(max_bytes=1500))
    for i in range(12):
        log.append(_record(i))
    log.append({"decision_id": "big", "pad": "x" * 3000})
    log.append(_record(99))
    sizes = {n: (tmp_path / "logs" / n).stat().st_size for n in log.segments()}
    assert len(sizes) >= 4
    big = next(n for n in sizes if b'"big"' in (tmp_path / "logs" / n).read_bytes())
    assert sizes[big] > 3000  # alone with its header, never split
    assert all(size <= 1500 for name, size in sizes.items() if name != big), sizes
    assert len((tmp_path / "logs" / big).read_bytes().splitlines()) == 2
    assert log.verify().ok


def test_an_unrotated_log_is_read_exactly_as_before(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "plain.jsonl", signer=None)
    for i in range(3):
        log.append(_record(i))
    assert log.segments() == ["plain.jsonl"]
    report = log.verify()
    assert report.ok and report.segments == () and "segment" not in report.summary()


def test_a_missing_middle_segment_is_tampering(tmp_path: Path) -> None:
    log = _rotated(tmp_path, 8)
    (tmp_path / "logs" / "decisions.00002.jsonl").unlink()
    report = log.verify()
    assert not report.ok
    assert "segment file decisions.00002.jsonl is missing and no prune record names it: it was " \
        "deleted or moved outside `audit prune` (tampering); restore it from a copy" in \
        [p.message for p in report.problems]
    deleted = next(p for p in report.problems if p.kind is ProblemKind.DELETED)
    assert deleted.message == "decisions.00003.jsonl: seq 7..9 missing before this line"
    assert deleted.line == 1


def test_swapped_segment_files_are_detected(tmp_path: Path) -> None:
    log = _rotated(tmp_path, 8)
    one, two = tmp_path / "logs" / "decisions.00001.jsonl", tmp_path / "logs" / "decisions.00002.jsonl"
    tmp = one.with_name("x")
    one.rename(tmp)
    two.rename(one)
    tmp.rename(two)
    report = log.verify()
    assert not report.ok
    messages = [p.message for p in report.problems]
    assert "decisions.00001.jsonl: its header says it is segment 2: segment files were renamed " \
        "or swapped; restore their names" in messages
    assert ProblemKind.REORDERED in {p.kind for p in report.problems}


def test_a_segment_replaced_by_another_logs_segment_is_detected(tmp_path: Path) -> None:
    log = _rotated(tmp_path / "a", 8)
    other = _rotated(tmp_path / "b", 8, day=2)
    target = log.path.with_name("decisions.00002.jsonl")
    target.write_bytes(other.path.with_name("decisions.00002.jsonl").read_bytes())
    report = log.verify()
    assert not report.ok
    assert {"broken_chain", "segment"} <= set(_kinds(report))


def test_a_modified_closed_segment_breaks_the_next_header(tmp_path: Path) -> None:
    log = _rotated(tmp_path, 8)
    seg = tmp_path / "logs" / "decisions.00001.jsonl"
    lines = seg.read_bytes().splitlines()
    lines[1] = lines[1].replace(b'"d3"', b'"dX"')
    seg.write_bytes(b"\n".join(lines) + b"\n")
    report = log.verify()
    kinds = _kinds(report)
    assert "modified" in kinds and "segment" in kinds
    modified = next(p for p in report.problems if p.kind is ProblemKind.MODIFIED)
    assert modified.line == 2 and modified.message.startswith("decisions.00001.jsonl: ")


def test_a_segment_left_empty_by_a_dead_writer_gets_its_header(tmp_path: Path) -> None:
    log = _rotated(tmp_path, 4)  # decisions.jsonl (3) + decisions.00001.jsonl (header, d3)
    empty = tmp_path / "logs" / "decisions.00002.jsonl"
    empty.touch()  # the writer died after creating the next segment
    log.append(_record(50))
    first = json.loads(empty.read_bytes().splitlines()[0])
    assert first["kind"] == "segment" and first["record"]["segment"] == 2
    assert log.verify().ok


def test_signed_segments_verify_and_prove_with_the_key_alone(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    log = _rotated(tmp_path, 8, signer=Signer.from_file(private, every_records=2,
                                                         clock=lambda: 0.0))
    for name in log.segments():  # every segment has its own sidecar
        assert (tmp_path / "logs" / f"{name}.checkpoints").exists()
    key = VerifierKey.load(public)
    combined, per = verify_signed_segments(log.path, key)
    assert combined.ok, combined.summary()
    assert combined.records == 11 and combined.unsigned_tail == 0
    assert set(per) == set(log.segments())
    bundle = prove_segmented(log.path, "d5")  # in decisions.00002.jsonl, seq 8
    assert bundle["segment"] == "decisions.00002.jsonl" and bundle["seq"] == 8
    result = check_proof(json.loads(json.dumps(bundle)), key)
    assert result.ok, result.message
    assert result.message == ("VALID: decision 'd5' is record 2 of 3 in log "
                              "'decisions.00002.jsonl', signed by 'acme'")
    # the header proves where the segment starts: a bundle without it, or with another
    # segment's header, does not check
    forged = {k: v for k, v in bundle.items() if k != "segment_header"}
    assert check_proof(forged, key).message == "INVALID: the record line has seq 8, the proof index 1"
    other = prove_segmented(log.path, "d3")
    swapped = {**bundle, "segment_header": other["segment_header"]}
    assert check_proof(swapped, key).message == \
        "INVALID: the segment header is not leaf 0 of the signed tree"
    assert check_proof(prove_segmented(log.path, "d0"), key).ok  # segment 0: no header


def test_cli_verify_key_spans_segments_and_catches_a_removed_sidecar(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = _key(tmp_path)
    log = _rotated(tmp_path, 8, signer=Signer.from_file(private, clock=lambda: 0.0))
    combined, _ = verify_signed_segments(log.path, VerifierKey.load(public))
    assert combined.ok
    (tmp_path / "logs" / "decisions.00001.jsonl.checkpoints").unlink()
    combined, _ = verify_signed_segments(log.path, VerifierKey.load(public))
    assert [c for c, _ in combined.problems] == ["signature.no_checkpoints"]
    assert combined.problems[0][1].startswith("decisions.00001.jsonl: no signed checkpoint")
    capsys.readouterr()
    assert cli.main(["audit", "verify", str(log.path), "--key", str(public), "--json"]) == 6
    out = json.loads(capsys.readouterr().out)
    assert out["signatures"]["problems"][0]["code"] == "signature.no_checkpoints"
    assert out["segments"] == log.segments()


def test_real_decisions_rotate_and_every_reader_spans_the_segments(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = AuditLog(tmp_path / "real.jsonl", signer=None, rotate=Rotate(max_records=2))
    ids = [allocated(log, store=True)["decision_id"] for _ in range(4)]
    assert len(log.segments()) == 3
    capsys.readouterr()
    assert cli.main(["audit", "verify", str(log.path)]) == 0
    assert "3 segment(s)" in capsys.readouterr().out
    assert cli.main(["audit", "show", str(log.path), "--decision", ids[2]]) == 0
    assert ids[2] in capsys.readouterr().out
    assert cli.main(["audit", "replay", str(log.path)]) == 0
    capsys.readouterr()
    assert cli.main(["audit", "query", str(log.path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["decision_id"] for r in rows] == ids
    out = tmp_path / "x.csv"
    assert cli.main(["audit", "export", str(log.path), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 5


def test_the_policy_rotation_reaches_the_writer(tmp_path: Path) -> None:
    from engine.decide import policy_audit_log
    from engine.policy import AuditSettings

    policy = support(True)
    policy = policy.replace(audit=AuditSettings(log="audit/x.jsonl", store_content=True,
                                                rotate=Rotate(max_records=5)))
    log = policy_audit_log(policy)
    assert log is not None and log.rotate == Rotate(max_records=5)
    assert policy.effective["spec"]["audit"]["rotate"] == {"max_records": 5}


def test_env_key_signs_the_closed_segment_on_rotation(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = _key(tmp_path)
    monkeypatch.setenv(KEY_ENV, str(private))
    (tmp_path / "logs").mkdir()
    log = AuditLog(tmp_path / "logs" / "e.jsonl", rotate=Rotate(max_records=2))
    for i in range(3):
        log.append(_record(i))
    # no close(): the first segment was signed to its end when it was closed
    combined, per = verify_signed_segments(log.path, VerifierKey.load(public), max_unsigned=5)
    assert per["e.jsonl"].ok and per["e.jsonl"].unsigned_tail == 0
    assert os.path.exists(tmp_path / "logs" / "e.00001.jsonl")


def test_segments_begun_after_a_key_rotation_verify_from_the_first_key(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    out = tmp_path / "keys2"
    assert cli.main(["audit", "keygen", "--out", str(out), "--name", "acme2"]) == 0
    log = _rotated(tmp_path, 4, signer=Signer.from_file(private, clock=lambda: 0.0))
    log = log.rotate_key(Signer.from_file(out / "acme2.key", clock=lambda: 0.0))
    for i in range(10, 16):  # new segments, signed by the new key only
        log.append(_record(i))
    log.close()
    assert len(log.segments()) >= 4
    combined, _ = verify_signed_segments(log.path, VerifierKey.load(public))
    assert combined.ok, combined.summary()


def test_an_unreadable_segment_before_an_empty_active_one_is_an_audit_error(tmp_path: Path) -> None:
    log = _rotated(tmp_path, 4)
    seg = tmp_path / "logs" / "decisions.00001.jsonl"
    seg.write_bytes(b"not json\n")
    (tmp_path / "logs" / "decisions.00002.jsonl").touch()
    with pytest.raises(AuditError) as err:
        log.append(_record(9))
    assert err.value.code == "audit.corrupt_segment"
    assert "decisions.00001.jsonl does not start and end with a readable record" in err.value.message


def test_audit_report_spans_the_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = _key(tmp_path)
    monkeypatch.setenv(KEY_ENV, str(private))
    (tmp_path / "logs").mkdir()
    log = AuditLog(tmp_path / "logs" / "r.jsonl", rotate=Rotate(max_records=2))
    ids = [allocated(log, store=True)["decision_id"] for _ in range(3)]
    log.close()
    assert len(log.segments()) == 2
    out = tmp_path / "report.html"
    assert cli.main(["audit", "report", str(log.path), "--key", str(public), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert all(i in page for i in ids)
