"""engine.service: `ctxbudget serve` in-process (FastAPI's TestClient, no network), and
once as a real process on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from engine import cli
from engine.audit.log import AuditLog
from engine.policy import load_policy
from engine.service.app import Service, Settings, create_app
from engine.service.auth import Tokens
from engine.service.models import Decision
from engine.service.openapi import text as openapi_text

ROOT = Path(__file__).resolve().parent.parent


def policy_text(name: str, revision: str = "r1", max_tokens: int = 400, extra: str = "") -> str:
    return (f"apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {{name: {name}, revision: '{revision}'}}\n"
            f"spec:\n  min_relevance: 0.05\n  budget: {{max_tokens: {max_tokens}}}\n  audit: {{store_content: true}}\n{extra}")


ROWS = [{"source_id": "a", "content": "Refunds are accepted within 30 days.", "relevance_score": 0.9},
        {"source_id": "b", "content": "Shipping takes a week.", "relevance_score": 0.4, "token_count": 6},
        {"source_id": "c", "content": "Secret-ish text that must never echo.", "relevance_score": 0.01}]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "help.yaml").write_text(policy_text("help"))
    (d / "legal.yaml").write_text(policy_text("legal", max_tokens=12))
    return d


def make(folder: Path, tmp_path: Path, **kw: Any) -> tuple[TestClient, Service]:
    service = Service(Settings(folder, tmp_path / "logs" / "audit.jsonl", **kw))
    return TestClient(create_app(service)), service


def records(tmp_path: Path) -> list[dict[str, Any]]:
    if not (tmp_path / "logs" / "audit.jsonl").exists():
        return []
    return [e["record"] for e in AuditLog(tmp_path / "logs" / "audit.jsonl") if e.get("kind") == "decision"]


# --------------------------------------------------------------------------- decide

def test_decide_answers_after_the_record_is_in_the_log(folder: Path, tmp_path: Path) -> None:
    client, _ = make(folder, tmp_path)
    r = client.post("/v1/decide/help", json={"candidates": ROWS, "request_id": "t-1",
                                              "requested_by": "svc:test", "labels": {"team": "qa"}})
    assert r.status_code == 200, r.text
    body = r.json()
    policy = load_policy(folder / "help.yaml")
    assert body["policy"] == {"name": "help", "revision": "r1", "digest": policy.digest}
    assert [i["source_id"] for i in body["included"]] == ["a", "b"]
    assert [(i["source_id"], i["reason"]) for i in body["excluded"]] == [("c", "below_min_relevance")]
    assert body["solver"]["status"] in ("optimal", "trivial")
    assert "Refunds are accepted" in body["context"] and body["context_tokens"] <= body["limit_tokens"]
    (rec,) = records(tmp_path)
    assert rec["decision_id"] == body["decision_id"]
    assert (rec["request_id"], rec["requested_by"], rec["labels"]) == ("t-1", "svc:test", {"team": "qa"})
    # the answer, built as a dict, is exactly the published Decision shape
    assert Decision.model_validate(body).model_dump() == body
    assert rec["policy"]["digest"] == policy.digest


def test_unknown_product_is_404_as_an_engine_error(folder: Path, tmp_path: Path) -> None:
    client, _ = make(folder, tmp_path)
    r = client.post("/v1/decide/nope", json={"candidates": ROWS})
    assert r.status_code == 404
    assert r.json()["code"] == "service.unknown_product"
    assert r.json()["message"] == "no policy is served for product 'nope'; GET /v1/policies lists the products"
    assert records(tmp_path) == []


def test_infeasible_is_409_with_the_core_and_is_recorded(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    (d / "tight.yaml").write_text(policy_text("tight", max_tokens=3, extra="  pinned:\n    - id: a\n"))
    client, _ = make(d, tmp_path)
    r = client.post("/v1/decide/tight", json={"candidates": ROWS})
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["code"] == "allocation.infeasible"
    assert body["details"]["core"] and body["details"]["decision_id"]
    (rec,) = records(tmp_path)
    assert rec["decision_id"] == body["details"]["decision_id"]


@pytest.mark.parametrize(("payload", "status", "code", "path"), [
    (b'{"candidates": [', 400, "request.json_syntax", "$"),
    (json.dumps({"candidates": [{"source_id": "a", "content": "Secret-ish text that must never echo."}]}).encode(),
     422, "request.schema", "$.candidates[0].relevance_score"),
    (json.dumps({"candidates": ROWS, "extra": 1}).encode(), 422, "request.schema", "$.extra"),
    (json.dumps({"candidates": [ROWS[0], ROWS[0]]}).encode(), 422, "candidate.duplicate_id", "$.candidates[1].source_id"),
    (json.dumps({"candidates": ROWS, "request_id": "bad id"}).encode(), 422, "request.schema", "$.request_id"),
    (json.dumps({"candidates": [{**ROWS[0], "relevance_score": "0.9"}]}).encode(), 422, "request.schema",
     "$.candidates[0].relevance_score"),  # no coercion of a string to a number
    (json.dumps({"candidates": [{**ROWS[0], "metadata": {"n": 2**53}}]}).encode(), 422, "candidate.bad_metadata",
     "$.candidates[0].metadata.n"),
    (b'{"candidates": [{"source_id": "a", "content": "x", "relevance_score": NaN}]}', 422,
     "candidate.bad_relevance", None),
])
def test_bad_input_is_an_error_body_without_content(folder: Path, tmp_path: Path, payload: bytes,
                                                     status: int, code: str, path: str | None) -> None:
    client, _ = make(folder, tmp_path)
    r = client.post("/v1/decide/help", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code, body
    assert set(body) >= {"code", "path", "message", "location", "issues"}
    if path is not None:
        assert body["path"] == path
    assert "must never echo" not in r.text
    assert records(tmp_path) == []


def test_limits_are_413(folder: Path, tmp_path: Path) -> None:
    client, _ = make(folder, tmp_path, max_body_bytes=600, max_candidates=2)
    r = client.post("/v1/decide/help", json={"candidates": ROWS})
    assert r.status_code == 413 and r.json()["code"] == "service.too_many_candidates"
    big = [{"source_id": "x", "content": "y" * 700, "relevance_score": 0.5}]
    r = client.post("/v1/decide/help", json={"candidates": big})
    assert r.status_code == 413 and r.json()["code"] == "service.body_too_large"
    assert "600 bytes" in r.json()["message"]
    chunked = client.post("/v1/decide/help", content=iter([b'{"candidates": [', b" " * 700, b"]}"]))
    assert chunked.status_code == 413  # no Content-Length: counted while read
    assert records(tmp_path) == []


def test_policies_endpoints(folder: Path, tmp_path: Path) -> None:
    client, _ = make(folder, tmp_path)
    listed = client.get("/v1/policies").json()["policies"]
    assert [(p["product"], p["revision"], p["problem"]) for p in listed] == [("help", "r1", None),
                                                                             ("legal", "r1", None)]
    one = client.get("/v1/policies/legal").json()
    assert one["digest"] == load_policy(folder / "legal.yaml").digest
    assert one["effective"]["spec"]["budget"]["max_tokens"] == 12
    assert client.get("/v1/policies/zzz").status_code == 404


def test_a_base_file_is_not_a_product(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    (d / "base.yaml").write_text(policy_text("base", extra="  ordering: relevance\n"))
    (d / "shop.yaml").write_text("extends: base.yaml\n" + policy_text("shop", max_tokens=50))
    client, _ = make(d, tmp_path)
    assert [p["product"] for p in client.get("/v1/policies").json()["policies"]] == ["shop"]


# --------------------------------------------------------------------------- start-up

def test_start_refuses_an_invalid_policy_and_a_policy_without_log(tmp_path: Path, capsys: Any) -> None:
    d = tmp_path / "p"
    d.mkdir()
    (d / "help.yaml").write_text(policy_text("help") + "  bugdet: 3\n")
    assert cli.main(["serve", "--policies", str(d), "--audit-log", str(tmp_path / "a.jsonl")]) == 2
    assert "policy.unknown_field" in capsys.readouterr().err
    (d / "help.yaml").write_text(policy_text("help"))
    assert cli.main(["serve", "--policies", str(d)]) == 5
    err = capsys.readouterr().err
    assert "service.no_audit_log" in err and "pass --audit-log FILE" in err


def test_serve_without_the_extra_names_the_install_command(folder: Path, monkeypatch: Any,
                                                            capsys: Any) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi raises ImportError
    assert cli.main(["serve", "--policies", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "service.extra_missing" in err and "pip install 'ctxbudget[serve]'" in err


# --------------------------------------------------------------------------- auth

TOKENS = {"help": ["help-token-0123456789"], "legal": ["legal-token-0123456789", "legal-token-second-one"]}


def test_tokens_per_product_zero_cross_product_accesses(folder: Path, tmp_path: Path) -> None:
    client, _ = make(folder, tmp_path, tokens=Tokens.parse(json.dumps(TOKENS), "tokens.json"))
    cross = 0
    for owner, tokens in TOKENS.items():
        for token in tokens:
            for product in TOKENS:
                auth = {"Authorization": f"Bearer {token}"}
                r = client.post(f"/v1/decide/{product}", json={"candidates": ROWS[:1]}, headers=auth)
                p = client.get(f"/v1/policies/{product}", headers=auth)
                if product == owner:
                    assert (r.status_code, p.status_code) == (200, 200), r.text
                else:
                    assert (r.status_code, p.status_code) == (403, 403)
                    assert r.json()["code"] == "auth.forbidden"
                    cross += (r.status_code < 400) + (p.status_code < 400)
            listed = client.get("/v1/policies", headers={"Authorization": f"Bearer {token}"}).json()
            assert [x["product"] for x in listed["policies"]] == [owner]
    assert cross == 0
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic x"},
                    {"Authorization": "Bearer help-token-012345678"}):
        r = client.post("/v1/decide/help", json={"candidates": ROWS}, headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "auth.unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/policies", headers=headers).status_code == 401
    # a token for an unknown product is 403 too: it does not tell which products exist
    r = client.post("/v1/decide/nope", json={"candidates": ROWS},
                    headers={"Authorization": "Bearer help-token-0123456789"})
    assert r.status_code == 403
    assert len(records(tmp_path)) == 3  # only the three owned requests were decided


def test_tokens_file_and_environment(tmp_path: Path) -> None:
    f = tmp_path / "tokens.json"
    f.write_text(json.dumps(TOKENS))
    assert Tokens.configured(str(f), {}) == Tokens.parse(json.dumps(TOKENS), "x")
    env = Tokens.configured(None, {"CTXBUDGET_SERVE_TOKENS": json.dumps({"help": ["h" * 20]})})
    assert env is not None and env.products == {"help"}
    assert Tokens.configured(None, {}) is None
    with pytest.raises(ValueError, match="a token of product 'help' is not a string of at least 16"):
        Tokens.parse('{"help": ["short"]}', "tokens.json")


def test_tokens_naming_an_unknown_product_stop_the_start(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="the tokens name product\\(s\\) zzz"):
        make(folder, tmp_path, tokens=Tokens.parse('{"zzz": ["z' + "z" * 20 + '"]}', "t"))


# --------------------------------------------------------------------------- hot reload

def bump(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a visible mtime change


def test_a_changed_policy_is_swapped_and_an_invalid_one_never_replaces_it(folder: Path, tmp_path: Path) -> None:
    client, _ = make(folder, tmp_path)
    assert client.get("/health").json() == {"status": "ok", "products": 2, "problems": []}
    bump(folder / "legal.yaml", policy_text("legal", revision="r2", max_tokens=400))
    r = client.post("/v1/decide/legal", json={"candidates": ROWS})
    assert r.json()["policy"]["revision"] == "r2"
    bump(folder / "legal.yaml", policy_text("legal", revision="r3") + "  bugdet: 3\n")
    r = client.post("/v1/decide/legal", json={"candidates": ROWS})
    assert r.status_code == 200 and r.json()["policy"]["revision"] == "r2"
    h = client.get("/health")
    assert h.status_code == 500 and h.json()["status"] == "failing"
    assert h.json()["problems"][0].startswith("legal: policy.unknown_field: ")
    info = client.get("/v1/policies/legal").json()
    assert info["revision"] == "r2" and info["problem"].startswith("policy.unknown_field")
    metrics = client.get("/metrics").text
    assert 'ctxbudget_policy_valid{product="legal"} 0.0' in metrics
    assert 'ctxbudget_policy_valid{product="help"} 1.0' in metrics
    # the same revision with another text is refused too: a record must name one text per revision
    bump(folder / "legal.yaml", policy_text("legal", revision="r2", max_tokens=99))
    assert client.post("/v1/decide/legal", json={"candidates": ROWS}).json()["policy"]["revision"] == "r2"
    assert "policy.revision_conflict" in client.get("/health").json()["problems"][0]
    bump(folder / "legal.yaml", policy_text("legal", revision="r4", max_tokens=99))
    assert client.post("/v1/decide/legal", json={"candidates": ROWS}).json()["policy"]["revision"] == "r4"
    assert client.get("/health").status_code == 200
    assert [r["policy"]["revision"] for r in records(tmp_path)] == ["r2", "r2", "r2", "r4"]


def test_the_folder_is_looked_at_once_per_reload_interval(folder: Path, tmp_path: Path) -> None:
    client, service = make(folder, tmp_path, reload_interval_s=60.0)
    clock = [1000.0]
    service.folder._clock = lambda: clock[0]  # a clock the test moves
    service.folder._checked = clock[0]
    bump(folder / "legal.yaml", policy_text("legal", revision="r2", max_tokens=400))
    r = client.post("/v1/decide/legal", json={"candidates": ROWS})
    assert r.json()["policy"]["revision"] == "r1"  # within the interval: the running revision decides
    clock[0] += 61.0
    r = client.post("/v1/decide/legal", json={"candidates": ROWS})
    assert r.json()["policy"]["revision"] == "r2"
    bump(folder / "legal.yaml", policy_text("legal", revision="r3", max_tokens=400))
    assert client.get("/health").status_code == 200  # /health always looks
    assert client.post("/v1/decide/legal", json={"candidates": ROWS}).json()["policy"]["revision"] == "r3"
    # every record names the revision that decided it
    assert [r["policy"]["revision"] for r in records(tmp_path)] == ["r1", "r2", "r3"]


def test_health_says_when_the_log_is_not_usable(folder: Path, tmp_path: Path) -> None:
    client, _ = make(folder, tmp_path)
    log = tmp_path / "logs" / "audit.jsonl"
    log.mkdir()  # a folder where the log should be: nothing can be appended
    h = client.get("/health")
    assert h.status_code == 500
    assert h.json()["problems"] == ["audit log audit.jsonl is not a regular file"]  # no server paths
    r = client.post("/v1/decide/help", json={"candidates": ROWS})
    assert r.status_code == 503 and r.json()["code"].startswith("audit."), r.text
    assert str(tmp_path) not in r.text and "<audit-log-folder>" in r.text, r.text  # no server paths


# --------------------------------------------------------------------------- metrics

def test_metrics_count_decisions_by_product_and_outcome(folder: Path, tmp_path: Path) -> None:
    (folder / "tight.yaml").write_text(policy_text("tight", max_tokens=3, extra="  pinned:\n    - id: a\n"))
    client, _ = make(folder, tmp_path)
    client.post("/v1/decide/help", json={"candidates": ROWS})
    client.post("/v1/decide/help", json={"candidates": ROWS})
    client.post("/v1/decide/tight", json={"candidates": ROWS})
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    status = client.post("/v1/decide/help", json={"candidates": ROWS}).json()["solver"]["status"]
    text = client.get("/metrics").text
    assert f'ctxbudget_decisions_total{{outcome="{status}",product="help"}} 3.0' in text
    assert 'ctxbudget_decisions_total{outcome="infeasible",product="tight"} 1.0' in text
    assert 'ctxbudget_infeasible_total{product="tight"} 1.0' in text
    assert 'ctxbudget_decision_seconds_count{product="help"} 3.0' in text
    assert 'ctxbudget_stage_seconds_count{product="help",stage="solve_s"} 3.0' in text


# --------------------------------------------------------------------------- OpenAPI

def test_the_committed_openapi_document_is_the_apps() -> None:
    committed = (ROOT / "schemas" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_text(), "regenerate it: python -m engine.service.openapi"


# --------------------------------------------------------------------------- a real process

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_ctxbudget_serve_as_a_process(folder: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "logs" / "audit.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--policies", str(folder),
                             "--port", str(port), "--audit-log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
        r = httpx.post(f"http://127.0.0.1:{port}/v1/decide/help", json={"candidates": ROWS}, timeout=30)
        assert r.status_code == 200
        assert records(tmp_path)[0]["decision_id"] == r.json()["decision_id"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn stops cleanly, then re-raises SIGTERM
    assert f"serving 2 product(s) (help, legal) on http://127.0.0.1:{port}" in err.decode()
