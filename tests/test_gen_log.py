"""bench/gen_log.py: the synthetic log of the what-if scale test is valid and signed
(``ctxbudget audit verify --key`` passes), rotated into segments, and resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchload import load_bench
from engine import AuditLog, cli

gen_log = load_bench("gen_log")


def test_a_generated_log_verifies_with_its_key_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out, keys = tmp_path / "logs" / "decisions.jsonl", tmp_path / "keys"
    args = ["--out", str(out), "--keys", str(keys), "--distinct", "3", "--rotate-records", "6"]
    assert gen_log.main([*args, "--decisions", "9"]) == 0
    assert gen_log.main([*args, "--decisions", "14"]) == 0  # continues after the 9 written
    printed = capsys.readouterr().out
    assert "14 decisions (5 appended now, 9 before) in 3 segment(s)" in printed
    monkeypatch.setenv("CTXBUDGET_AUDIT_SECRET", str(keys / "audit.secret"))
    envs = [e for e in AuditLog(out, signer=None) if e["kind"] == "decision"]
    assert len(envs) == 14 and len({e["record"]["decision_id"] for e in envs}) == 14
    assert {e["record"]["policy"]["name"] for e in envs} <= {"support-assistant", "legal-research", "code-assistant"}
    assert cli.main(["audit", "verify", str(out), "--key", str(keys / "gen-log.pub"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["records"]["records_failed"] == 0
    assert report["signatures"]["status"] == "signed" and len(report["segments"]) == 3
