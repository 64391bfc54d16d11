"""Who, what and which files: the request part, pack's query and corpus in audit records
(engine/audit/request.py), the CLI flags, `audit query --request-id/--requested-by` and
`audit show`."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import SUITE_AUDIT_SECRET
from engine import AuditLog, cli, load_policy
from engine.audit import query as q
from engine.audit.record import stable_view
from engine.audit.records import check_log
from engine.audit.request import Request, parse_label
from engine.candidates import from_mappings
from engine.decide import decide
from engine.errors import AuditError, UsageError
from engine.retrieval.pack import pack

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "schemas" / "audit.schema.json").read_text())
HEAD = "apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: p, revision: '1'}\nspec:\n"
ROWS = [{"source_id": "a", "content": "Refunds are accepted within 30 days.", "relevance_score": 0.9},
        {"source_id": "b", "content": "Shipping takes a week.", "relevance_score": 0.4}]


def write_policy(folder: Path, audit: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "p.yaml"
    path.write_text(HEAD + "  budget: {max_tokens: 400}\n" + (f"  audit: {audit}\n" if audit else ""))
    return path


def keyed(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return "hmac-sha256:" + hmac.new(SUITE_AUDIT_SECRET, raw, hashlib.sha256).hexdigest()


def cands() -> Any:
    return from_mappings([(r, None) for r in ROWS])


def new_log(tmp_path: Path) -> AuditLog:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return AuditLog(tmp_path / "logs" / "a.jsonl")


def who(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in ("request_id", "request_id_generated", "requested_by", "labels")}


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["record"] for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- the request part


def test_a_given_request_is_recorded_as_given(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    req = Request.of("trace-7f3a:01", "svc:search-api", {"team": "search", "ticket": "AUD-12"})
    rec = decide(cands(), load_policy(write_policy(tmp_path)), audit_log=log, request=req).record
    assert who(rec) == {"request_id": "trace-7f3a:01", "request_id_generated": False,
                        "requested_by": "svc:search-api", "labels": {"team": "search", "ticket": "AUD-12"}}
    jsonschema.validate(rec, SCHEMA)
    assert check_log(log).ok
    assert who(records(log.path)[0]) == who(rec)


def test_without_a_request_an_id_is_generated_and_marked_generated(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path))
    first = who(decide(cands(), policy).record)
    second = decide(cands(), policy).record
    assert first["request_id_generated"] is True and first["requested_by"] is None and first["labels"] == {}
    assert uuid.UUID(first["request_id"]).version == 4
    assert first["request_id"] != second["request_id"]
    # a generated id is volatile (like the decision id); a given one is not
    assert "request_id" not in stable_view(second) and stable_view(second)["request_id_generated"]
    given = decide(cands(), policy, request=Request.of("r-1")).record
    assert stable_view(given)["request_id"] == "r-1"


@pytest.mark.parametrize(("kwargs", "code", "text"), [
    ({"request_id": ""}, "request.bad_id", "is not 1 to 128 letters, digits or . _ : @ / + = -"),
    ({"request_id": "has space"}, "request.bad_id", "leave it out to have one generated"),
    ({"request_id": "x" * 129}, "request.bad_id", "is not 1 to 128"),
    ({"requested_by": " alice"}, "request.bad_requested_by", "without leading or trailing spaces"),
    ({"requested_by": "al\nice"}, "request.bad_requested_by", "printable characters"),
    ({"labels": {"1team": "x"}}, "request.bad_label", "must start with a letter or '_'"),
    ({"labels": {"team": "a\x00b"}}, "request.bad_label", "at most 256 printable characters"),
    ({"labels": [("team", "a"), ("team", "b")]}, "request.bad_label", "label 'team' given twice ('a' and 'b')"),
    ({"labels": {f"k{n}": "v" for n in range(65)}}, "request.bad_label", "65 labels given, at most 64"),
])
def test_bad_requests_are_usage_errors_that_say_how_to_fix_them(kwargs: dict[str, Any], code: str,
                                                                 text: str) -> None:
    with pytest.raises(UsageError) as exc:
        Request.of(**kwargs)
    assert exc.value.code == code and text in exc.value.message


def test_label_syntax() -> None:
    assert parse_label("team=search") == ("team", "search")
    assert parse_label("expr=a=b") == ("expr", "a=b")  # the first '=' splits
    assert parse_label("empty=") == ("empty", "")
    for bad in ("team", "=value", ""):
        with pytest.raises(UsageError, match="is not KEY=VALUE; write e.g. --label team=search"):
            parse_label(bad)


def test_masked_labels_are_keyed_and_listed(tmp_path: Path) -> None:
    secret = "zq" + secrets.token_hex(8)
    policy = load_policy(write_policy(tmp_path, "{mask: ['customer_*']}"))
    log = new_log(tmp_path)
    req = Request.of("r-2", "alice", {"customer_email": f"{secret}@example.com", "team": "search"})
    rec = decide(cands(), policy, audit_log=log, request=req).record
    assert rec["labels"] == {"customer_email": {"masked": keyed(json.dumps(f"{secret}@example.com"))},
                                        "team": "search"}
    assert "labels.customer_email" in rec["privacy"]["masked_fields"]
    jsonschema.validate(rec, SCHEMA)
    assert log.path.read_bytes().count(secret.encode()) == 0


# --------------------------------------------------------------------------- the CLI flags


def test_cli_flags_reach_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cands = tmp_path / "c.jsonl"
    cands.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    log = tmp_path / "logs" / "a.jsonl"
    code = cli.main(["allocate", "--policy", str(write_policy(tmp_path)), "--candidates", str(cands),
                     "--audit-log", str(log), "--request-id", "REQ-1", "--requested-by", "bob",
                     "--label", "team=search", "--label", "env=prod"])
    assert code == 0
    assert who(records(log)[0]) == {"request_id": "REQ-1", "request_id_generated": False,
                                    "requested_by": "bob", "labels": {"env": "prod", "team": "search"}}
    out = json.loads(capsys.readouterr().out)
    assert out["audit_record"]["request_id"] == "REQ-1"


@pytest.mark.parametrize(("flags", "message"), [
    (["--label", "team"], "request.bad_label: --label 'team' is not KEY=VALUE; write e.g. --label team=search"),
    (["--label", "a=1", "--label", "a=2"], "request.bad_label: label 'a' given twice ('1' and '2'); give each key once"),
    (["--request-id", "no spaces please"], "request.bad_id: request id 'no spaces please' is not 1 to 128"),
])
def test_cli_bad_request_flags_exit_2_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    cands = tmp_path / "c.jsonl"
    cands.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    log = tmp_path / "logs" / "a.jsonl"
    code = cli.main(["allocate", "--policy", str(write_policy(tmp_path)), "--candidates", str(cands),
                     "--audit-log", str(log), *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_pack_takes_the_request_flags_too(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Refunds\n\nRefunds are accepted within 30 days.\n")
    log = tmp_path / "logs" / "a.jsonl"
    assert cli.main(["pack", "--policy", str(write_policy(tmp_path)), "--query", "refunds", str(docs),
                     "--audit-log", str(log), "--requested-by", "carol", "--label", "app=help"]) == 0
    req = records(log)[0]
    assert req["requested_by"] == "carol" and req["labels"] == {"app": "help"} and req["request_id_generated"]


# --------------------------------------------------------------------------- pack: query and corpus


def make_corpus(tmp_path: Path, secret: str) -> tuple[Path, Path, bytes]:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    vault = f"# Vault\n\nThe vault code is {secret} today.\n".encode()
    (docs / "sub" / "vault.md").write_bytes(vault)
    (docs / "empty.txt").write_text("  \n")
    single = tmp_path / "single" / "notes.txt"
    single.parent.mkdir()
    single.write_text("Ask the vault team.\n")
    return docs, single, vault


def test_pack_records_the_corpus_files_keyed_when_content_is_not_stored(tmp_path: Path) -> None:
    secret = "zq" + secrets.token_hex(8)
    docs, single, vault = make_corpus(tmp_path, secret)
    log = new_log(tmp_path)
    query = f"what is the vault code {secret}"
    rec = pack(load_policy(write_policy(tmp_path)), query, [docs, single], audit_log=log,
               request=Request.of("r-9", "dave", {"purpose": "audit"})).decided.record
    jsonschema.validate(rec, SCHEMA)
    assert rec["corpus"] == {
        "roots": [str(docs), str(single.parent)], "digest_scheme": "hmac-sha256",
        "files": [{"root": 0, "path": "empty.txt", "doc_id": None, "bytes": 3, "sha256": keyed(b"  \n")},
                  {"root": 0, "path": "sub/vault.md", "doc_id": "sub/vault.md", "bytes": len(vault),
                   "sha256": keyed(vault)},
                  {"root": 1, "path": "notes.txt", "doc_id": "notes.txt", "bytes": 20,
                   "sha256": keyed(b"Ask the vault team.\n")}]}
    assert rec["query"] == {"text": None, "digest": keyed(query)}
    data = log.path.read_bytes()
    # the planted secret, and the plain SHA-256 of the file, the query and the secret: 0 times
    for needle in (secret, hashlib.sha256(vault).hexdigest(), hashlib.sha256(query.encode()).hexdigest(),
                   hashlib.sha256(secret.encode()).hexdigest()):
        assert data.count(needle.encode()) == 0, needle
    assert check_log(log).ok


def test_with_content_stored_the_file_digests_are_plain(tmp_path: Path) -> None:
    docs, single, vault = make_corpus(tmp_path, "public")
    rec = pack(load_policy(write_policy(tmp_path, "{store_content: true}")), "vault", [docs],
               audit_log=new_log(tmp_path)).decided.record
    assert rec["corpus"]["digest_scheme"] == "sha256"
    assert rec["corpus"]["files"][1]["sha256"] == hashlib.sha256(vault).hexdigest()
    assert rec["query"] == {"text": "vault", "digest": None}


def test_store_query_keeps_the_question_but_not_the_documents(tmp_path: Path) -> None:
    secret = "zq" + secrets.token_hex(8)
    docs, _single, _vault = make_corpus(tmp_path, secret)
    log = new_log(tmp_path)
    policy = load_policy(write_policy(tmp_path, "{store_query: true}"))
    assert policy.audit.keeps_query and not policy.audit.store_content
    rec = pack(policy, "the vault code", [docs], audit_log=log).decided.record
    assert rec["query"] == {"text": "the vault code", "digest": None}
    assert rec["corpus"]["digest_scheme"] == "hmac-sha256"
    assert log.path.read_bytes().count(secret.encode()) == 0


def test_store_query_false_keeps_the_documents_but_not_the_question(tmp_path: Path) -> None:
    secret = "zq" + secrets.token_hex(8)
    docs, _single, _vault = make_corpus(tmp_path, "public")
    log = new_log(tmp_path)
    policy = load_policy(write_policy(tmp_path, "{store_content: true, store_query: false}"))
    query = f"vault code for {secret}"
    rec = pack(policy, query, [docs], audit_log=log).decided.record
    assert rec["query"] == {"text": None, "digest": keyed(query)}
    assert any("content" in r for r in rec["input"]["items"])
    assert log.path.read_bytes().count(secret.encode()) == 0
    assert check_log(log).ok


def test_unset_optional_audit_fields_leave_the_policy_digest_unchanged(tmp_path: Path) -> None:
    plain = load_policy(write_policy(tmp_path / "a"))
    assert "store_query" not in plain.effective["spec"]["audit"]
    assert "signing_key" not in plain.effective["spec"]["audit"]
    assert plain.digest == load_policy(write_policy(tmp_path / "b", "{store_query: null}")).digest
    assert plain.digest != load_policy(write_policy(tmp_path / "c", "{store_query: false}")).digest


# --------------------------------------------------------------------------- query and show


@pytest.fixture()
def three(tmp_path: Path) -> Path:
    log = new_log(tmp_path)
    policy = load_policy(write_policy(tmp_path))
    for rid, who in (("REQ-1", "alice"), ("REQ-2", "svc:search"), (None, None)):
        decide(cands(), policy, audit_log=log, request=Request.of(rid, who, {"n": rid or "-"}))
    return log.path


def test_query_filters_by_request_id_and_requested_by(three: Path) -> None:
    def found(**kw: Any) -> list[Any]:
        return [m.record["request_id"] for m in q.search(q.Query(**kw), [AuditLog(three)]).matches]

    assert found(request_ids=("REQ-1",)) == ["REQ-1"]
    assert found(request_ids=("REQ-*",)) == ["REQ-1", "REQ-2"]
    assert found(requested_by=("svc:*",)) == ["REQ-2"]
    assert found(requested_by=("alice",), request_ids=("REQ-2",)) == []
    assert found(request_ids=("nope",)) == []


def test_cli_query_and_show_print_who_asked(three: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["audit", "query", str(three), "--requested-by", "alice", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert row["request_id"] == "REQ-1" and row["requested_by"] == "alice"
    assert cli.main(["audit", "query", str(three), "--request-id", "REQ-2", "--request-id", "REQ-1"]) == 0
    assert "2 decisions of 3 matched in 1 log" in capsys.readouterr().out
    assert cli.main(["audit", "show", str(three)]) == 0
    out = capsys.readouterr().out
    assert "request  REQ-1; requested by alice; labels n=REQ-1" in out
    assert "request  REQ-2; requested by svc:search; labels n=REQ-2" in out
    assert "(generated); requested by (not given); labels n=-" in out


def test_show_prints_the_query_and_the_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs, _single, _vault = make_corpus(tmp_path, "public")
    log = new_log(tmp_path)
    pack(load_policy(write_policy(tmp_path)), "vault", [docs], audit_log=log)
    assert cli.main(["audit", "show", str(log.path)]) == 0
    out = capsys.readouterr().out
    assert "query    not stored (hmac-sha256:" in out
    assert f"corpus   2 file(s), {3 + len(_vault):,} bytes, under {docs}" in out
    assert f"  file {docs}/sub/vault.md ({len(_vault):,} bytes; doc sub/vault.md; hmac-sha256:" in out


def test_a_keyed_query_without_a_secret_says_why_one_is_needed(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTXBUDGET_AUDIT_SECRET")
    docs, _single, _vault = make_corpus(tmp_path, "public")
    policy = load_policy(write_policy(tmp_path, "{store_content: true, store_query: false}"))
    log = new_log(tmp_path)
    with pytest.raises(AuditError) as exc:
        pack(policy, "vault", [docs], audit_log=log)
    assert exc.value.code == "audit.secret_missing"
    assert exc.value.message.startswith(f"audit.store_query is false, so the record written to {log.path} "
                                        "keys the query's digest with a secret, and none is configured: "
                                        "create one outside the log's folder")
    assert not log.path.exists()
    # the same policy without a query (allocate) needs no secret
    assert decide(cands(), policy, audit_log=log).envelope is not None


def test_hand_edited_request_fields_are_findings_and_show_does_not_crash(
        three: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from auditcases import rewrite

    rewrite(three, lambda rec: rec.pop("requested_by"), index=0)  # request_id without its fellows
    rewrite(three, lambda rec: rec.update(labels=["not", "a", "map"]), index=1)
    found = check_log(AuditLog(three)).by_seq
    assert [f.code for f in found[1]] == ["record.schema"] and "'requested_by' is a dependency" in found[1][0].message
    assert [f.code for f in found[2]] == ["record.schema"]
    assert cli.main(["audit", "show", str(three)]) == 6
    out = capsys.readouterr().out
    assert out.count("[FAILED CHECKS: record.schema]") == 2


def test_the_html_report_shows_who_asked_with_masked_labels_marked(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "{mask: ['customer_*']}"))
    log = new_log(tmp_path)
    rec = decide(cands(), policy, audit_log=log,
                 request=Request.of(None, "alice", {"customer_id": "C-991", "team": "ops"})).record
    out = tmp_path / "report.html"
    assert cli.main(["audit", "report", str(log.path), "--out", str(out)]) == 0
    page = out.read_text()
    assert f"request <b>{rec['request_id']}</b> (generated)" in page
    assert "requested by <b>alice</b>" in page
    masked = rec["labels"]["customer_id"]["masked"]
    assert f"labels <code>customer_id={masked} (masked)</code>, <code>team=ops</code>" in page
    assert "C-991" not in page and "{&#x27;masked&#x27;" not in page
