"""schemathesis property tests of the service's OpenAPI document, in-process (ASGI):
every generated request, valid or not, gets an answer its operation documents (status,
content type, body schema) and never a server error."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from engine.service.app import Service, Settings, create_app
from engine.service.auth import Tokens

TOKEN = "help-token-0123456789"
POLICY = ("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: help, revision: 'r1'}\n"
          "spec:\n  budget: {max_tokens: 200}\n  audit: {store_content: true}\n")


_TMP = tempfile.TemporaryDirectory(prefix="ctxbudget-openapi-")


def _app() -> Any:
    folder = Path(_TMP.name) / "policies"
    folder.mkdir()
    (folder / "help.yaml").write_text(POLICY)
    tokens = Tokens.parse(json.dumps({"help": [TOKEN]}), "tokens")
    return create_app(Service(Settings(folder, Path(_TMP.name) / "audit.jsonl", tokens=tokens)))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _TMP.cleanup()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
