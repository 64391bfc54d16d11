"""The compiled policy check (engine.schema._policy_fast_check) says "valid" exactly when
jsonschema does, so a valid policy is loaded without importing jsonschema and every
invalid one still gets jsonschema's issues (issue 15: policy load speed, results
identical)."""

from __future__ import annotations

import copy
import datetime
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from engine.errors import PolicyError
from engine.load import load_yaml_file
from engine.policy import load_policy
from engine.schema import POLICY_SCHEMA, _compile, _NotCompiled, _policy_fast_check, load_schema, policy_issues

ROOT = Path(__file__).resolve().parent.parent
#: Policies that between them use every part of the schema (and one with every field).
FILES = [ROOT / p for p in ("tests/fixtures/policies/full.yaml", "examples/policy.yaml", "policies/base.yaml",
                            "policies/support-assistant.yaml", "tests/fuzz_corpus/policies/pinned_and_blocked.yaml")]
#: Values put in place of each value of a policy, one at a time.
SWAPS: tuple[Any, ...] = (None, True, 0, 1, -1, 2.0, 0.5, 1.5, "", "optimal", ["a", "a"], [1], {},
                          {"id": "a", "glob": "b"}, math.inf, datetime.date(2024, 1, 1))
VALIDATOR = Draft202012Validator(load_schema(POLICY_SCHEMA))


def mappings() -> list[Any]:
    out = []
    for path in FILES:
        try:
            data = load_yaml_file(path).data
        except PolicyError:
            continue  # not YAML the loader accepts: never reaches the schema
        out.append(data)
    return out


_DROP = object()


def _replaced(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``node`` with the value at ``path`` replaced (or dropped, for ``_DROP``); only the
    containers along the path are copied."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    new = copy.copy(node)
    if rest or value is not _DROP:
        new[head] = _replaced(node[head], rest, value)
    else:
        del new[head]
    return new


def variants(data: Any) -> Iterator[Any]:
    """``data`` with one value swapped, one key removed, or one unknown key added."""
    yield data

    def walk(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
        yield path, node
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, path + (i,))

    for path, node in walk(data, ()):
        if not path:
            continue
        for swap in SWAPS:
            yield _replaced(data, path, swap)
        yield _replaced(data, path, _DROP)
        if isinstance(node, dict):
            yield _replaced(data, path, {**node, "max_token": 1})


def test_the_policy_schema_compiles() -> None:
    root = load_schema(POLICY_SCHEMA)
    _compile(root, root, {})  # raises _NotCompiled if the schema uses a keyword it does not implement
    with pytest.raises(_NotCompiled):
        _compile({"type": "string", "format": "email"}, {}, {})


def test_fast_check_agrees_with_jsonschema_on_every_policy_and_its_variants() -> None:
    fast = _policy_fast_check()
    seen = valid = 0
    for data in mappings():
        for v in variants(data):
            ok = VALIDATOR.is_valid(v)
            verdict = fast(v)
            assert not verdict or ok, v  # sound: never "valid" when jsonschema says otherwise
            if ok and not any(isinstance(x, (float, datetime.date)) for x in _leaves(v)):
                assert verdict, v  # and complete on plain values: no needless jsonschema import
            seen += 1
            valid += ok
    assert seen > 1000 and 0 < valid < seen


def _leaves(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v)
    else:
        yield node


def test_invalid_policies_get_the_same_issues_as_before() -> None:
    data = load_yaml_file(ROOT / "examples" / "policy.yaml").data
    bad = copy.deepcopy(data)
    bad["spec"]["budget"]["max_tokens"] = "8k"
    bad["spec"]["strategy"] = "fast"
    issues = policy_issues(bad)
    assert [(i.code, i.path) for i in issues] == [("policy.bad_value", "$.spec.strategy"),
                                                  ("policy.wrong_type", "$.spec.budget.max_tokens")]
    assert policy_issues(data) == ()


def test_loading_a_valid_policy_does_not_import_jsonschema() -> None:
    code = ("import sys\n"
            "from engine.policy import load_policy\n"
            f"p = load_policy({str(ROOT / 'policies' / 'code-assistant.yaml')!r})\n"
            "print('jsonschema' in sys.modules, p.digest.startswith('sha256:'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
    with pytest.raises(PolicyError) as err:
        load_policy(ROOT / "tests" / "fixtures" / "policies" / "wrong_type.yaml")
    assert err.value.code.startswith("policy.")
