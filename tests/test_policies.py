"""Content-addressed policy revisions (engine/audit/policies.py): the effective policy
of every digest a log uses is archived next to it, verified on read, resolved by
verify/show/replay; two policies claiming one (name, revision) with different digests are
`policy.revision_conflict`, in one log and in a folder validated together."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from auditcases import reseal
from engine import AuditLog, cli, load_policy
from engine.audit.lineformat import GENESIS_HASH
from engine.audit.policies import PolicyArchive, archive_dir, archive_policy
from engine.audit.records import check_log
from engine.audit.replay import replay_envelope
from engine.canonical import canonical_bytes, digest
from engine.candidates import from_mappings
from engine.decide import decide
from engine.errors import AuditError, CandidateError, PolicyError
from engine.policy import Policy

HEAD = "apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: help, revision: 'r1'}\nspec:\n"
ROWS = [{"source_id": "a", "content": "Refunds are accepted within 30 days.", "relevance_score": 0.9},
        {"source_id": "b", "content": "Shipping takes a week.", "relevance_score": 0.4}]


def write_policy(folder: Path, max_tokens: int = 400, name: str = "p.yaml", head: str = HEAD) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(head + f"  budget: {{max_tokens: {max_tokens}}}\n  audit: {{store_content: true}}\n")
    return path


def cands() -> Any:
    return from_mappings([(r, None) for r in ROWS])


def new_log(tmp_path: Path) -> AuditLog:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return AuditLog(tmp_path / "logs" / "a.jsonl")


def envelopes(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_effective_policy_is_archived_under_its_digest(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path))
    log = new_log(tmp_path)
    decide(cands(), policy, audit_log=log)
    folder = archive_dir(log.path)
    assert folder == tmp_path / "logs" / "a.jsonl.policies"
    archived = folder / (policy.digest.removeprefix("sha256:") + ".json")
    assert archived.read_bytes() == canonical_bytes(policy.to_dict())
    assert digest(json.loads(archived.read_text())) == policy.digest
    assert stat.S_IMODE(archived.stat().st_mode) == 0o640
    before = archived.stat().st_mtime_ns
    decide(cands(), policy, audit_log=log)  # the same digest: not written again
    assert archived.stat().st_mtime_ns == before
    assert sorted(p.name for p in folder.iterdir()) == [".lock", archived.name]
    other = load_policy(write_policy(tmp_path / "two", head=HEAD.replace("'r1'", "'r2'"), max_tokens=300))
    decide(cands(), other, audit_log=log)  # a new revision: a second file
    assert len([p for p in folder.iterdir() if p.suffix == ".json"]) == 2
    assert check_log(log).ok


def test_one_log_refuses_a_second_text_under_the_same_revision(tmp_path: Path) -> None:
    first = load_policy(write_policy(tmp_path / "v1"))
    changed = load_policy(write_policy(tmp_path / "v2", max_tokens=300))  # same name and revision
    log = new_log(tmp_path)
    decide(cands(), first, audit_log=log)
    lines = log.path.read_bytes()
    with pytest.raises(PolicyError) as exc:
        decide(cands(), changed, audit_log=log)
    err = exc.value
    assert err.code == "policy.revision_conflict" and err.path == "$.metadata.revision"
    assert err.location is not None and err.location.file == str(tmp_path / "v2" / "p.yaml")
    assert err.message == (
        f"policy 'help' revision 'r1' is claimed by two different policies: "
        f"{archive_dir(log.path) / (first.digest[7:] + '.json')} ({first.digest}) and "
        f"{tmp_path / 'v2' / 'p.yaml'} ({changed.digest}); a revision must name one policy text, so a "
        f"reviewer can tell what it said: bump metadata.revision in the changed policy "
        f"({tmp_path / 'v2' / 'p.yaml'}; for a policy changed in code, Policy.replace(revision=...)); an unchanged file also gets "
        "a new effective policy when an engine upgrade changes a default (`ctxbudget policy render` "
        "shows it)")
    assert log.path.read_bytes() == lines  # nothing decided, nothing recorded
    # the same text from another file is no conflict, and a bumped revision is accepted
    decide(cands(), load_policy(write_policy(tmp_path / "copy")), audit_log=log)
    decide(cands(), changed.replace(revision="r2"), audit_log=log)
    assert len(envelopes(log.path)) == 3


def test_cli_revision_conflict_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = tmp_path / "c.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    log = tmp_path / "logs" / "a.jsonl"
    base = ["allocate", "--candidates", str(rows), "--audit-log", str(log), "--format", "context"]
    assert cli.main(base + ["--policy", str(write_policy(tmp_path / "v1"))]) == 0
    capsys.readouterr()
    assert cli.main(base + ["--policy", str(write_policy(tmp_path / "v2", max_tokens=300))]) == 2
    err = capsys.readouterr().err
    assert "error: policy.revision_conflict: " in err and "bump metadata.revision" in err
    assert len(envelopes(log)) == 1


def test_policy_validate_checks_a_folder_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "policies"
    write_policy(folder, name="a.yaml")
    write_policy(folder, name="b.yaml")  # the same text twice: fine
    write_policy(folder, name="other.yml", head=HEAD.replace("help", "other"), max_tokens=100)
    assert cli.main(["policy", "validate", str(folder)]) == 0
    assert capsys.readouterr().out.count("ok ") == 3
    write_policy(folder, name="c.yaml", max_tokens=300)  # help r1 again, another text
    assert cli.main(["policy", "validate", str(folder)]) == 2
    err = capsys.readouterr().err
    a, c = load_policy(folder / "a.yaml"), load_policy(folder / "c.yaml")
    assert (f"error: policy.revision_conflict: {folder / 'c.yaml'}:3:24: $.metadata.revision: policy 'help' "
            f"revision 'r1' is claimed by two different policies: {folder / 'a.yaml'} ({a.digest}) and "
            f"{folder / 'c.yaml'} ({c.digest})") in err
    # the repository's own policies hold together
    assert cli.main(["policy", "validate", str(Path(__file__).resolve().parents[1] / "policies")]) == 0


def test_an_altered_archive_file_is_a_finding_and_is_never_overwritten(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = load_policy(write_policy(tmp_path))
    log = new_log(tmp_path)
    decide(cands(), policy, audit_log=log)
    archived = archive_dir(log.path) / (policy.digest[7:] + ".json")
    forged = policy.to_dict()
    forged["spec"]["blocked"] = [{"id": "a", "reason": "forged"}]
    archived.write_bytes(canonical_bytes(forged))
    checks = check_log(log)
    assert not checks.ok
    assert [p.code for p in checks.archive_problems] == ["archive.digest_mismatch"]
    assert "the archived policy was changed after it was written" in checks.archive_problems[0].message
    assert cli.main(["audit", "verify", str(log.path)]) == 6
    assert "policy archive: archive.digest_mismatch" in capsys.readouterr().out
    with pytest.raises(AuditError) as exc:
        decide(cands(), policy, audit_log=log)
    assert exc.value.code == "audit.archive_tampered"
    assert archived.read_bytes() == canonical_bytes(forged)  # the evidence is kept
    assert len(envelopes(log.path)) == 1


def test_verify_show_and_replay_resolve_a_record_policy_from_the_archive(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = load_policy(write_policy(tmp_path))
    log = new_log(tmp_path)
    decide(cands(), policy, audit_log=log)
    recs = [e["record"] for e in envelopes(log.path)]
    del recs[0]["policy"]["effective"]  # a record that names its policy by digest only
    reseal(log.path, recs)
    checks = check_log(log)
    assert checks.ok, checks.summary()
    assert checks.decisions[0]["record"]["policy"]["effective"] == policy.to_dict()
    result = replay_envelope(checks.decisions[0])
    assert result.identical, result.summary()
    assert cli.main(["audit", "show", str(log.path)]) == 0
    assert "policy   help revision r1" in capsys.readouterr().out
    assert cli.main(["audit", "replay", str(log.path)]) == 0
    # without the archive the record cannot be checked, and says why
    shutil.rmtree(archive_dir(log.path))
    found = check_log(log).by_seq[1]
    assert "record.policy_unresolved" in [f.code for f in found]
    assert cli.main(["audit", "verify", str(log.path)]) == 6


def test_two_archived_policies_claiming_one_revision_are_reported(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    decide(cands(), load_policy(write_policy(tmp_path / "v1")), audit_log=log)
    planted = load_policy(write_policy(tmp_path / "v2", max_tokens=300)).to_dict()
    (archive_dir(log.path) / (digest(planted)[7:] + ".json")).write_bytes(canonical_bytes(planted))
    problems = check_log(log).archive_problems
    assert [p.code for p in problems] == ["archive.revision_conflict"]
    assert "policy 'help' revision 'r1' is claimed by two different policies" in problems[0].message


def test_archive_reads_refuse_symlinks_and_bad_names(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    policy = load_policy(write_policy(tmp_path))
    decide(cands(), policy, audit_log=log)
    folder = archive_dir(log.path)
    outside = tmp_path / "outside.json"
    outside.write_bytes(canonical_bytes(policy.to_dict()))
    name = "0" * 64 + ".json"
    os.symlink(outside, folder / name)
    (folder / "notes.txt").write_text("hello")
    codes = sorted((p.code, Path(p.file).name) for p in PolicyArchive(log.path).check()[1])
    assert codes == [("archive.unreadable", name), ("archive.unreadable", "notes.txt")]
    assert PolicyArchive(log.path).get(policy.digest)[0] == policy.to_dict()
    assert PolicyArchive(log.path).get("sha256:" + "1" * 64) == (None, f"{folder / ('1' * 64 + '.json')} "
                                                                 "is not in the archive")


def test_an_archive_folder_swapped_for_a_symlink_receives_nothing(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, archive_dir(log.path))
    with pytest.raises(AuditError) as exc:
        decide(cands(), load_policy(write_policy(tmp_path)), audit_log=log)
    assert exc.value.code == "audit.archive_failed"
    assert "a symbolic link" in exc.value.message
    assert list(outside.iterdir()) == [] and not log.path.exists()


def test_an_empty_log_has_no_archive_and_verifies(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    log.append({"decision_id": "x"})  # a bare record (not a decision of decide): nothing archived
    assert not archive_dir(log.path).exists()
    assert PolicyArchive(log.path).check() == ((), ())
    assert GENESIS_HASH.startswith("sha256:")


ARCHIVE_RACE = 150


def test_race_swapping_the_archive_folder_for_a_symlink_never_writes_outside(tmp_path: Path) -> None:
    """A thread swaps ``<log>.policies`` for a symlink to another folder and back while
    policies are archived (each archived file removed again, so every attempt writes)."""
    log = new_log(tmp_path)
    policy = Policy.default(100)
    real, held = archive_dir(log.path), tmp_path / "logs" / "held"
    real.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    stop, swaps = threading.Event(), [0]

    def clear() -> None:  # whatever is at the archive's name: the symlink, or a folder
        # the writer made meanwhile (archiving creates a missing archive folder)
        if real.is_symlink():
            real.unlink()
        elif real.exists():
            shutil.rmtree(real, ignore_errors=True)

    def swapper() -> None:
        while not stop.is_set():
            try:
                os.rename(real, held)
            except OSError:
                clear()  # a folder the writer made while held was away: put held back
                if held.exists() and not real.exists():
                    os.rename(held, real)
                continue
            for _ in range(100):  # each state held a moment, so that appends meet both
                try:
                    os.symlink(outside, real)
                    break
                except FileExistsError:
                    clear()
            time.sleep(0.0003)
            for _ in range(100):
                clear()
                try:
                    os.rename(held, real)
                    break
                except OSError:
                    continue
            swaps[0] += 1
            time.sleep(0.0003)

    thread = threading.Thread(target=swapper)
    thread.start()
    written = refused = 0
    try:
        for _ in range(ARCHIVE_RACE):
            try:
                archive_policy(log, policy)
                written += 1
            except AuditError:
                refused += 1
            for folder in (real, held):  # wherever the real folder is now
                try:
                    names = [] if folder.is_symlink() else os.listdir(folder)
                    for name in names:
                        if name.endswith(".json"):
                            os.unlink(folder / name)
                except OSError:
                    pass  # moved by the swapper meanwhile
    finally:
        stop.set()
        thread.join()
    assert list(outside.iterdir()) == []
    assert written + refused == ARCHIVE_RACE and written > 0 and swaps[0] > 0


def test_bad_input_leaves_no_archive_behind(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    path = write_policy(tmp_path)
    path.write_text(path.read_text() + "  limits: {max_candidates: 1}\n")
    with pytest.raises(CandidateError) as exc:
        decide(cands(), load_policy(path), audit_log=log)  # two candidates, one allowed
    assert exc.value.code == "candidate.too_many"
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == []
