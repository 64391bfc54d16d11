"""One parse per line (engine/audit/verify.py ``scan_parse``, used by the what-if's shard
stream and the streaming record checks): it says exactly what ``scan_line`` says of a
line and gives exactly the envelope ``parse_envelope`` gives, on canonical lines (its
quick route) and on every kind of non-canonical or damaged line (the full route)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.audit.lineformat import GENESIS_HASH, EnvelopeKind, parse_envelope, scan_line, seal
from engine.audit.verify import _fast_scan, scan_parse
from engine.canonical import sha256_hex

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
