"""Signed checkpoints (engine.audit.note, .signing, .proofs) and the attacks of issue 12
they must detect: rechain forgery, truncation at a record boundary, rollback to an older
copy, a swapped-in log, a rewritten checkpoint file and a forged signature."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from engine import cli
from engine.audit import merkle
from engine.audit.log import AuditLog
from engine.audit.note import (
    DASH,
    Checkpoint,
    SigningKey,
    VerifierKey,
    format_checkpoint,
    load_signing_key,
    log_origin,
    parse_note,
    split_notes,
)
from engine.audit.proofs import check_proof, load_notes, prove, verify_signed
from engine.audit.signing import KEY_ENV, Signer, sidecar_path
from engine.errors import AuditError

from auditcases import allocated


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def _key(tmp: Path, name: str = "acme") -> tuple[Path, Path]:
    """(private key file, verifier key file) written by `audit keygen`."""
    out = tmp / f"keys-{name}"
    assert cli.main(["audit", "keygen", "--out", str(out), "--name", name]) == 0
    return out / f"{name}.key", out / f"{name}.pub"


def _record(i: int) -> dict[str, Any]:
    # Real records differ by timestamp and timings even for the same decision id.
    return {"decision_id": f"d{i}", "timestamp": os.urandom(8).hex(), "items": [
        {"source_id": f"doc-{i}-a", "decision": "included", "reason": "selected"},
        {"source_id": f"doc-{i}-b", "decision": "excluded", "reason": "over_budget"}]}


def _signed_log(tmp: Path, key_file: Path, n: int, *, name: str = "decisions.jsonl",
                every: int = 1000, folder: str = "logs") -> AuditLog:
    (tmp / folder).mkdir(exist_ok=True)
    log = AuditLog(tmp / folder / name, signer=Signer.from_file(key_file, every_records=every,
                                                                 clock=lambda: 0.0))
    for i in range(n):
        log.append(_record(i))
    log.close()
    return log


def _forge_rechain(path: Path, seq: int) -> None:
    """The attacker's script: only hashlib and rfc8785. Flip an excluded item of record
    ``seq`` to included and reseal that line and every later one."""
    lines = path.read_bytes().splitlines()
    out, prev = [], None
    for raw in lines:
        env = json.loads(raw)
        if env["seq"] == seq:
            for item in env["record"]["items"]:
                if item["decision"] == "excluded":
                    item["decision"], item["reason"] = "included", "selected"
        if prev is not None:
            env["prev_hash"] = prev
        if env["seq"] >= seq:
            body = {k: v for k, v in env.items() if k != "hash"}
            env["hash"] = "sha256:" + hashlib.sha256(rfc8785.dumps(body)).hexdigest()
        prev = env["hash"]
        out.append(rfc8785.dumps(env))
    path.write_bytes(b"\n".join(out) + b"\n")


def _codes(report: Any) -> set[str]:
    return {code for code, _ in report.problems}


# -- format ---------------------------------------------------------------------------

def test_keygen_writes_a_0600_pem_and_a_verifier_key(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    private, public = _key(tmp_path)
    assert private.stat().st_mode & 0o777 == 0o600
    vkey = VerifierKey.load(public)
    pub = load_signing_key(private).verifier.public
    assert vkey.public == pub and vkey.name == "acme"
    # The verifier-key format of c2sp.org/signed-note, recomputed here from the spec.
    kh = hashlib.sha256(b"acme\n\x01" + pub).digest()[:4]
    assert public.read_text().strip() == f"acme+{kh.hex()}+" + base64.b64encode(b"\x01" + pub).decode()
    capsys.readouterr()
    assert cli.main(["audit", "keygen", "--out", str(private.parent), "--name", "acme"]) == 2
    assert "keys are never overwritten" in capsys.readouterr().err


def test_checkpoint_note_follows_the_c2sp_formats(tmp_path: Path) -> None:
    private, _ = _key(tmp_path)
    log = _signed_log(tmp_path, private, 5)
    notes = split_notes(sidecar_path(log.path).read_text())
    assert len(notes) == 1
    text = notes[0][1]
    body, _, sig_line = text.partition("\n\n")
    origin, size, root = body.split("\n")
    key = load_signing_key(private).verifier
    assert origin == log_origin(key, "decisions.jsonl")
    assert origin.startswith("ctxbudget.audit/acme/decisions.jsonl/")
    assert size == "5"
    lines = log.path.read_bytes().splitlines()
    leaves = [merkle.leaf_hash(bytes.fromhex(json.loads(raw)["hash"][7:])) for raw in lines]
    assert base64.b64decode(root) == merkle.root_from_leaf_hashes(leaves)
    assert sig_line.startswith(f"{DASH} acme ") and sig_line.endswith("\n")
    blob = base64.b64decode(sig_line.split(" ")[2])
    assert blob[:4] == hashlib.sha256(b"acme\n\x01" + key.public).digest()[:4]
    Ed25519PublicKey.from_public_bytes(key.public).verify(blob[4:], (body + "\n").encode())


def test_checkpoints_every_n_records_every_t_seconds_and_on_close(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    now = [0.0]
    (tmp_path / "logs").mkdir()
    log = AuditLog(tmp_path / "logs" / "a.jsonl",
                   signer=Signer.from_file(private, every_records=3, every_s=60.0,
                                           clock=lambda: now[0]))
    for i in range(7):
        log.append(_record(i))
    sizes = lambda: [parse_note(t).checkpoint().size  # noqa: E731
                     for _, t in split_notes(sidecar_path(log.path).read_text())]
    assert sizes() == [3, 6]
    now[0] = 61.0  # the first append after T seconds signs
    log.append(_record(7))
    assert sizes() == [3, 6, 8]
    log.append(_record(8))
    assert verify_signed(log.path, VerifierKey.load(public)).unsigned_tail == 1
    log.close()
    log.close()  # nothing new: no second note
    assert sizes() == [3, 6, 8, 9]
    report = verify_signed(log.path, VerifierKey.load(public))
    assert report.ok and report.status == "signed" and report.unsigned_tail == 0


def test_the_environment_names_the_key_and_a_new_process_continues(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = _key(tmp_path)
    monkeypatch.setenv(KEY_ENV, str(private))
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "e.jsonl"
    with AuditLog(path) as log:
        assert log.active_signer() is not None
        log.append(_record(0))
    # A handle in "another process" (pickled: the key is reloaded from its file there).
    again = pickle.loads(pickle.dumps(AuditLog(path)))
    again.append(_record(1))
    again.close()
    report = verify_signed(path, VerifierKey.load(public))
    assert report.ok and report.signed_size == 2


def test_without_a_key_nothing_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = AuditLog(tmp_path / "plain.jsonl")
    assert log.active_signer() is None
    allocated(log, store=True)  # a real decision: `audit verify` also checks the record
    log.close()
    assert not sidecar_path(log.path).exists()
    # the writers' lock and the policy archive only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.jsonl", "plain.jsonl.lock", "plain.jsonl.policies"]
    capsys.readouterr()
    assert cli.main(["audit", "verify", str(log.path)]) == 0
    assert "signatures: unsigned" in capsys.readouterr().out


def test_key_must_be_private_and_outside_the_log_folder(tmp_path: Path) -> None:
    private, _ = _key(tmp_path)
    with pytest.raises(AuditError, match="is inside the log's folder") as exc:
        AuditLog(private.parent / "log.jsonl", signer=Signer.from_file(private))
    assert exc.value.code == "audit.key_in_log_folder"
    os.chmod(private, 0o640)
    with pytest.raises(AuditError, match=r"has mode 0640; it must be readable by its owner "
                       r"only: chmod 600") as exc:
        load_signing_key(private)
    assert exc.value.code == "audit.key_permissions"
    os.chmod(private, 0o600)
    link = tmp_path / "link.key"
    link.symlink_to(private)
    with pytest.raises(AuditError, match="not a symlink"):
        load_signing_key(link)
    # The key never reaches the log's folder: no file there holds its bytes.
    log = _signed_log(tmp_path, private, 3)
    secret = private.read_bytes().split(b"-----")[2].strip()
    for f in log.path.parent.iterdir():
        assert secret not in f.read_bytes()


def test_the_signer_refuses_to_sign_a_rewritten_history(tmp_path: Path) -> None:
    private, _ = _key(tmp_path)
    log = _signed_log(tmp_path, private, 4)
    _forge_rechain(log.path, 2)
    fresh = AuditLog(log.path, signer=Signer.from_file(private))
    with pytest.raises(AuditError, match="no longer matches its last signed checkpoint "
                       r"\(tree size 4\); refusing to sign a rewritten history") as exc:
        fresh.append(_record(9))
    assert exc.value.code == "audit.history_rewritten"


# -- attacks --------------------------------------------------------------------------

def test_rechain_forgery_is_detected_at_every_position(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    private, public = _key(tmp_path)
    key = VerifierKey.load(public)
    n, detected = 8, 0
    for seq in range(1, n + 1):
        log = _signed_log(tmp_path, private, n, name=f"r{seq}.jsonl")
        _forge_rechain(log.path, seq)
        assert AuditLog(log.path, signer=None).verify().ok  # the chain alone is fooled
        report = verify_signed(log.path, key)
        detected += "signature.root_mismatch" in _codes(report)
    assert detected == n
    capsys.readouterr()
    assert cli.main(["audit", "verify", str(log.path), "--key", str(public)]) == 6
    out = capsys.readouterr().out
    assert "signature.root_mismatch" in out and "records do not hash to the signed root" in out


def test_truncation_at_a_record_boundary_is_detected(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    key = VerifierKey.load(public)
    n, detected = 6, 0
    for cut in range(1, n + 1):  # drop the last `cut` records
        log = _signed_log(tmp_path, private, n, name=f"t{cut}.jsonl")
        lines = log.path.read_bytes().splitlines(keepends=True)
        log.path.write_bytes(b"".join(lines[:n - cut]))
        assert AuditLog(log.path, signer=None).verify().ok
        report = verify_signed(log.path, key)
        detected += "signature.truncated" in _codes(report)
        assert f"records {n - cut + 1}..{n} were cut off" in " ".join(m for _, m in report.problems)
    assert detected == n


def test_rollback_to_an_older_copy_is_detected(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    private, public = _key(tmp_path)
    key = VerifierKey.load(public)
    log = _signed_log(tmp_path, private, 4)
    old_log, old_side = log.path.read_bytes(), sidecar_path(log.path).read_bytes()
    for i in range(4, 9):
        log.append(_record(i))
    log.close()
    # The reviewer kept the latest note (any proof bundle carries one too).
    kept = tmp_path / "kept.note"
    kept.write_text(split_notes(sidecar_path(log.path).read_text())[-1][1])
    # (1) the log alone rolled back: its own sidecar gives it away.
    log.path.write_bytes(old_log)
    assert "signature.truncated" in _codes(verify_signed(log.path, key))
    # (2) log and sidecar rolled back together: the kept note gives it away.
    sidecar_path(log.path).write_bytes(old_side)
    assert verify_signed(log.path, key).ok  # consistent with itself, as an old copy is
    report = verify_signed(log.path, key, external=load_notes(kept))
    assert "signature.truncated" in _codes(report)
    capsys.readouterr()
    assert cli.main(["audit", "verify", str(log.path), "--key", str(public),
                     "--checkpoint", str(kept)]) == 6
    assert "older copy of the log" in capsys.readouterr().out


def test_a_log_name_with_spaces_and_plus_makes_a_valid_origin(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    log = _signed_log(tmp_path, private, 2, name="a b+c.jsonl")
    origin = split_notes(sidecar_path(log.path).read_text())[0][1].split("\n")[0]
    assert origin.split("/")[2] == "a%20b%2Bc.jsonl" and " " not in origin and "+" not in origin
    key = VerifierKey.load(public)
    assert verify_signed(log.path, key).ok
    result = check_proof(prove(log.path, "d1"), key)
    assert result.ok and result.log_name == "a b+c.jsonl"


def test_swapping_in_another_log_is_detected(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    key = VerifierKey.load(public)
    other_private, _ = _key(tmp_path, "mallory")
    a = _signed_log(tmp_path, private, 3, name="a.jsonl")
    b = _signed_log(tmp_path, private, 5, name="b.jsonl", folder="other")
    c = _signed_log(tmp_path, other_private, 3, name="a.jsonl", folder="third")
    for src, code in ((b, "signature.wrong_origin"), (c, "signature.invalid")):
        shutil.copy(src.path, a.path)
        shutil.copy(sidecar_path(src.path), sidecar_path(a.path))
        assert AuditLog(a.path, signer=None).verify().ok
        assert code in _codes(verify_signed(a.path, key))
    # Another log's records under this log's own sidecar: roots differ.
    a2 = _signed_log(tmp_path, private, 5, name="a2.jsonl")
    shutil.copy(b.path, a2.path)
    assert "signature.root_mismatch" in _codes(verify_signed(a2.path, key))


def _rewrites(log: AuditLog, attacker: SigningKey, key: VerifierKey) -> dict[str, Callable[[], None]]:
    side = sidecar_path(log.path)

    def new_root_same_signature() -> None:
        text = side.read_text()
        lines = log.path.read_bytes().splitlines()
        leaves = [merkle.leaf_hash(bytes.fromhex(json.loads(r)["hash"][7:])) for r in lines]
        root = base64.b64encode(merkle.root_from_leaf_hashes(leaves)).decode()
        notes = split_notes(text)
        body, _, sig = notes[-1][1].partition("\n\n")
        b = body.split("\n")
        kept = "".join(t + "\n" for _, t in notes[:-1])
        side.write_text(kept + f"{b[0]}\n{b[1]}\n{root}\n\n{sig}\n")

    def resigned_by_attacker() -> None:
        lines = log.path.read_bytes().splitlines()
        leaves = [merkle.leaf_hash(bytes.fromhex(json.loads(r)["hash"][7:])) for r in lines]
        cp = Checkpoint(log_origin(key, log.path.name), len(leaves),
                        merkle.root_from_leaf_hashes(leaves))
        side.write_text(format_checkpoint(cp, attacker) + "\n")

    def deleted() -> None:
        side.unlink()

    def earlier_notes_only() -> None:
        side.write_text(split_notes(side.read_text())[0][1] + "\n")

    return {"new root, old signature": new_root_same_signature,
            "re-signed with another key of the same name": resigned_by_attacker,
            "deleted": deleted, "cut to the notes before the forgery": earlier_notes_only}


def test_rewriting_the_checkpoint_file_without_the_key_is_detected(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    key = VerifierKey.load(public)
    attacker = SigningKey.generate("acme")  # same name, not the key
    found: dict[str, set[str]] = {}
    for i, name in enumerate(_rewrites(AuditLog(tmp_path / "x"), attacker, key)):
        log = _signed_log(tmp_path, private, 6, name=f"w{i}.jsonl", every=3)  # notes at 3, 6
        _forge_rechain(log.path, 5)
        _rewrites(log, attacker, key)[name]()
        report = verify_signed(log.path, key)
        assert not report.ok, name
        found[name] = _codes(report)
    assert found == {
        "new root, old signature": {"signature.invalid", "signature.unsigned_tail"},
        "re-signed with another key of the same name": {"signature.invalid",
                                                        "signature.unsigned_tail"},
        "deleted": {"signature.no_checkpoints"},
        "cut to the notes before the forgery": {"signature.unsigned_tail"},
    }


def test_a_forged_signature_is_detected(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    key = VerifierKey.load(public)
    log = _signed_log(tmp_path, private, 3)
    side = sidecar_path(log.path)
    body = split_notes(side.read_text())[0][1].partition("\n\n")[0] + "\n"
    for sig in (bytes(64), os.urandom(64), key.public * 2):
        blob = base64.b64encode(key.key_hash + sig).decode()
        side.write_text(f"{body}\n{DASH} acme {blob}\n")
        report = verify_signed(log.path, key)
        assert _codes(report) == {"signature.invalid", "signature.unsigned_tail"}
        assert "no valid signature by key 'acme'" in report.problems[0][1]


def test_a_fork_in_the_signed_history_is_not_append_only(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    key = VerifierKey.load(public)
    log = _signed_log(tmp_path, private, 4)
    signer = load_signing_key(private)
    other = merkle.root_from_leaf_hashes([merkle.leaf_hash(b"x")] * 2)
    fork = format_checkpoint(Checkpoint(log_origin(key, log.path.name), 2, other), signer)
    with open(sidecar_path(log.path), "a") as f:
        f.write(fork + "\n")
    report = verify_signed(log.path, key)
    assert "signature.not_append_only" in _codes(report)
    assert "signature.root_mismatch" in _codes(report)


# -- proofs ---------------------------------------------------------------------------

def test_prove_and_check_proof_with_the_public_key_alone(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    private, public = _key(tmp_path)
    key = VerifierKey.load(public)
    log = _signed_log(tmp_path, private, 7, every=3)
    for i in range(7):
        bundle = prove(log.path, f"d{i}")
        assert bundle["tree_size"] == 7 and bundle["leaf_index"] == i
        assert check_proof(json.loads(json.dumps(bundle)), key).ok
    out = tmp_path / "proof.json"
    assert cli.main(["audit", "prove", str(log.path), "d3", "--out", str(out)]) == 0
    shutil.rmtree(log.path.parent)  # the reviewer has no log
    capsys.readouterr()
    assert cli.main(["audit", "check-proof", str(out), "--key", str(public)]) == 0
    assert capsys.readouterr().out.strip() == ("VALID: decision 'd3' is record 4 of 7 in log "
                                               "'decisions.jsonl', signed by 'acme'")
    good = json.loads(out.read_text())
    _, other_pub = _key(tmp_path, "other")
    tampered = {
        "another decision's line": {**good, "line": good["line"].replace('"d3"', '"d9"')},
        "a changed proof hash": {**good, "proof": [base64.b64encode(bytes(32)).decode()]
                                 + good["proof"][1:]},
        "another index": {**good, "leaf_index": 2},
        "no record line": {**good, "line": None},
        "a bigger tree": {**good, "tree_size": 8},
        "a rewritten checkpoint": {**good, "checkpoint": good["checkpoint"].replace("\n7\n", "\n8\n")},
        "not a bundle": {"format": "x"},
    }
    capsys.readouterr()
    for what, bundle in tampered.items():
        out.write_text(json.dumps(bundle))
        assert cli.main(["audit", "check-proof", str(out), "--key", str(public)]) == 6, what
        assert capsys.readouterr().out.startswith("INVALID: "), what
    out.write_text(json.dumps(good))
    assert cli.main(["audit", "check-proof", str(out), "--key", str(other_pub)]) == 6
    assert "not signed by key 'other'" in capsys.readouterr().out


def test_prove_refuses_unsigned_records(tmp_path: Path) -> None:
    private, _ = _key(tmp_path)
    log = _signed_log(tmp_path, private, 3)
    log.signer.every_records = 100  # type: ignore[union-attr]
    log.signer.every_s = 1e9  # type: ignore[union-attr]
    log.append(_record(3))
    with pytest.raises(AuditError, match=r"after the last signed checkpoint \(tree size 3\)"):
        prove(log.path, "d3")
    with pytest.raises(AuditError, match="no decision 'nope'"):
        prove(log.path, "nope")
    plain = AuditLog(tmp_path / "plain.jsonl")
    plain.append(_record(0))
    with pytest.raises(AuditError, match="no checkpoint in plain.jsonl.checkpoints"):
        prove(plain.path, "d0")


# -- key rotation ---------------------------------------------------------------------

def test_key_rotation_keeps_the_log_verifiable_with_its_first_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    old_private, old_public = _key(tmp_path, "acme")
    new_private, new_public = _key(tmp_path, "acme-2027")
    log = _signed_log(tmp_path, old_private, 3)
    log.append(_record(3))  # unsigned until the rotation signs it with the old key
    monkeypatch.setenv(KEY_ENV, str(old_private))
    capsys.readouterr()
    assert cli.main(["audit", "rotate", str(log.path), "--new-key", str(new_private)]) == 0
    assert "signed by 'acme-2027' from here on" in capsys.readouterr().out
    monkeypatch.setenv(KEY_ENV, str(new_private))
    with AuditLog(log.path) as rotated:  # a new process with the new key
        for i in range(4, 6):
            rotated.append(_record(i))
    root_key = VerifierKey.load(old_public)
    report = verify_signed(log.path, root_key)
    assert report.ok and report.signed_size == 6, report.problems
    notes = [parse_note(t) for _, t in split_notes(sidecar_path(log.path).read_text())]
    assert [n.is_rotation for n in notes] == [False, False, True, False, False]
    assert notes[-1].checkpoint().origin == log_origin(root_key, "decisions.jsonl")
    # A decision signed after the rotation is proven with the first key alone.
    bundle = prove(log.path, "d5")
    assert len(bundle["rotations"]) == 1
    result = check_proof(bundle, root_key)
    assert result.ok and result.message.endswith("signed by 'acme-2027' (rotated from 'acme')")
    assert not check_proof({**bundle, "rotations": []}, root_key).ok
    kept_ok = tmp_path / "kept-ok.checkpoints"
    shutil.copy(sidecar_path(log.path), kept_ok)
    assert verify_signed(log.path, root_key, external=load_notes(kept_ok)).ok
    # The retired key no longer signs: its checkpoint after the rotation is refused.
    retired = load_signing_key(old_private)
    side = sidecar_path(log.path)
    lines = log.path.read_bytes().splitlines()
    leaves = [merkle.leaf_hash(bytes.fromhex(json.loads(r)["hash"][7:])) for r in lines]
    late = Checkpoint(log_origin(root_key, "decisions.jsonl"), 6, merkle.root_from_leaf_hashes(leaves))
    with open(side, "a") as f:
        f.write(format_checkpoint(late, retired) + "\n")
    kept = tmp_path / "kept.checkpoints"  # a reviewer's copy of the whole sidecar
    shutil.copy(side, kept)
    assert verify_signed(log.path, root_key, external=load_notes(kept)).problems[0][0] \
        == "signature.invalid"  # the retired key's late note, not the kept rotation
    assert "signature.invalid" in _codes(verify_signed(log.path, root_key))


def test_a_rotation_without_the_current_key_is_refused(tmp_path: Path) -> None:
    private, public = _key(tmp_path)
    key = VerifierKey.load(public)
    log = _signed_log(tmp_path, private, 3)
    _forge_rechain(log.path, 2)
    mallory = SigningKey.generate("mallory")
    from engine.audit.note import Rotation, sign_note
    rot = Rotation(log_origin(key, log.path.name), 3, mallory.verifier)
    lines = log.path.read_bytes().splitlines()
    leaves = [merkle.leaf_hash(bytes.fromhex(json.loads(r)["hash"][7:])) for r in lines]
    cp = Checkpoint(log_origin(key, log.path.name), 3, merkle.root_from_leaf_hashes(leaves))
    with open(sidecar_path(log.path), "a") as f:
        f.write(sign_note(rot.body(), mallory) + "\n" + format_checkpoint(cp, mallory) + "\n")
    report = verify_signed(log.path, key)
    assert {"signature.bad_rotation", "signature.invalid", "signature.root_mismatch"} <= _codes(report)
    assert "key rotation not signed by the current key 'acme'" in " ".join(m for _, m in report.problems)


def test_a_bad_key_in_the_environment_stops_writers_before_they_write_not_readers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path / "d.jsonl", signer=None)
    log.append(_record(0))
    before = log.path.read_bytes()
    private, _ = _key(tmp_path)
    inside = tmp_path / "inside.key"
    shutil.copy(private, inside)
    monkeypatch.setenv(KEY_ENV, str(inside))
    reader = AuditLog(log.path)
    assert [e["record"]["decision_id"] for e in reader] == ["d0"]
    assert reader.verify().ok
    with pytest.raises(AuditError, match="is inside the log's folder") as exc:
        reader.append(_record(1))
    assert exc.value.code == "audit.key_in_log_folder"
    assert log.path.read_bytes() == before


def test_cli_allocate_signs_on_close_and_verify_reports_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[1]
    private, public = _key(tmp_path)
    monkeypatch.setenv(KEY_ENV, str(private))
    log = tmp_path / "logs" / "cli.jsonl"
    for _ in range(2):
        assert cli.main(["allocate", "--policy", str(root / "policies" / "support-assistant.yaml"),
                         "--candidates", str(root / "tests" / "fixtures" / "candidates"
                                             / "support-assistant.jsonl"),
                         "--audit-log", str(log)]) == 0
    capsys.readouterr()
    assert cli.main(["audit", "verify", str(log), "--key", str(public), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["signatures"]["status"] == "signed"
    assert report["signatures"]["signed_size"] == 2
    assert report["signatures"]["unsigned_tail"] == {"records": 0, "from_seq": None, "to_seq": None}
    assert [c["tree_size"] for c in report["signatures"]["checkpoints"]] == [1, 2]
    monkeypatch.delenv(KEY_ENV)
    plain = tmp_path / "logs" / "plain.jsonl"
    assert cli.main(["allocate", "--policy", str(root / "policies" / "support-assistant.yaml"),
                     "--candidates", str(root / "tests" / "fixtures" / "candidates"
                                         / "support-assistant.jsonl"),
                     "--audit-log", str(plain)]) == 0
    capsys.readouterr()
    assert cli.main(["audit", "verify", str(plain), "--key", str(public)]) == 6
    out = capsys.readouterr().out
    assert "signature.no_checkpoints: no signed checkpoint in plain.jsonl.checkpoints" in out
    assert cli.main(["audit", "verify", str(plain), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["signatures"] == {"status": "unsigned"}
