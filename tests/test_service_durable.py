"""engine.service, durable and observable: group commit under concurrent requests, a
kill -9 under load that loses no acknowledged decision, --workers, the metrics of gaps
and audit appends, no server paths in /v1/policies and /health, open probes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine import cli
from engine.audit.log import AuditLog
from engine.service import run as service_run
from engine.service.app import Service, Settings, create_app
from engine.service.auth import Tokens
from engine.service.models import DecideRequest
from benchload import load_bench
from test_service import ROWS, policy_text

load_service = load_bench("load_service")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "help.yaml").write_text(policy_text("help"))
    (d / "tight.yaml").write_text(policy_text("tight", max_tokens=3, extra="  pinned:\n    - id: a\n"))
    return d


def test_kill_9_under_load_loses_no_acknowledged_decision(tmp_path: Path) -> None:
    """The server as a process (forked from one that imported it once, so restarts are
    quick), 4 clients posting, kill -9 three times mid-load, then
    every decision id a client got a 200 for is in the log, and the log verifies."""
    got = load_service.kill_under_load(3, concurrency=4, acks_before_kill=3, candidates_n=10,
                                       tmp=tmp_path, fork=True)
    assert got["acknowledged"] >= 9
    assert got["acknowledged_missing"] == 0
    assert got["logged_decisions"] >= got["acknowledged"]  # fsynced but unanswered: logged, not acked
    assert got["verify_ok"] is True


def test_concurrent_decisions_share_fsyncs_and_each_gets_its_own_record(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os as real_os
    from engine.audit import log as logmod
    fsyncs = []
    real = real_os.fsync
    monkeypatch.setattr(logmod.os, "fsync", lambda fd: (fsyncs.append(fd), real(fd))[1])
    service = Service(Settings(folder, tmp_path / "audit.jsonl"))
    body = DecideRequest.model_validate({"candidates": ROWS})
    answers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: answers.append(service.decide("help", body, None)))
               for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    log = AuditLog(tmp_path / "audit.jsonl")
    ids = [e["record"]["decision_id"] for e in log if e["kind"] == "decision"]
    assert sorted(ids) == sorted(a["decision_id"] for a in answers) and len(set(ids)) == 12
    assert log.verify().ok
    assert len(fsyncs) <= 12 + 2  # never more than one per record (+ the folder's, once)


def test_workers_hand_their_settings_to_every_worker_process(folder: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(service_run.uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.delenv(service_run.ENV_CONFIG, raising=False)
    code = cli.main(["serve", "--policies", str(folder), "--audit-log", str(tmp_path / "a.jsonl"),
                     "--workers", "2", "--port", "9"])
    assert code == 0
    assert (seen["app"], seen["factory"], seen["workers"]) == ("engine.service.run:worker_app", True, 2)
    config = json.loads(service_run.os.environ[service_run.ENV_CONFIG])
    assert config["audit_log"] == str(tmp_path / "a.jsonl")  # one log for every worker
    client = TestClient(service_run.worker_app())  # what each worker process builds
    assert client.post("/v1/decide/help", json={"candidates": ROWS}).status_code == 200
    assert [e["kind"] for e in AuditLog(tmp_path / "a.jsonl")] == ["decision"]


def test_workers_must_be_at_least_one(folder: Path, tmp_path: Path, capsys: Any) -> None:
    code = cli.main(["serve", "--policies", str(folder), "--audit-log", str(tmp_path / "a.jsonl"),
                     "--workers", "0"])
    assert code == 2
    assert "service.bad_workers" in capsys.readouterr().err


def test_the_reload_interval_is_not_negative(folder: Path, tmp_path: Path, capsys: Any) -> None:
    code = cli.main(["serve", "--policies", str(folder), "--audit-log", str(tmp_path / "a.jsonl"),
                     "--reload-interval", "-1"])
    assert code == 2
    assert "service.bad_reload_interval" in capsys.readouterr().err


def test_metrics_report_gaps_audit_append_latency_fallbacks_and_infeasible(folder: Path,
                                                                          tmp_path: Path) -> None:
    client = TestClient(create_app(Service(Settings(folder, tmp_path / "audit.jsonl"))))
    assert client.post("/v1/decide/help", json={"candidates": ROWS}).status_code == 200
    assert client.post("/v1/decide/tight", json={"candidates": ROWS}).status_code == 409
    text = client.get("/metrics").text
    assert 'ctxbudget_solver_gap_count{product="help"} 1.0' in text
    assert 'ctxbudget_audit_append_seconds_count{product="help"} 1.0' in text
    assert 'ctxbudget_audit_append_seconds_count{product="tight"} 1.0' in text  # infeasible is recorded
    assert 'ctxbudget_infeasible_total{product="tight"} 1.0' in text
    assert "# TYPE ctxbudget_fallbacks_total counter" in text


def test_policies_and_health_show_product_relative_names_never_server_paths(folder: Path,
                                                                           tmp_path: Path) -> None:
    client = TestClient(create_app(Service(Settings(folder, tmp_path / "logs" / "audit.jsonl"))))
    listed = client.get("/v1/policies").json()["policies"]
    assert [p["file"] for p in listed] == ["help.yaml", "tight.yaml"]
    assert client.get("/v1/policies/help").json()["file"] == "help.yaml"
    (folder / "help.yaml").write_text(policy_text("help", revision="r2") + "  nonsense: 1\n")
    health = client.get("/health").json()
    assert health["status"] == "failing"
    assert health["problems"][0].startswith("help: policy.unknown_field: help.yaml:")
    problem = client.get("/v1/policies/help").json()["problem"]
    assert problem.startswith("policy.unknown_field: help.yaml:")
    assert str(tmp_path) not in json.dumps(health) + problem + json.dumps(listed)


def test_health_and_metrics_stay_open_when_tokens_guard_the_rest(folder: Path, tmp_path: Path) -> None:
    tokens = Tokens.parse(json.dumps({"help": ["help-token-0123456789"]}), "tokens.json")
    client = TestClient(create_app(Service(Settings(folder, tmp_path / "a.jsonl", tokens=tokens))))
    assert client.get("/health").status_code == 200  # load balancers probe without a token
    assert client.get("/metrics").status_code == 200  # Prometheus scrapes without one
    assert client.get("/v1/policies").status_code == 401
    assert client.post("/v1/decide/help", json={"candidates": ROWS}).status_code == 401


def test_an_empty_parent_id_is_refused_by_the_schema_with_what_to_write(tmp_path: Path,
                                                                        folder: Path, capsys: Any) -> None:
    cands = tmp_path / "c.json"
    cands.write_text(json.dumps([{**ROWS[0], "parent_id": ""}]))
    code = cli.main(["allocate", "--policy", str(folder / "help.yaml"), "--candidates", str(cands)])
    err = capsys.readouterr().err
    assert code == 2
    assert "candidate.schema" in err and "$[0].parent_id: must not be empty; give the parent chunk's " \
        "source_id, or null (or leave it out) for a top-level chunk" in err
    client = TestClient(create_app(Service(Settings(folder, tmp_path / "a.jsonl"))))
    r = client.post("/v1/decide/help", json={"candidates": [{**ROWS[0], "parent_id": ""}]})
    assert r.status_code == 422 and r.json()["path"] == "$.candidates[0].parent_id"


def test_the_typescript_client_decides_and_is_refused_on_another_product(folder: Path,
                                                                         tmp_path: Path) -> None:
    """examples/clients/ts (its tsc output) with the installed node, against the app on a
    loopback port (uvicorn in a thread of this process: no second start-up)."""
    import shutil
    import socket
    import subprocess
    import time

    import uvicorn

    node = shutil.which("node")
    assert node is not None, "node is needed for the TypeScript client test"
    token = "help-token-0123456789"
    tokens = Tokens.parse(json.dumps({"help": [token], "tight": ["tight-token-0123456789"]}), "t.json")
    log = tmp_path / "audit.jsonl"
    app = create_app(Service(Settings(folder, log, tokens=tokens)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        example = Path(__file__).resolve().parent.parent / "examples" / "clients" / "ts" / "example.mjs"
        done = subprocess.run([node, str(example), f"http://127.0.0.1:{port}", "help", "tight"],
                              capture_output=True, text=True, timeout=60,
                              env={"PATH": os.environ.get("PATH", ""), "CTXBUDGET_TOKEN": token})
    finally:
        server.should_exit = True
        thread.join(30)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["other"] == {"status": 403, "code": "auth.forbidden"}
    assert out["policy"]["name"] == "help" and out["included"]
    stored = [e["record"] for e in AuditLog(log) if e["kind"] == "decision"]
    assert [r["decision_id"] for r in stored] == [out["decision_id"]]


def test_the_histogram_quantile_of_a_level_interpolates_inside_its_bucket() -> None:
    before = {0.01: 2.0, 0.025: 2.0, float("inf"): 2.0}
    after = {0.01: 2.0, 0.025: 12.0, float("inf"): 12.0}  # 10 observations, all in (10, 25] ms
    assert load_service.quantile_ms(before, after, 0.5) == pytest.approx(17.5)
    assert load_service.quantile_ms(before, after, 0.99) == pytest.approx(24.85)
    assert load_service.quantile_ms(after, after, 0.5) is None  # nothing observed in between
    assert load_service.quantile_ms({}, {0.01: 0.0, float("inf"): 4.0}, 0.5) == pytest.approx(10.0)


def test_the_raw_load_client_gets_answers_that_are_in_the_log(folder: Path, tmp_path: Path) -> None:
    """bench/load_service.py's minimal HTTP client against a real server (uvicorn on a
    loopback port, in a thread of this process): every answer it counts is a 200 whose
    decision is in the log, and /metrics saw the requests."""
    import asyncio
    import time

    import uvicorn

    log = tmp_path / "audit.jsonl"
    port = load_service.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Service(Settings(folder, log))), host="127.0.0.1",
                                           port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        base = f"http://127.0.0.1:{port}"
        hist = load_service.scrape(base)
        row = asyncio.run(load_service.level(f"{base}/v1/decide/help", {"candidates": ROWS}, 6, 2, "raw"))
        after = load_service.scrape(base)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert row["requests"] == 6 and len(row["ids"]) == 6 and row["client_cpu_ms_per_decision"] > 0
    logged = {e["record"]["decision_id"] for e in AuditLog(log) if e.get("kind") == "decision"}
    assert set(row["ids"]) <= logged
    assert "ctxbudget_decision_seconds" not in hist  # no decision yet: no series
    assert load_service.quantile_ms({}, after["ctxbudget_decision_seconds"], 0.5) is not None
