"""The record schema's compiled check (engine/audit/recordschema.py) on the keywords it
compiles beyond type/properties/items — anyOf, allOf, const, maximum, dependentRequired,
if/then/else — agrees with jsonschema: True only where jsonschema accepts, and, for an
``if`` it decides, the same verdict."""

from __future__ import annotations

import itertools
from typing import Any

import jsonschema
import pytest

from engine.audit.recordschema import _compile, _decide

VALUES: tuple[Any, ...] = (None, True, False, 0, 1, 1.0, 1.5, -1, 2, "", "a", "allocated", "infeasible",
                           [], [1], {}, {"outcome": "allocated"}, {"outcome": "infeasible"}, {"outcome": 1},
                           {"outcome": True}, {"outcome": None}, {"a": 1}, {"a": 1, "b": 2}, {"b": 2},
                           {"outcome": "allocated", "x": 1}, {"outcome": "infeasible", "x": None})

SCHEMAS: tuple[dict[str, Any], ...] = (
    {"anyOf": [{"type": "null"}, {"type": "string", "pattern": "^a"}]},
    {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "object", "required": ["a"]}]},
    {"allOf": [{"type": ["integer", "number"]}, {"maximum": 1}]},
    {"maximum": 1},
    {"type": "number", "minimum": 0, "maximum": 1},
    {"const": "allocated"}, {"const": None}, {"const": 1}, {"const": True},
    {"dependentRequired": {"a": ["b"]}},
    {"type": "object", "dependentRequired": {"outcome": ["x"]}},
    {"if": {"properties": {"outcome": {"const": "allocated"}}}, "then": {"required": ["x"]}},
    {"if": {"properties": {"outcome": {"const": "infeasible"}}},
     "then": {"properties": {"x": {"const": None}}}, "else": {"required": ["outcome"]}},
    {"if": {"properties": {"outcome": {"const": True}}}, "then": {"required": ["a"]}},
    {"if": {"properties": {"outcome": {"const": None}}}, "then": {"required": ["a"]}},
    {"allOf": [{"if": {"properties": {"outcome": {"const": "allocated"}}}, "then": {"required": ["x"]}},
               {"if": {"properties": {"outcome": {"const": "infeasible"}}}, "then": {"required": ["x"]}}],
     "dependentRequired": {"a": ["b"]}},
    {"type": "object", "properties": {"outcome": {"anyOf": [{"const": "allocated"}, {"type": "integer"}]}}},
)


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(k) for k in range(len(SCHEMAS))])
def test_compiled_keywords_accept_only_what_jsonschema_accepts(schema: dict[str, Any]) -> None:
    fast = _compile(schema, {})
    exact = jsonschema.Draft202012Validator(schema)
    verdicts = [(value, fast(value), exact.is_valid(value)) for value in VALUES]
    assert all(want for _v, got, want in verdicts if got), [v for v, got, want in verdicts if got and not want]
    # and no more conservative than it must be: the same verdict on every value but an
    # integral float (1.0 is an "integer" and equals 1 for jsonschema; here it is a no)
    same = [(v, got, want) for v, got, want in verdicts if not (type(v) is float and v.is_integer())]
    assert [got for _v, got, _w in same] == [want for _v, _g, want in same]


def test_the_if_decider_is_exact_or_declines() -> None:
    conds = [{"properties": {"outcome": {"const": c}}} for c in ("allocated", None, True, False)]
    for cond, value in itertools.product(conds, VALUES):
        verdict = _decide(cond)
        assert verdict is not None
        got = verdict(value)
        assert got is jsonschema.Draft202012Validator(cond).is_valid(value), (cond, value)
    assert _decide({"properties": {"outcome": {"const": 1.5}}}) is None  # not a form it decides
    assert _decide({"required": ["a"]}) is None

    class Str(str):
        pass

    assert _decide(conds[0])({"outcome": Str("allocated")}) is None  # a subclass: jsonschema's call
