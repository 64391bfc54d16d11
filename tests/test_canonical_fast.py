"""canonical_bytes takes a fast route (C JSON encoder) for plain values: it must write
exactly the bytes rfc8785 writes, and refuse exactly what rfc8785 refuses."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.canonical import canonical_bytes

_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1.0, 1e16, 1e21, 1e-7, 1e-4, 2.0**53, 2.0**60, 123.456, 5e-324])
_ints = st.integers(min_value=-(2**54), max_value=2**54)
_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=8) | st.sampled_from(
    ["\x00f0\x00", "\x00f1\x00", "\x00f", "\ud800"])  # placeholders' look-alikes
_scalars = st.none() | st.booleans() | _ints | _floats | _text
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_text, inner, max_size=4), max_leaves=20)


def _reference(value: Any) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:  # a lone surrogate key
        return type(exc)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_fast_route_writes_rfc8785_bytes_and_refuses_what_it_refuses(value: Any) -> None:
    expected = _reference(value)
    if isinstance(expected, bytes):
        assert canonical_bytes(value) == expected
    else:
        with pytest.raises(expected):
            canonical_bytes(value)


@pytest.mark.parametrize("value, expected", [
    ({"b": 1.0, "a": [-0.0, 0.5, 1e-5]}, b'{"a":[0,0.5,0.00001],"b":1}'),
    ({"\ue000": 1, "\U00010000": 2}, '{"\U00010000":2,"\ue000":1}'.encode()),  # UTF-16 order
    (2.0**60, b"1152921504606847000"),  # ES6 digits, not the exact integer
    ("\u2028\x01\"", b'"\xe2\x80\xa8\\u0001\\""'),
    ({"z": 6.2e-05, "a": [1e-7, 1e300]}, b'{"a":[1e-7,1e+300],"z":0.000062}'),  # exponents, any order
    ({"s": "\x00f0\x00", "f": 1e-7}, b'{"f":1e-7,"s":"\\u0000f0\\u0000"}'),  # looks like a placeholder
    (["\x00f0\x00"], b'["\\u0000f0\\u0000"]'),
])
def test_the_cases_where_python_and_rfc8785_differ_by_default(value: Any, expected: bytes) -> None:
    assert canonical_bytes(value) == expected == rfc8785.dumps(value)


def test_types_json_has_no_form_for_still_fail_as_before() -> None:
    class Str(str):
        pass
    assert canonical_bytes({"k": Str("v"), "t": (1, 2)}) == rfc8785.dumps({"k": "v", "t": [1, 2]})
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_bytes({1: "int key"})
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_bytes(float("nan"))


# ------------------------------------------------------------- the orjson route
# Dicts and lists go through orjson first (engine.canonical._orjson_bytes): its floats are
# rewritten where RFC 8785 writes them otherwise, and the bytes parsed back and compared.

@settings(max_examples=300, deadline=None)
@given(_json)
def test_every_route_writes_the_same_bytes(value: Any) -> None:
    from engine import canonical

    expected = _reference(value)
    fast = canonical._orjson_bytes(value) if type(value) in (dict, list) else None
    if fast is not None:  # when the orjson route answers, it answers RFC 8785's bytes
        assert fast == expected
    saved = canonical._orjson
    canonical._orjson = None  # the walk and the C encoder alone
    try:
        if isinstance(expected, bytes):
            assert canonical_bytes(value) == expected
        else:
            with pytest.raises(expected):
                canonical_bytes(value)
    finally:
        canonical._orjson = saved


@pytest.mark.parametrize("value", [
    {"a": "x:1.0,y", "b": 1.0},             # a string that looks like an integral float
    ["[2.0]", 2.0, -0.0, {"k": "a,3.0}"}],
    {"s": "n:1e+16,", "f": 1e16, "g": 8.2e-06},  # ... and like an exponent
    {"t": ",5e-7]", "u": [5e-7, 1.5e21]},
    {"\U0001f600": 1, "\ue000": 2, "a": [1.0]},  # keys past U+DFFF: UTF-16 order
    {"e": "caf\u00e9 \U0001f600", "n": 3.0},
])
def test_orjson_route_never_rewrites_strings(value: Any) -> None:
    from engine import canonical

    fast = canonical._orjson_bytes(value)
    assert fast is None or fast == rfc8785.dumps(value)
    assert canonical_bytes(value) == rfc8785.dumps(value)


def test_values_orjson_writes_but_json_has_no_form_for_still_fail() -> None:
    import enum
    import uuid

    class Color(enum.Enum):
        RED = 1

    for value in ({"id": uuid.UUID(int=7)}, [Color.RED], {"n": float("nan")}, {"big": 2**60}):
        with pytest.raises(rfc8785.CanonicalizationError):
            canonical_bytes(value)
    assert canonical_bytes({"t": (1, 2.0)}) == b'{"t":[1,2]}'  # a tuple as rfc8785 writes it
