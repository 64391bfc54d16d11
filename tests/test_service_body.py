"""The decide route reads its body itself (engine.service.app.parse_request): every body
gets the answer a declared ``DecideRequest`` body parameter gave (FastAPI's own parsing
and validation), which a reference application here still has."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.service.app import parse_request
from engine.service.models import DecideRequest

ROW = {"source_id": "a", "content": "Refunds are accepted within 30 days.", "relevance_score": 0.9}


def _reference() -> TestClient:
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"errors": _shape(exc)}, status_code=422)

    @app.post("/")
    def route(body: DecideRequest) -> Any:
        return {"ok": body.model_dump_json()}

    return TestClient(app)


REFERENCE = _reference()


def _shape(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"], "ctx": e.get("ctx")}
            for e in exc.errors()]


def _ours(raw: bytes, content_type: str | None) -> dict[str, Any]:
    try:
        return {"ok": parse_request(raw, content_type).model_dump_json()}
    except RequestValidationError as exc:
        return {"errors": json.loads(json.dumps(_shape(exc), default=str))}


def _theirs(raw: bytes, content_type: str | None) -> dict[str, Any]:
    headers = {} if content_type is None else {"content-type": content_type}
    out: dict[str, Any] = REFERENCE.post("/", content=raw, headers=headers).json()
    return out


BODIES = [
    json.dumps({"candidates": [ROW]}).encode(),
    json.dumps({"candidates": [{**ROW, "relevance_score": 1}]}).encode(),  # an int is a number
    json.dumps({"candidates": [{**ROW, "relevance_score": "0.9"}]}).encode(),  # a string is not
    json.dumps({"candidates": [ROW], "extra": 1}).encode(),
    json.dumps({"candidates": [{"source_id": "a"}]}).encode(),
    json.dumps({"candidates": [ROW], "request_id": "bad id", "labels": {"1x": "y"}}).encode(),
    json.dumps({"candidates": [{**ROW, "metadata": None, "token_count": None}]}).encode(),
    b'{"candidates": [{"source_id": "a", "content": "x", "relevance_score": NaN}]}',  # json.loads takes NaN
    b'{"candidates": [', b"[]", b"null", b'"text"', b"\xff\xfe", b"",
    '{"candidates": [{"source_id": "\u00e9\\ud800", "content": "x", "relevance_score": 0.5}]}'.encode(),
]


@pytest.mark.parametrize("raw", BODIES)
@pytest.mark.parametrize("content_type", ["application/json", "application/vnd.x+json; charset=utf-8",
                                          "text/plain", None])
def test_each_body_gets_fastapis_answer(raw: bytes, content_type: str | None) -> None:
    assert _ours(raw, content_type) == _theirs(raw, content_type)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["candidates", "source_id", "content", "relevance_score", "labels",
                                         "token_count", "metadata", "query", "x"]), inner, max_size=4),
                    max_leaves=12))
def test_any_json_value_gets_fastapis_answer(value: Any) -> None:
    raw = json.dumps({"candidates": [value]} if not isinstance(value, dict) else value).encode()
    assert _ours(raw, "application/json") == _theirs(raw, "application/json")


def _answers(client: TestClient) -> list[tuple[int, Any]]:
    """Status and body (decision id left out) of one request of each kind."""
    out = []
    for product, headers, raw in [
            ("help", {"Authorization": "Bearer help-token-0123456789"}, json.dumps({"candidates": [ROW]}).encode()),
            ("help", {"Authorization": "Bearer help-token-0123456789"}, b'{"candidates": ['),
            ("help", {"Authorization": "Bearer help-token-0123456789"}, json.dumps({"candidates": [{}]}).encode()),
            ("help", {"Authorization": "bearer   help-token-0123456789  "}, json.dumps({"candidates": [ROW]}).encode()),
            ("help", {}, json.dumps({"candidates": [ROW]}).encode()),
            ("help", {"Authorization": "Basic help-token-0123456789"}, json.dumps({"candidates": [ROW]}).encode()),
            ("legal", {"Authorization": "Bearer help-token-0123456789"}, json.dumps({"candidates": [ROW]}).encode()),
            ("nobody", {"Authorization": "Bearer help-token-0123456789"}, json.dumps({"candidates": [ROW]}).encode()),
            ("help", {"Authorization": "Bearer help-token-0123456789", "content-type": "text/plain"},
             json.dumps({"candidates": [ROW]}).encode())]:
        r = client.post(f"/v1/decide/{product}", content=raw,
                        headers={"content-type": "application/json", **headers})
        body = r.json()
        if isinstance(body, dict):
            body.pop("decision_id", None)
        out.append((r.status_code, body, r.headers.get("www-authenticate"), r.headers["content-type"]))
    return out


def test_the_fast_decide_path_answers_as_the_route_does(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.service import app as service_app
    from engine.service.auth import Tokens

    folder = tmp_path / "policies"
    folder.mkdir()
    for name in ("help", "legal"):
        (folder / f"{name}.yaml").write_text(
            f"apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {{name: {name}, revision: 'r1'}}\n"
            "spec:\n  budget: {max_tokens: 400}\n  audit: {store_content: true}\n")
    tokens = Tokens.parse(json.dumps({"help": ["help-token-0123456789"], "legal": ["legal-token-0123456789"]}), "t")
    app = service_app.create_app(service_app.Service(service_app.Settings(
        folder, tmp_path / "audit.jsonl", tokens=tokens)))
    fast = _answers(TestClient(app))
    assert [a[0] for a in fast] == [200, 400, 422, 200, 401, 401, 403, 403, 422]
    monkeypatch.setattr(service_app, "decide_product", lambda scope: None)  # every request to the route
    assert _answers(TestClient(app)) == fast
