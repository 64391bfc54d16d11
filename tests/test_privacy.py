"""Privacy by default (engine/audit/privacy.py, issue 12 part 4): keyed digests for content
that is not stored, headings, matched terms and the pack query treated as content,
``audit.mask`` for metadata fields, and the secret's file handling."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine import AuditLog, cli, load_policy
from engine.audit.privacy import AuditSecret, configured_secret, create_secret, load_secret
from engine.audit.records import check_log, check_record
from engine.audit.replay import replay
from engine.candidates import from_mappings
from engine.decide import decide
from engine.errors import AuditError, PolicyError
from engine.policy import AuditSettings, Policy
from engine.retrieval.index import HierarchicalIndex
from engine.retrieval.pack import pack

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "schemas" / "audit.schema.json").read_text())
HEAD = "apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: p, revision: '1'}\nspec:\n"


def write_policy(folder: Path, body: str) -> Path:
    path = folder / "p.yaml"
    path.write_text(HEAD + "  budget: {max_tokens: 400}\n" + body)
    return path


def plant() -> str:
    """A fresh secret word: lower-case letters and digits, so BM25 keeps it as one term."""
    return "zq" + secrets.token_hex(8)


def occurrences(log_bytes: bytes, secret: str, *texts: str) -> int:
    """How often ``secret`` shows in the log: as itself (any case), and as the hex of the
    plain SHA-256 of itself or of any text carrying it (the old, brute-forceable digest)."""
    low = log_bytes.lower()
    n = low.count(secret.lower().encode())
    for t in (secret, *texts):
        n += low.count(hashlib.sha256(t.encode()).hexdigest().encode())
    return n


def new_log(folder: Path) -> AuditLog:
    folder.mkdir(parents=True, exist_ok=True)
    return AuditLog(folder / "audit.jsonl")


def log_bytes(log: AuditLog) -> bytes:
    return Path(log.path).read_bytes()


# --------------------------------------------------------------------------- the planted secret


def test_planted_secret_appears_zero_times_in_content_heading_query_and_masked_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts: dict[str, int] = {}
    # content and heading: a pack over a document whose heading and body carry the secret,
    # asked with a query that carries it too (so matched_terms would carry it as well)
    for place in ("content", "heading", "query"):
        s = plant()
        docs = tmp_path / place / "docs"
        docs.mkdir(parents=True)
        heading = f"Vault {s}" if place == "heading" else "Vault access"
        body = f"The vault code is {s} today." if place == "content" else "Ask the vault team for the code."
        text = f"# {heading}\n\n{body}\n\nOther paragraph about the vault.\n"
        (docs / "vault.md").write_text(text)
        query = f"vault code {s}" if place == "query" else "vault code"
        log = new_log(tmp_path / place)
        packed = pack(load_policy(write_policy(tmp_path / place, "")), query, [docs], audit_log=log)
        rec = packed.decided.record
        jsonschema.validate(rec, SCHEMA)
        index = HierarchicalIndex()
        index.index_document(text, "vault", markdown=True)
        texts = [n.content for n in index.nodes.values()]  # every candidate's content
        counts[place] = occurrences(log_bytes(log), s, heading, body, query, *texts)
        if place == "query":
            assert rec["query"]["text"] is None and rec["query"]["digest"].startswith("hmac-sha256:")
        if place == "heading":
            titled = [r for r in rec["input"]["items"] if "title" in r["metadata"]]
            assert titled and all(set(r["metadata"]["title"]) == {"masked"} for r in titled)
            assert "title" in rec["privacy"]["masked_fields"]
    # masked metadata: a caller's field named by audit.mask
    s = plant()
    policy = load_policy(write_policy(tmp_path, "  audit: {mask: ['customer_*']}\n"))
    log = new_log(tmp_path / "meta")
    rec = decide(from_mappings([({"source_id": "a", "content": "hello there", "relevance_score": 0.9,
                                  "metadata": {"customer_email": f"{s}@example.com", "region": "eu"}}, None)]),
                 policy, audit_log=log).record
    counts["masked metadata"] = occurrences(log_bytes(log), s, f"{s}@example.com")
    assert rec["input"]["items"][0]["metadata"]["region"] == "eu"
    assert rec["privacy"]["masked_fields"] == ["customer_email"]
    assert counts == {"content": 0, "heading": 0, "query": 0, "masked metadata": 0}


def test_with_store_content_the_content_and_query_are_stored_as_before(tmp_path: Path) -> None:
    s = plant()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "vault.md").write_text(f"# Vault\n\nThe vault code is {s} today.\n")
    policy = load_policy(write_policy(tmp_path, "  audit: {store_content: true}\n"))
    log = new_log(tmp_path / "logs")
    rec = pack(policy, f"vault code {s}", [docs], audit_log=log).decided.record
    assert rec["query"] == {"text": f"vault code {s}", "digest": None}
    stored = [r for r in rec["input"]["items"] if s in r.get("content", "")]
    assert stored and all(r["content_sha256"] == hashlib.sha256(r["content"].encode()).hexdigest()
                          for r in stored)
    assert rec["privacy"] == {"content_stored": True, "digest_scheme": "sha256", "key_id": None,
                              "mask": [], "masked_fields": []}
    assert rec["input"]["digest"].startswith("sha256:")
    assert check_log(log).ok
    assert replay(rec).identical


# --------------------------------------------------------------------------- brute force


PINS = [f"PIN {n:04d}" for n in range(10_000)]


def test_brute_force_recovers_the_old_plain_digest_but_not_the_keyed_one(tmp_path: Path) -> None:
    secret_pin = PINS[4821]
    log = new_log(tmp_path / "logs")
    policy = Policy.default(500)
    rec = decide(from_mappings([({"source_id": "pin", "content": secret_pin, "relevance_score": 0.9}, None)]),
                 policy, audit_log=log).record
    keyed = rec["input"]["items"][0]["content_sha256"]
    assert keyed.startswith("hmac-sha256:")
    # the old record wrote the plain SHA-256 (still what store_content: true writes)
    old = decide(from_mappings([({"source_id": "pin", "content": secret_pin, "relevance_score": 0.9}, None)]),
                 policy.replace(audit=AuditSettings(store_content=True))).record["items"][0]["content_sha256"]
    by_plain = {hashlib.sha256(p.encode()).hexdigest(): p for p in PINS}
    assert by_plain.get(old) == secret_pin  # recovered from a 10,000-word dictionary
    # the keyed digest: no dictionary word hashes to it, plainly or under a guessed key
    guesses = (b"", b"ctxbudget", bytes(32))
    tried = {"hmac-sha256:" + hmac.new(k, p.encode(), hashlib.sha256).hexdigest() for k in guesses for p in PINS}
    assert keyed not in tried and keyed[len("hmac-sha256:"):] not in by_plain
    # only the holder of the log's secret finds it
    holder = configured_secret(None, None)
    assert holder is not None and holder.digest(secret_pin) == keyed


# --------------------------------------------------------------------------- checking records


def test_keyed_digests_are_checked_with_the_secret_and_noted_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = new_log(tmp_path / "logs")
    rec = decide(from_mappings([({"source_id": "a", "content": "alpha", "relevance_score": 0.9}, None),
                                ({"source_id": "b", "content": "beta", "relevance_score": 0.4}, None)]),
                 Policy.default(500), audit_log=log).record
    with_secret = check_log(log)
    assert with_secret.ok and with_secret.unchecked == ()
    monkeypatch.delenv("CTXBUDGET_AUDIT_SECRET")
    without = check_log(log)
    assert without.ok and without.record_findings == ()  # never a false failure
    key_id = rec["privacy"]["key_id"]
    assert without.unchecked == ((1, f"keyed digests (hmac-sha256, key {key_id}) not checkable without the "
                                     "secret: set CTXBUDGET_AUDIT_SECRET to the log's secret file"),)
    assert "1 record(s) partly not checkable: keyed digests" in without.summary()
    # a forged input is caught by the holder of the secret only
    rec["input"]["items"][1]["relevance_score"] = 0.5
    assert check_record(rec, 1) == ()
    holder = AuditSecret.from_bytes(bytes(range(32)))
    assert [f.code for f in check_record(rec, 1, holder)] == ["record.input_digest"]
    other = AuditSecret.from_bytes(b"x" * 32)
    assert check_record(rec, 1, other) == ()


def test_audit_verify_without_the_secret_passes_and_says_what_it_could_not_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    log = new_log(tmp_path / "logs")
    decide(from_mappings([({"source_id": "a", "content": "alpha", "relevance_score": 0.9}, None)]),
           Policy.default(500), audit_log=log)
    monkeypatch.delenv("CTXBUDGET_AUDIT_SECRET")
    code = cli.main(["audit", "verify", str(log.path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "1 record(s) partly not checkable: keyed digests" in out


def test_masked_fields_with_stored_content_keep_plain_digests(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.default(500).replace(audit=AuditSettings(store_content=True, mask=("ssn",)))
    log = new_log(tmp_path / "logs")
    rec = decide(from_mappings([({"source_id": "a", "content": "alpha", "relevance_score": 0.9,
                                  "metadata": {"ssn": "078-05-1120"}}, None)]), policy, audit_log=log).record
    meta = rec["input"]["items"][0]["metadata"]
    holder = AuditSecret.from_bytes(bytes(range(32)))
    assert meta == {"ssn": {"masked": holder.digest_json("078-05-1120")}}
    assert b"078-05-1120" not in log_bytes(log)
    monkeypatch.delenv("CTXBUDGET_AUDIT_SECRET")
    checks = check_log(log)
    assert checks.ok and checks.unchecked == ()  # plain digests: checkable by anyone


# --------------------------------------------------------------------------- the secret's file


def test_no_secret_is_an_error_that_says_how_to_create_one(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTXBUDGET_AUDIT_SECRET")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    log = new_log(tmp_path / "logs")
    with pytest.raises(AuditError) as info:
        decide(from_mappings([({"source_id": "a", "content": "alpha", "relevance_score": 0.9}, None)]),
               Policy.default(500), audit_log=log)
    assert info.value.code == "audit.secret_missing"
    assert info.value.message == (
        f"audit.store_content is false, so the record written to {log.path} keys its content digests with a "
        "secret, and none is configured: create one outside the log's folder with `ctxbudget audit secret "
        "--out ~/.config/ctxbudget/audit.secret` (the default location), or name another file with "
        "CTXBUDGET_AUDIT_SECRET or the policy's audit.secret_file")
    assert not Path(log.path).exists() or Path(log.path).read_bytes() == b""
    # a decision that is not logged needs no secret (an ephemeral key hides its content)
    rec = decide(from_mappings([({"source_id": "a", "content": "alpha", "relevance_score": 0.9}, None)]),
                 Policy.default(500)).record
    assert rec["privacy"]["key_id"] == "ephemeral"
    # the per-user default location, once created, is used without naming it
    assert cli.main(["audit", "secret", "--out", str(tmp_path / "config" / "ctxbudget" / "audit.secret")]) == 0
    made = load_secret(tmp_path / "config" / "ctxbudget" / "audit.secret")
    rec = decide(from_mappings([({"source_id": "a", "content": "alpha", "relevance_score": 0.9}, None)]),
                 Policy.default(500), audit_log=log).record
    assert rec["privacy"]["key_id"] == made.key_id


def test_policy_secret_file_is_read_relative_to_the_policy(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTXBUDGET_AUDIT_SECRET")
    made = create_secret(tmp_path / "keys.secret")
    policy = load_policy(write_policy(tmp_path, "  audit: {secret_file: keys.secret}\n"))
    log = new_log(tmp_path / "logs")
    rec = decide(from_mappings([({"source_id": "a", "content": "alpha", "relevance_score": 0.9}, None)]),
                 policy, audit_log=log).record
    assert rec["privacy"]["key_id"] == made.key_id
    assert rec["input"]["items"][0]["content_sha256"] == made.digest("alpha")


def test_secret_files_that_are_unsafe_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = tmp_path / "loose.secret"
    loose.write_bytes(bytes(32))
    loose.chmod(0o640)
    with pytest.raises(AuditError) as info:
        load_secret(loose)
    assert info.value.code == "audit.secret_permissions"
    assert info.value.message.endswith(f"(mode 0640); anyone who reads it can test guesses against the log: "
                                       f"chmod 600 {loose}")
    short = tmp_path / "short.secret"
    fd = os.open(short, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"abc")
    os.close(fd)
    with pytest.raises(AuditError, match="holds 3 bytes, fewer than 16") as info:
        load_secret(short)
    assert info.value.code == "audit.secret_short"
    good = create_secret(tmp_path / "good.secret")
    link = tmp_path / "link.secret"
    link.symlink_to(tmp_path / "good.secret")
    with pytest.raises(AuditError, match="a symlink is refused") as info:
        load_secret(link)
    assert info.value.code == "audit.secret_unreadable"
    with pytest.raises(AuditError) as info:
        load_secret(tmp_path / "absent.secret")
    assert info.value.code == "audit.secret_not_found"
    assert "ctxbudget audit secret --out" in info.value.message
    # a secret inside the log's folder travels with the logs: refused
    logs = tmp_path / "logs"
    logs.mkdir()
    inside = create_secret(logs / "audit.secret")
    monkeypatch.setenv("CTXBUDGET_AUDIT_SECRET", str(logs / "audit.secret"))
    with pytest.raises(AuditError) as info:
        decide(from_mappings([({"source_id": "a", "content": "alpha", "relevance_score": 0.9}, None)]),
               Policy.default(500), audit_log=AuditLog(logs / "audit.jsonl"))
    assert info.value.code == "audit.secret_in_log_folder"
    assert good.key_id != inside.key_id and "key" not in repr(good).replace("key_id", "")


def test_cli_audit_secret_creates_a_private_file_once(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audit.secret"
    assert cli.main(["audit", "secret", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    st = out.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32
    key_id = load_secret(out).key_id
    assert printed == (f"audit secret -> {out} (mode 0600, key id {key_id}); keep it outside every log "
                       f"folder and export CTXBUDGET_AUDIT_SECRET={out}\n")
    before = out.read_bytes()
    assert cli.main(["audit", "secret", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: audit.secret_exists: {out} exists; a secret is never "
                                              "overwritten")
    assert out.read_bytes() == before


# --------------------------------------------------------------------------- the policy's settings


def test_mask_globs_are_validated_with_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(write_policy(tmp_path, "  audit: {mask: ['customer_[ab*']}\n"))
    assert info.value.code == "policy.semantic.mask_glob"
    assert info.value.path == "$.spec.audit.mask[0]"
    assert "mask 'customer_[ab*' has an unclosed '['; close it" in info.value.message
    with pytest.raises(PolicyError) as info:
        load_policy(write_policy(tmp_path, "  audit: {mask: ['a', 'a']}\n"))
    assert info.value.path.startswith("$.spec.audit.mask")
    with pytest.raises(PolicyError) as info:
        load_policy(write_policy(tmp_path, "  audit: {mask: customer}\n"))
    assert info.value.path.startswith("$.spec.audit.mask")
    with pytest.raises(PolicyError) as info:
        load_policy(write_policy(tmp_path, "  sources: {group_by: metadata, field: customer_tier}\n"
                                           "  audit: {mask: ['customer_*']}\n"))
    assert (info.value.code, info.value.path) == ("policy.semantic.mask_hides_rule_field", "$.spec.audit.mask[0]")
    assert info.value.message == ("mask 'customer_*' hides metadata key 'customer_tier', which $.spec.sources.field "
                                  "reads: a replay of the record could not apply that rule; narrow the mask or "
                                  "group/match on another key")
    with pytest.raises(PolicyError, match=r"hides metadata key 'vip', which \$\.spec\.pinned\[0\]\.metadata"):
        load_policy(write_policy(tmp_path, "  pinned: [{metadata: {vip: true}, required: false}]\n"
                                           "  audit: {mask: ['v*']}\n"))
    ok = load_policy(write_policy(tmp_path, "  audit: {mask: ['customer_*', 'ssn']}\n"))
    assert ok.audit.mask == ("customer_*", "ssn")
    assert ok.to_dict()["spec"]["audit"]["mask"] == ["customer_*", "ssn"]
    # a policy that masks nothing keeps the digest it had before masks existed
    assert "mask" not in Policy.default(500).to_dict()["spec"]["audit"]


def test_records_validate_against_the_schema(tmp_path: Path) -> None:
    log = new_log(tmp_path / "logs")
    policy = Policy.default(500).replace(audit=AuditSettings(mask=("who",)))
    rec: dict[str, Any] = decide(from_mappings([({"source_id": "a", "content": "alpha", "relevance_score": 0.9,
                                                  "metadata": {"who": "x", "title": "T"}}, None)]),
                                 policy, audit_log=log, query="what is alpha").record
    jsonschema.validate(rec, SCHEMA)
    assert rec["privacy"]["masked_fields"] == ["title", "who"]
    assert rec["privacy"]["mask"] == ["who", "title", "matched_terms"]


def test_cli_pack_without_a_secret_exits_5_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CTXBUDGET_AUDIT_SECRET")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Refunds\n\nRefunds are prorated.\n")
    log = tmp_path / "logs" / "audit.jsonl"
    log.parent.mkdir()
    code = cli.main(["pack", "--policy", str(write_policy(tmp_path, "")), "--query", "refunds", str(docs),
                     "--audit-log", str(log)])
    captured = capsys.readouterr()
    assert code == 5 and captured.out == ""
    assert captured.err.startswith("error: audit.secret_missing: ")
    assert "ctxbudget audit secret --out ~/.config/ctxbudget/audit.secret" in captured.err
    assert not log.exists()
