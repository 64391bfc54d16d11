"""One parse per line (engine/audit/verify.py ``scan_parse``, used by the what-if's shard
stream and the streaming record checks): it says exactly what ``scan_line`` says of a
line and gives exactly the envelope ``parse_envelope`` gives, on canonical lines (its
quick route) and on every kind of non-canonical or damaged line (the full route)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from engine.audit.lineformat import GENESIS_HASH, EnvelopeKind, nesting_exceeds, nests_within, parse_envelope, scan_line, seal
from engine.audit.verify import _fast_scan, _orjson_scan, scan_parse
from engine.canonical import sha256_hex
from engine.errors import AuditError

RECORD: dict[str, Any] = {
    "decision_id": "d-1", "tiny": 0.0000118241, "tinier": -0.0000050455, "score": 0.8125,
    "count": 12, "items": [{"id": "a", "w": 0.25, "meta": {"k": ["x", 1, None, True]}}], "text": "caf\u00e9 \u2028",
}


def _resealed(body: bytes) -> bytes:
    """A line whose stored hash is the SHA-256 of ``body`` as written (a forger's reseal)."""
    return b'{"hash":"sha256:' + sha256_hex(body).encode() + b'",' + body[1:]


def _body(line: bytes) -> bytes:
    return b"{" + line[line.index(b'",') + 2:]


def _same(raw: bytes) -> None:
    entry, env = scan_parse(raw, 7)
    assert entry == scan_line(raw, 7)
    want = parse_envelope(raw)[0] if entry.status.value == "ok" else None
    assert env == want


def test_a_canonical_line_takes_the_quick_route_and_agrees() -> None:
    line = seal(1, GENESIS_HASH, EnvelopeKind.DECISION, RECORD).rstrip(b"\n")
    assert b"0.0000118241" in line  # RFC 8785 writes it without an exponent; repr() does not
    assert _fast_scan(line, 7) is not None
    _same(line)
    entry, env = scan_parse(line, 7)
    assert entry.status.value == "ok" and env is not None and env["record"]["tiny"] == 0.0000118241


@pytest.mark.parametrize("old,new", [
    (b"0.0000118241", b"1.18241e-05"),  # a float not in its RFC 8785 form
    (b'"count":12', b'"count":12.0'),  # an integral float
    (b'"count":12', b'"count":9007199254740993'),  # beyond the exact range of JSON
    (b'"count":12', b'"count": 12'),  # whitespace
    (b'"text":"caf\xc3\xa9', b'"text":"caf\\u00e9'),  # an escape RFC 8785 does not write
    (b'"text":"caf', b'"text":"\xf0\x9f\x98\x80caf'),  # beyond the BMP (key order differs there)
    (b'"text":"caf', b'"text":"\\ud83d\\ude00caf'),  # an escaped surrogate pair
    (b'"count":12', b'"count":NaN'),  # not JSON
    (b'"decision_id":"d-1",', b''),  # still canonical, but not what was sealed
])
def test_non_canonical_or_changed_lines_agree_with_scan_line(old: bytes, new: bytes) -> None:
    line = seal(1, GENESIS_HASH, EnvelopeKind.DECISION, RECORD).rstrip(b"\n")
    assert old in line
    changed = line.replace(old, new, 1)
    assert _fast_scan(changed, 7) is None  # the stored hash kept: the full route says what is wrong
    _same(changed)
    assert scan_parse(changed, 7)[0].status.value in ("modified", "bad_json")
    resealed = _resealed(_body(changed))  # what a forger writes: the full route unless it is canonical
    assert _fast_scan(resealed, 7) is None or new == b""
    _same(resealed)


def test_damaged_lines_agree_with_scan_line() -> None:
    line = seal(3, GENESIS_HASH, EnvelopeKind.DECISION, RECORD).rstrip(b"\n")
    deep = json.dumps({"kind": "decision", "prev_hash": GENESIS_HASH, "record": {"x": [[[[[[[[[[1]]]]]]]]]] * 1},
                       "seq": 1}, separators=(",", ":")).encode()
    nested = b"[" * 70 + b"]" * 70
    deep = deep.replace(b"[1]", nested)
    cases = [line[:-5], line + b"x", line.replace(b'"kind":"decision"', b'"kind":"other"'),
             b"\xff" + line, b"", b"{}", b"[1,2]", line.replace(b'"seq":3', b'"seq":0'),
             _resealed(_body(line.replace(b'"seq":3', b'"seq":-1'))), _resealed(deep),
             _resealed(b'{"kind":"decision","prev_hash":"' + GENESIS_HASH.encode() + b'","record":[],"seq":1}'),
             _resealed(b'{"extra":1,"kind":"decision","prev_hash":"' + GENESIS_HASH.encode()
                       + b'","record":{},"seq":1}')]
    for raw in cases:
        _same(raw)
        assert scan_parse(raw, 7)[0].status.value != "ok"


# --- the orjson route (``_orjson_scan``): the same verdict and the same values -------------

_CHARS = ["[", "]", "{", "}", "\\", '"', "a", "\n", "\u00e9", "\u2028", "\x7f", "\x1f", "e-5,", ":1.0,", "[12345678901234567890]"]
_PAST = ["\ue000", "\U0001f600"]


def _number(rng: random.Random, integral_floats: bool) -> Any:
    e = rng.randint(-9, 22)
    value = rng.choice([rng.random() * 10.0 ** e, -rng.random() * 10.0 ** e, rng.randint(-10**6, 10**6),
                        2**53 + rng.randint(-2, 2), -(10**19) + rng.randint(0, 9), 10.0 ** e, float(rng.randint(0, 99)),
                        -0.0])
    return value + 0.5 if not integral_floats and isinstance(value, float) and value.is_integer() else value


def _value(rng: random.Random, depth: int, plain: bool) -> Any:
    chars = _CHARS if plain else _CHARS + _PAST
    text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 5)))
    r = rng.random()
    if depth > 70 or r < 0.35:
        return rng.choice([_number(rng, not plain), None, True, text])
    if r < 0.55 and depth > 3:
        return [_value(rng, depth + 1, plain)]  # long chains: some lines nest deeper than MAX_DEPTH
    if r < 0.7:
        return [_value(rng, depth + 1, plain) for _ in range(rng.randint(0, 3))]
    return {text + str(i): _value(rng, depth + 1, plain) for i in range(rng.randint(0, 3))}


def test_random_lines_agree_with_scan_line_and_parse_envelope_value_for_value() -> None:
    """Sealed lines of random values (floats of every size, integral floats, integers past
    2**53 and past 64 bits, strings holding brackets, quotes, escapes and number-like text,
    characters past U+DFFF, nesting past MAX_DEPTH), as written and re-serialised and
    resealed: scan_parse says what scan_line says, and gives parse_envelope's values with
    their types (repr: an int is not a float that equals it)."""
    rng = random.Random(17)
    quick = checked = 0
    for i in range(400):
        plain = i % 2 == 1
        record = {"x": _value(rng, 0, plain), "y": _value(rng, rng.randint(0, 66), plain)}
        try:
            line = seal(i + 1, GENESIS_HASH, EnvelopeKind.DECISION, record).rstrip(b"\n")
        except AuditError:  # an integer past 2**53: not a line the writer writes
            continue
        for raw in (line, line.replace(b"0.0000", b"1e-5", 1), line.replace(b",", b", ", 1),
                    _resealed(_body(line).replace(b"0.0000", b"1e-5", 1))):
            entry, env = scan_parse(raw, 3)
            assert entry == scan_line(raw, 3)
            want = parse_envelope(raw)[0] if entry.status.value == "ok" else None
            assert env == want and (want is None or repr(env["record"]) == repr(want["record"]))
            quick += _orjson_scan(_body(raw)) is not None
            checked += 1
    assert quick > checked // 5  # the orjson route is taken, not only the others


def test_orjson_route_takes_canonical_lines_and_rewrites_small_exponents() -> None:
    line = seal(1, GENESIS_HASH, EnvelopeKind.DECISION, {**RECORD, "t": 6.4789999999999984e-6}).rstrip(b"\n")
    assert b'"t":0.0000064789999999999984' in line  # orjson writes 6.4789999999999984e-6
    value = _orjson_scan(_body(line))
    assert value is not None and value["record"]["t"] == 6.4789999999999984e-6
    _same(line)
    for old, new in ((b'"count":12', b'"count":12.0'), (b'"count":12', b'"count":18446744073709551616'),
                     (b"0.0000064789999999999984", b"6.4789999999999984e-6")):
        assert _orjson_scan(_body(line.replace(old, new))) is None


@pytest.mark.parametrize("value", [1, [], {}, [[[]]], {"a": [{"b": "]]]}"}]}, ["\\\"[", {"\\": ["{"]}],
                                   [[[[[[["x"]]]]]]], {"k": "\"[[[[[[[[[[\\"}])
def test_nesting_from_the_bytes_is_the_values_nesting(value: Any) -> None:
    body = json.dumps(value, separators=(",", ":")).encode()
    for limit in range(0, 9):
        assert nests_within(body, limit) is (not nesting_exceeds(value, limit))
