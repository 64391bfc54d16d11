"""The command line: every command end to end and every exit code."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.strategies import cpsat
from engine.tokens import get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = str(ROOT / "policies" / "support-assistant.yaml")
SUPPORT_C = str(ROOT / "tests" / "fixtures" / "candidates" / "support-assistant.jsonl")
EXAMPLE = str(ROOT / "examples" / "policy.yaml")
CORPUS = str(ROOT / "examples" / "corpus")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_policy_validate_every_shipped_policy(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in (ROOT / "policies").glob("*.yaml")) + [EXAMPLE]
    code, out, err = run(capsys, "policy", "validate", *files)
    assert code == 0 and err == ""
    assert out.count("ok ") == len(files)


def test_policy_validate_reports_bad_files_and_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: x, revision: '1'}\n"
                   "spec:\n  budget: {max_token: 10}\n")
    code, out, err = run(capsys, "policy", "validate", SUPPORT, str(bad))
    assert code == 2
    assert out.startswith("ok ")
    assert "policy.unknown_field" in err and "did you mean 'max_tokens'?" in err
    assert f"{bad}:5:" in err


def test_policy_render_prints_effective_policy_and_digest(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "render", SUPPORT)
    assert code == 0 and "context_window: 8192" in out and "sha256:" in out


def test_allocate_json_and_context(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    code, out, err = run(capsys, "allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C,
                         "--audit-log", str(log))
    assert code == 0
    data = json.loads(out)
    assert "refund-terms" in data["included"] and data["solver"]["status"] == "optimal"
    assert data["audit_envelope"]["seq"] == 1
    assert "tokens;" in err and "strategy optimal (optimal)" in err
    code, out, _ = run(capsys, "allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C,
                       "--format", "context", "--strategy", "greedy")
    assert code == 0 and out.startswith("[")
    assert get_tokenizer().count(out.rstrip("\n")) <= 6400


def test_pack_end_to_end_with_audit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "pack.jsonl"
    ctx = tmp_path / "ctx.txt"
    code, out, err = run(capsys, "pack", "--policy", EXAMPLE, "--query", "refund for an annual plan",
                         CORPUS, "--audit-log", str(log), "--out", str(ctx))
    assert code == 0
    text = ctx.read_text()
    assert text == out.rstrip("\n") and "refund" in text
    assert get_tokenizer().count(text) <= 600  # recounted after assembly
    assert "6 files" in err and "/600 tokens" in err and str(log) in err
    code, out, _ = run(capsys, "audit", "verify", str(log))
    assert code == 0
    code, out, _ = run(capsys, "audit", "show", str(log))
    assert code == 0 and "included (" in out
    code, _, err = run(capsys, "audit", "replay", str(log))
    assert code == 0 and "1 identical" in err


def test_audit_verify_detects_tampering_exit_6(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    for _ in range(3):
        assert run(capsys, "allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C, "--audit-log", str(log))[0] == 0
    cp = tmp_path / "cp.json"
    assert run(capsys, "audit", "checkpoint", str(log), "--out", str(cp))[0] == 0
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2]))  # cut the tail at a record boundary
    code, out, _ = run(capsys, "audit", "verify", str(log), "--checkpoint", str(cp))
    assert code == cli.EXIT_LOG_NOT_INTACT


def test_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2: bad candidates, as JSON errors for machines
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"source_id": "a", "content": "x", "relevance_score": NaN}\n')
    code, _, err = run(capsys, "--errors=json", "allocate", "--policy", SUPPORT, "--candidates", str(bad))
    assert code == 2
    payload = json.loads(err)
    assert payload["exit_code"] == 2 and payload["line"] == 1 and payload["code"].startswith("candidate.")
    # 3: infeasible (the pinned item alone exceeds a tiny budget)
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(Path(SUPPORT).read_text().replace("extends: base.yaml\n", "")
                    .replace("context_window: 8192", "max_tokens: 5").replace("    reserve_output: 1024\n", "")
                    .replace("    reserve_prompt: 768\n", ""))
    code, _, err = run(capsys, "allocate", "--policy", str(tiny), "--candidates", SUPPORT_C)
    assert code == 3 and "allocation.infeasible" in err and "pinned 'refund-terms'" in err
    # 4: solver failure with fallback: error
    strict = tmp_path / "strict.yaml"
    strict.write_text(tiny.read_text().replace("max_tokens: 5", "max_tokens: 900")
                      + "  solver: {fallback: error}\n")

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("injected solver fault")

    monkeypatch.setattr(cpsat, "solve", broken)
    code, _, err = run(capsys, "allocate", "--policy", str(strict), "--candidates", SUPPORT_C)
    assert code == 4 and "solver.no_solution" in err and "injected solver fault" in err
    # ... and with the default fallback the greedy answer comes back, recorded
    code, out, _ = run(capsys, "allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C)
    assert code == 0
    assert "injected solver fault" in json.loads(out)["strategy"]["fallback_reason"]
    monkeypatch.undo()
    # 5: the audit log cannot be written: no decision is printed
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.geteuid() == 0:  # root ignores permissions: use a path under a file instead
            target = str(tmp_path / "c.jsonl" / "log.jsonl")
        else:
            target = str(ro / "log.jsonl")
        code, out, err = run(capsys, "allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C,
                             "--audit-log", target)
    finally:
        os.chmod(ro, stat.S_IRWXU)
    assert code == 5 and out == "" and "audit." in err
    # 1: an unexpected bug is one line, not a traceback
    monkeypatch.setattr(cli, "load_policy", broken)
    code, _, err = run(capsys, "policy", "render", SUPPORT)
    assert code == 1 and err.startswith("error: internal: RuntimeError") and "Traceback" not in err
