"""name@path and hf:path@sha256:... inside policies: resolved like extends (engine.tokfiles)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from engine import TokenizerError, cli
from engine.audit.log import AuditLog
from engine.counts import policy_tokenizer
from engine.encodings import offline_cl100k_path
from engine.policy import Policy, load_policy
from engine.tokens import get_tokenizer
from engine.tokfiles import TOKENIZER_DIR_ENV, TokenizerBase

POLICY = """apiVersion: ctxbudget/v1
kind: BudgetPolicy
metadata: {{name: t, revision: "1"}}
spec:
  budget: {{max_tokens: 100}}
  tokenizer: "{tokenizer}"
"""
CANDS = '{"source_id": "a", "content": "Grüße aus Köln, 你好", "relevance_score": 0.5}\n'
TEXT = "Grüße aus Köln, 你好 — refunds in 14 days"


@pytest.fixture(autouse=True)
def _no_tokenizer_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKENIZER_DIR_ENV, raising=False)


def _folder(tmp_path: Path, tokenizer: str, *, copy_to: str | None = "tok/cl100k_base.tiktoken") -> Path:
    root = tmp_path / "policies"
    root.mkdir(parents=True)
    if copy_to:
        (root / copy_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(offline_cl100k_path(), root / copy_to)
    (root / "p.yaml").write_text(POLICY.format(tokenizer=tokenizer))
    (root / "c.jsonl").write_text(CANDS)
    return root


def test_regression_name_at_path_is_accepted_in_a_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16: `tokenizer: cl100k_base@path` was refused inside a policy (the schema's
    pattern). It now loads, relative to the policy's folder whatever the working folder."""
    root = _folder(tmp_path, "cl100k_base@tok/cl100k_base.tiktoken")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    policy = load_policy(root / "p.yaml")
    assert policy.tokenizer == "cl100k_base@tok/cl100k_base.tiktoken"
    assert policy_tokenizer(policy).count(TEXT) == get_tokenizer().count(TEXT)
    assert cli.main(["policy", "validate", str(root / "p.yaml")]) == 0
    assert capsys.readouterr().out.startswith("ok ")
    assert cli.main(["allocate", "--policy", str(root / "p.yaml"), "--candidates", str(root / "c.jsonl")]) == 0


def test_an_hf_tokenizer_in_a_policy_folder(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([TEXT * 3], trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    root = _folder(tmp_path, "", copy_to=None)
    (root / "models" / "tiny").mkdir(parents=True)
    tok.save(str(root / "models" / "tiny" / "tokenizer.json"))
    sha = hashlib.sha256((root / "models" / "tiny" / "tokenizer.json").read_bytes()).hexdigest()
    (root / "p.yaml").write_text(POLICY.format(tokenizer=f"hf:models/tiny@sha256:{sha}"))
    counter = policy_tokenizer(load_policy(root / "p.yaml"))
    assert counter.count(TEXT) == len(tok.encode(TEXT, add_special_tokens=False).ids)


def test_a_path_in_a_base_policy_is_relative_to_the_base(tmp_path: Path) -> None:
    """As for extends: a tokenizer written in bases/base.yaml names a file next to it."""
    root = _folder(tmp_path, "", copy_to="bases/cl100k_base.tiktoken")
    (root / "bases" / "base.yaml").write_text(POLICY.format(tokenizer="cl100k_base@cl100k_base.tiktoken"))
    (root / "p.yaml").write_text('extends: bases/base.yaml\napiVersion: ctxbudget/v1\nkind: BudgetPolicy\n'
                                 'metadata: {name: child, revision: "2"}\nspec: {budget: {max_tokens: 50}}\n')
    policy = load_policy(root / "p.yaml")
    assert policy.tokenizer == "cl100k_base@cl100k_base.tiktoken"
    assert policy_tokenizer(policy).count(TEXT) == get_tokenizer().count(TEXT)


@pytest.mark.parametrize(("written", "why"), [
    ("cl100k_base@../outside/cl100k_base.tiktoken", "points outside the policy's folder"),
    ("cl100k_base@tok/../../outside/cl100k_base.tiktoken", "points outside the policy's folder"),
    ("cl100k_base@{outside}/cl100k_base.tiktoken", "is absolute"),
    ("hf:../outside/tokenizer.json@sha256:" + "0" * 64, "points outside the policy's folder"),
])
def test_a_path_that_leaves_the_policy_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        written: str, why: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(offline_cl100k_path(), outside / "cl100k_base.tiktoken")
    written = written.format(outside=outside)
    root = _folder(tmp_path, written)
    assert cli.main(["--errors=json", "policy", "validate", str(root / "p.yaml")]) == 2
    payload = json.loads(capsys.readouterr().err)
    assert (payload["code"], payload["path"], payload["line"]) == ("tokenizer.path_outside", "$.spec.tokenizer", 6)
    path = written.partition("@")[2] if not written.startswith("hf:") else "../outside/tokenizer.json"
    assert payload["message"] == (
        f"tokenizer file {path!r} {why}; in a policy, name a file relative to the policy's folder "
        f"({root.resolve()}) or to the folder named by CTXBUDGET_TOKENIZER_DIR, and copy it there")


def test_a_symlinked_tokenizer_file_is_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path, "cl100k_base@tok/link.tiktoken")
    os.symlink(root / "tok" / "cl100k_base.tiktoken", root / "tok" / "link.tiktoken")
    with pytest.raises(TokenizerError) as err:
        policy_tokenizer(load_policy(root / "p.yaml"))
    assert err.value.code == "tokenizer.path_symlink" and err.value.path == "$.spec.tokenizer"
    assert err.value.message.startswith(
        f"tokenizer file 'tok/link.tiktoken': tok/link.tiktoken (in {root.resolve()}) is a symbolic link; a "
        "tokenizer file named in a policy must be a real file")
    # A symlinked folder on the way is refused the same way.
    os.symlink(root / "tok", root / "linked")
    (root / "p.yaml").write_text(POLICY.format(tokenizer="cl100k_base@linked/cl100k_base.tiktoken"))
    with pytest.raises(TokenizerError) as err:
        policy_tokenizer(load_policy(root / "p.yaml"))
    assert err.value.code == "tokenizer.path_symlink"
    assert err.value.message.startswith(f"tokenizer file 'linked/cl100k_base.tiktoken': linked (in {root.resolve()})")


def test_a_missing_file_names_where_it_was_looked_for_then_the_tokenizer_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path, "cl100k_base@shared/cl100k_base.tiktoken", copy_to=None)
    with pytest.raises(TokenizerError) as err:
        policy_tokenizer(load_policy(root / "p.yaml"))
    real = root.resolve()
    assert err.value.code == "tokenizer.file_missing"
    assert err.value.message == (
        f"tokenizer file 'shared/cl100k_base.tiktoken' is not in the policy's folder (looked in: "
        f"{real}/shared/cl100k_base.tiktoken, {real}/shared/cl100k_base.tiktoken/cl100k_base.tiktoken); "
        "nothing is downloaded at run time: copy the file there, or set CTXBUDGET_TOKENIZER_DIR to a folder "
        "that holds it")
    # The configured tokenizer folder holds it, by the same relative path.
    shared = tmp_path / "tokenizers"
    (shared / "shared").mkdir(parents=True)
    shutil.copy(offline_cl100k_path(), shared / "shared" / "cl100k_base.tiktoken")
    monkeypatch.setenv(TOKENIZER_DIR_ENV, str(shared))
    assert policy_tokenizer(load_policy(root / "p.yaml")).count(TEXT) == get_tokenizer().count(TEXT)


def test_a_changed_file_in_the_policy_folder_is_refused_by_hash(tmp_path: Path) -> None:
    root = _folder(tmp_path, "cl100k_base@tok/cl100k_base.tiktoken")
    data = bytearray((root / "tok" / "cl100k_base.tiktoken").read_bytes())
    data[10] ^= 1
    (root / "tok" / "cl100k_base.tiktoken").write_bytes(bytes(data))
    with pytest.raises(TokenizerError) as err:
        policy_tokenizer(load_policy(root / "p.yaml"))
    assert err.value.code == "tokenizer.hash_mismatch"
    assert err.value.message.startswith(f"{root.resolve()}/tok/cl100k_base.tiktoken is not the official cl100k_base")


def test_the_same_name_in_two_policy_folders_reads_each_folders_file(tmp_path: Path) -> None:
    """The instance cache is keyed by the folder too: one folder's file never serves another's."""
    good = _folder(tmp_path / "a", "cl100k_base@tok/cl100k_base.tiktoken")
    bad = _folder(tmp_path / "b", "cl100k_base@tok/cl100k_base.tiktoken")
    (bad / "tok" / "cl100k_base.tiktoken").write_bytes(b"not the file")
    assert policy_tokenizer(load_policy(good / "p.yaml")).count(TEXT) == get_tokenizer().count(TEXT)
    with pytest.raises(TokenizerError) as err:
        policy_tokenizer(load_policy(bad / "p.yaml"))
    assert err.value.code == "tokenizer.hash_mismatch" and str(bad.resolve()) in err.value.message


def test_a_record_of_such_a_policy_verifies_and_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The record keeps the name as written; audit verify and replay resolve it from the
    recorded policy file's folder, from any working folder."""
    root = _folder(tmp_path, "cl100k_base@tok/cl100k_base.tiktoken")
    text = (root / "p.yaml").read_text().replace("budget: {max_tokens: 100}",
                                                 "budget: {max_tokens: 100}\n  audit: {store_content: true}")
    (root / "p.yaml").write_text(text)
    log = tmp_path / "audit.jsonl"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["allocate", "--policy", str(root / "p.yaml"), "--candidates", str(root / "c.jsonl"),
                     "--audit-log", str(log)]) == 0
    record = next(iter(AuditLog(log)))["record"]
    assert record["tokenizer"] == {"name": "cl100k_base@tok/cl100k_base.tiktoken", "exact": True}
    capsys.readouterr()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["audit", "verify", str(log)]) == 0
    assert cli.main(["audit", "replay", str(log)]) == 0


def test_a_policy_without_a_file_opens_the_path_as_given(tmp_path: Path) -> None:
    """Programmatic policies (Policy.default, the manager) have no folder: the path is the
    caller's, absolute or relative to the working folder, as for get_tokenizer."""
    shutil.copy(offline_cl100k_path(), tmp_path / "cl100k_base.tiktoken")
    policy = Policy.default(100, tokenizer=f"cl100k_base@{tmp_path}/cl100k_base.tiktoken")
    assert policy_tokenizer(policy).count(TEXT) == get_tokenizer().count(TEXT)
    assert TokenizerBase.of(None, None) is None
