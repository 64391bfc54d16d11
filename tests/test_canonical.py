"""engine.canonical: canonical_bytes gives RFC 8785's bytes or its error; indented_json is json.dumps(indent=...)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.canonical import canonical_bytes, digest, indented_json

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.integers()
    | st.floats() | st.text() | st.sampled_from([0.0, -0.0, 1.0, 2.0**53, 2.0**60, 1e-5, 1e16, 1e21, 0.5]),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


def _rfc(value: Any) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(value)
    except Exception as exc:  # noqa: BLE001 - the exception type is what is compared
        return type(exc)


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(st.text(), _json_values, max_size=5) | st.lists(_json_values, max_size=5))
def test_same_bytes_or_same_error_as_rfc8785(value: Any) -> None:
    want = _rfc(value)
    if isinstance(want, bytes):
        assert canonical_bytes(value) == want
    else:
        with pytest.raises(want):
            canonical_bytes(value)


@pytest.mark.parametrize("value", [
    {"x": 1.0, "y": [-0.0, 3.0, 0.25]},  # integral floats are written as ints
    {"\U0001f600": 1, "\uffff": 2},  # UTF-16 order differs from code-point order: rfc8785's route
    {"s": "\u2028\x7f\x00\n\"\\\U0001f600"},
    [1e20, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, 2**53 - 1, -(2**53) + 1],
    {"deep": [[[[{"a": [0.1]}]]]]},
])
def test_awkward_values(value: Any) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert digest(value).startswith("sha256:")


def test_errors_are_rfc8785s() -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_bytes({"x": float("nan")})
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_bytes({"x": "\ud800"})
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_bytes({"x": 2**60})


_any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=16)


@settings(max_examples=120, deadline=None)
@given(_any_json)
def test_indented_json_is_json_dumps_indent_2(value: Any) -> None:
    assert indented_json(value) == json.dumps(value, indent=2, ensure_ascii=False)
    assert indented_json(value, 4) == json.dumps(value, indent=4, ensure_ascii=False)


@pytest.mark.parametrize("value", [
    {1: "int key", True: "bool key"}, {"x": {1.5: None}}, {"d": Decimal("1.5")} , [float("nan"), {"k": []}],
    {"a": {"b": {}, "c": [[], {}]}, "é\u2028": "\x00\U0001f600"},
])
def test_indented_json_awkward_values(value: Any) -> None:
    try:
        want = json.dumps(value, indent=2, ensure_ascii=False)
    except TypeError:
        with pytest.raises(TypeError):
            indented_json(value)
        return
    assert indented_json(value) == want


def test_indented_json_circular_value_is_jsons_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        indented_json({"x": loop})


_small_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("ab"), inner, max_size=2),
    max_leaves=4)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=3), min_size=1, max_size=4, unique=True).flatmap(
    lambda keys: st.lists(st.fixed_dictionaries({k: _small_json for k in keys}), min_size=8, max_size=10)))
def test_indented_json_tables_of_rows_with_the_same_keys(rows: list[dict[str, Any]]) -> None:
    """The column-by-column route (lists of >= 8 dicts with equal keys; nested dicts grouped by keys)."""
    doc = {"rows": rows, "nested": [{"n": {"a": k, "b": "%s\n"}, "k%": k} for k in range(9)]}
    assert indented_json(doc) == json.dumps(doc, indent=2, ensure_ascii=False)
