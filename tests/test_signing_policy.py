"""The signing key named by a policy (audit.signing_key), checkpoints on close (also
after an infeasible decision; no timer), and the checkpoint sidecar opened below the
writer's folder handle without following symlinks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from engine import cli, load_policy
from engine.audit.log import AuditLog
from engine.audit.note import VerifierKey, parse_note, split_notes
from engine.audit.proofs import verify_signed
from engine.audit.signing import KEY_ENV, Signer, policy_signer, sidecar_path
from engine.errors import AuditError

ROWS = [{"source_id": "a", "content": "Refunds are accepted within 30 days.", "relevance_score": 0.9},
        {"source_id": "b", "content": "Shipping takes a week.", "relevance_score": 0.4}]


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def keygen(tmp: Path, name: str) -> tuple[Path, Path]:
    out = tmp / f"keys-{name}"
    assert cli.main(["audit", "keygen", "--out", str(out), "--name", name]) == 0
    return out / f"{name}.key", out / f"{name}.pub"


def policy_file(folder: Path, audit: str, budget: str = "{max_tokens: 400}", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "p.yaml"
    path.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: p, revision: '1'}\n"
                    f"spec:\n  budget: {budget}\n  audit: {audit}\n{extra}")
    return path


def candidates(tmp: Path, rows: list[dict[str, Any]] = ROWS) -> Path:
    path = tmp / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sizes(log: Path) -> list[int]:
    return [parse_note(t).checkpoint().size for _, t in split_notes(sidecar_path(log).read_text())]


def test_the_policy_names_the_signing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = keygen(tmp_path, "acme")
    pol = policy_file(tmp_path / "pol", "{log: logs/d.jsonl, store_content: true, "
                      "signing_key: ../keys-acme/acme.key}")
    assert load_policy(pol).audit.signing_key == "../keys-acme/acme.key"
    assert cli.main(["allocate", "--policy", str(pol), "--candidates", str(candidates(tmp_path)),
                     "--format", "context"]) == 0
    log = tmp_path / "pol" / "logs" / "d.jsonl"
    assert sizes(log) == [1]
    capsys.readouterr()
    assert cli.main(["audit", "verify", str(log), "--key", str(public)]) == 0
    signer = policy_signer("../keys-acme/acme.key", str(pol))
    assert isinstance(signer, Signer) and signer.key.name == "acme"
    assert policy_signer(None, str(pol)) == "env"


def test_the_environment_variable_wins_over_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    named, named_pub = keygen(tmp_path, "named")
    env, env_pub = keygen(tmp_path, "env")
    monkeypatch.setenv(KEY_ENV, str(env))
    pol = policy_file(tmp_path / "pol", f"{{store_content: true, signing_key: {named}}}")
    assert policy_signer(str(named), str(pol)) == "env"
    log = tmp_path / "logs" / "d.jsonl"
    assert cli.main(["allocate", "--policy", str(pol), "--candidates", str(candidates(tmp_path)),
                     "--audit-log", str(log), "--format", "context"]) == 0
    assert verify_signed(log, VerifierKey.load(env_pub)).ok
    assert not verify_signed(log, VerifierKey.load(named_pub)).ok


def test_a_policy_key_inside_the_log_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, _ = keygen(tmp_path, "acme")
    logs = tmp_path / "pol" / "logs"
    logs.mkdir(parents=True)
    os.replace(private, logs / "acme.key")
    pol = policy_file(tmp_path / "pol", "{log: logs/d.jsonl, store_content: true, signing_key: logs/acme.key}")
    assert cli.main(["allocate", "--policy", str(pol), "--candidates", str(candidates(tmp_path))]) == 5
    err = capsys.readouterr().err
    assert "audit.key_in_log_folder" in err
    assert "move it elsewhere (e.g. ~/.config/ctxbudget/) and point the policy's audit.signing_key at it" in err
    assert not (logs / "d.jsonl").exists()


def test_an_infeasible_decision_is_signed_on_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    private, public = keygen(tmp_path, "acme")
    monkeypatch.setenv(KEY_ENV, str(private))
    pol = policy_file(tmp_path / "pol", "{store_content: true}", budget="{max_tokens: 5}",
                      extra="  pinned: [{id: big}]\n")
    log = tmp_path / "logs" / "d.jsonl"
    small = [{"source_id": "big", "content": "ok", "relevance_score": 0.9}]
    assert cli.main(["allocate", "--policy", str(pol), "--candidates", str(candidates(tmp_path, small)),
                     "--audit-log", str(log)]) == 0
    assert sizes(log) == [1]  # signed just now: the next append is not due by time
    rows = [{"source_id": "big", "content": "word " * 100, "relevance_score": 0.9}]
    assert cli.main(["allocate", "--policy", str(pol), "--candidates", str(candidates(tmp_path, rows)),
                     "--audit-log", str(log)]) == 3
    assert json.loads(log.read_text().splitlines()[1])["record"]["outcome"] == "infeasible"
    report = verify_signed(log, VerifierKey.load(public))
    assert report.ok and report.unsigned_tail == 0 and sizes(log) == [1, 2]


def test_no_timer_a_checkpoint_waits_for_the_next_append_or_close(tmp_path: Path) -> None:
    private, public = keygen(tmp_path, "acme")
    now = [0.0]
    (tmp_path / "logs").mkdir()
    log = AuditLog(tmp_path / "logs" / "a.jsonl",
                   signer=Signer.from_file(private, every_records=1000, every_s=60.0, clock=lambda: now[0]))
    log.append({"decision_id": "d0"})
    log.append({"decision_id": "d1"})
    now[0] = 3600.0  # an hour passes without an append: nothing is written
    assert not sidecar_path(log.path).exists()
    log.close()  # ... until close
    assert sizes(log.path) == [2]
    log.append({"decision_id": "d2"})  # not yet 60 s after the last note
    assert sizes(log.path) == [2]
    now[0] = 3661.0
    log.append({"decision_id": "d3"})  # the first append 60 s after the last note signs
    assert sizes(log.path) == [2, 4]
    assert verify_signed(log.path, VerifierKey.load(public)).ok


def test_the_sidecar_follows_the_folder_handle_not_a_swapped_symlink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log's folder is swapped for a symlink to another folder between the record's
    write and its checkpoint: the note still lands next to the log, nothing elsewhere."""
    private, public = keygen(tmp_path, "acme")
    root = tmp_path / "root"
    (root / "logs").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    log = AuditLog(root / "logs" / "a.jsonl", root=root, signer=Signer.from_file(private, every_records=1))
    real_commit = AuditLog._commit

    def commit_then_swap(self: AuditLog, *args: Any) -> None:
        real_commit(self, *args)
        os.replace(root / "logs", root / "moved")
        os.symlink(outside, root / "logs")

    monkeypatch.setattr(AuditLog, "_commit", commit_then_swap)
    log.append({"decision_id": "d0"})
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in (root / "moved").iterdir()) == ["a.jsonl", "a.jsonl.checkpoints", "a.jsonl.lock"]
    assert verify_signed(root / "moved" / "a.jsonl", VerifierKey.load(public), log_name="a.jsonl").ok


def test_a_symlinked_sidecar_is_refused(tmp_path: Path) -> None:
    private, _ = keygen(tmp_path, "acme")
    (tmp_path / "logs").mkdir()
    target = tmp_path / "elsewhere.checkpoints"
    os.symlink(target, tmp_path / "logs" / "a.jsonl.checkpoints")
    log = AuditLog(tmp_path / "logs" / "a.jsonl", signer=Signer.from_file(private, every_records=1))
    with pytest.raises(AuditError) as exc:
        log.append({"decision_id": "d0"})
    assert exc.value.code in ("audit.bad_checkpoint", "audit.checkpoint_failed")
    assert not target.exists()
