"""The audit log's line format: how a record is sealed into a line, and how one line
is checked on its own.

A log is UTF-8 text, one record per line, each line ending in ``\\n``. A line is the
RFC 8785 canonical JSON of an *envelope*::

    {"hash":"sha256:<64 hex>","kind":"decision","prev_hash":"sha256:<64 hex>",
     "record":{...},"seq":7}

- ``seq`` is 1 for the first line and grows by exactly 1 per line.
- ``prev_hash`` is the ``hash`` of the line before; for ``seq`` 1 it is
  :data:`GENESIS_HASH` (``"sha256:"`` and 64 zeros).
- ``hash`` is ``"sha256:" + sha256(canonical JSON of the envelope without "hash")``.
- ``kind`` is ``"decision"`` (``record`` is the caller's object) or ``"recovery"``
  (written by the log itself after it found a torn last line; ``record`` gives the
  torn bytes' offset, length and sha256 and the file they were moved to), ``"segment"``
  (the first line of a rotated segment, naming the one before) or ``"prune"``
  (segments removed under the retention period); see :mod:`engine.audit.segments`.

Only a line that ends in ``\\n`` is a record. The writer fsyncs after the whole line, so
bytes after the last ``\\n`` were never acknowledged to anyone: they are a torn write.

How lines relate to each other (order, chain, checkpoint) is :mod:`engine.audit.verify`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

import rfc8785

from ..canonical import canonical_bytes, canonical_bytes_parsed, sha256_hex
from ..errors import AuditError

GENESIS_HASH = "sha256:" + "0" * 64
"""The ``prev_hash`` of the first record (seq 1)."""

MAX_DEPTH = 64
"""Deepest nesting of a line (the envelope is level 1). A record built by the engine
nests about 40 levels at most (candidate metadata is capped at 32); the writer refuses
deeper records and readers report deeper lines, so that no reader recurses on hostile
input (RecursionError)."""

ENVELOPE_KEYS = frozenset({"seq", "prev_hash", "kind", "record", "hash"})
HASH_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
# "hash" sorts first among the envelope keys in RFC 8785 order, so a canonical line is
# this prefix, the quoted hash, a comma, and the canonical body minus its "{".
_LINE_HEAD = b'{"hash":'
# Each complete envelope starts with this; used to count how many records one
# unreadable line may stand for (a flipped "\n" merges two lines into one).
_RECORD_MARK = b'{"hash":"sha256:'


class EnvelopeKind(str, Enum):
    """What a line records."""

    DECISION = "decision"
    RECOVERY = "recovery"
    SEGMENT = "segment"  # first line of every segment after the first (engine.audit.segments)
    PRUNE = "prune"  # segments removed under the retention period (engine.audit.retention)


_KINDS = frozenset(k.value for k in EnvelopeKind)
_BODY_KEYS = ENVELOPE_KEYS - {"hash"}


def encode_record(record: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of a decision record. Raises :class:`AuditError`
    ``audit.bad_record`` with the JSON path of the first value that is not JSON-ready
    (NaN, inf, integers beyond 2**53, non-str keys, other types)."""
    return encode_record_parsed(record)[0]


def encode_record_parsed(record: Mapping[str, Any]) -> tuple[bytes, Any]:
    """:func:`encode_record`, and the record as a reader of those bytes parses it when
    the encoder had it at hand (its own check), else ``None``."""
    if not isinstance(record, Mapping):
        raise AuditError("audit.bad_record",
                         f"a record is a JSON object, got {type(record).__name__}")
    if nesting_exceeds(record, MAX_DEPTH - 1):
        raise AuditError("audit.bad_record", f"record nests deeper than {MAX_DEPTH - 1} "
                         "levels; flatten it (readers refuse deeper lines)")
    try:
        return canonical_bytes_parsed(record)
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
        path, why = _json_problem(record) or ("$", str(exc))
        raise AuditError("audit.bad_record", f"record is not JSON-ready: {why}",
                         path=path) from exc


def seal(seq: int, prev_hash: str, kind: EnvelopeKind,
         record: Mapping[str, Any] | bytes) -> bytes:
    """The complete line (with ``\\n``) for a new envelope around ``record`` (a mapping,
    or bytes from :func:`encode_record`, so a writer can encode before taking its lock).

    The line is assembled, not re-serialised: in RFC 8785 key order the envelope is
    hash, kind, prev_hash, record, seq, and every value but ``record`` is plain ASCII."""
    encoded = record if isinstance(record, bytes) else encode_record(record)
    body = b'{"kind":"%s","prev_hash":"%s","record":%s,"seq":%d}' % (
        kind.value.encode(), prev_hash.encode("ascii"), encoded, seq)
    return b'{"hash":"sha256:%s",%s\n' % (sha256_hex(body).encode(), body[1:])


def nesting_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether parsed JSON ``value`` nests deeper than ``limit`` levels (a scalar is 0,
    ``{}`` is 1). Iterative: safe on any depth."""
    if not isinstance(value, (dict, list, tuple, Mapping)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            return True
        kind = type(node)  # exact types first: isinstance(list, Mapping) is slow
        children = (node.values() if kind is dict else node if kind is list
                    else node.values() if isinstance(node, Mapping) else node)
        below = depth + 1
        for child in children:
            kind = type(child)
            if kind is dict or kind is list or (
                    kind not in _SCALARS and isinstance(child, (Mapping, tuple))):
                push((child, below))
    return False


_SCALARS = frozenset({str, int, float, bool, type(None)})


_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))


def nests_within(body: bytes, limit: int) -> bool:
    """Whether valid JSON ``body`` nests at most ``limit`` levels (``{}`` is 1), as
    :func:`nesting_exceeds` of its value says, from the bytes:
    escapes out, then brackets and quotes only, strings out, one kind of bracket, and one
    level of empty pairs removed per round (``bytes.replace`` is one left-to-right pass:
    a pair it uncovers waits for the next round)."""
    s = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(_BRACKETS, _NOT_STRUCTURE)
    s = b"".join(s.split(b'"')[::2])  # every quote left delimits a string: the odd parts are strings
    for _ in range(limit):
        if not s:
            return True
        s = s.replace(b"()", b"")
    return not s


def _too_deep(raw: bytes) -> bool:
    # A line with at most MAX_DEPTH brackets cannot nest deeper; else the bytes tell
    # (``raw`` parsed as JSON: :func:`nests_within` says what the walk of its value would).
    return raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and not nests_within(raw, MAX_DEPTH)


_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels (no audit record nests that deep)"


def parse_envelope(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """Parse one line (without its ``\\n``) for a reader that uses its values: the
    envelope, or None and a sentence saying why not (bad UTF-8 with its byte, bad JSON
    with its column, nesting beyond :data:`MAX_DEPTH`, not an envelope). Hashes are not
    checked here (:func:`scan_line` does); nothing raises on hostile bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 at byte {exc.start}"
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return None, f"not JSON we can read: {_TOO_DEEP}"
    except ValueError as exc:
        msg = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) \
            else str(exc)
        return None, f"not JSON: {msg}"
    if _too_deep(raw):
        return None, f"not JSON we can read: {_TOO_DEEP}"
    if not isinstance(value, dict) or not isinstance(value.get("record"), dict):
        return None, "not an audit envelope (no 'record' object)"
    if value.get("kind") not in _KINDS:
        return None, f"not an audit envelope (kind {_short(value.get('kind'))}, expected one of {', '.join(sorted(_KINDS))})"
    seq = value.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None, f"not an audit envelope (seq {_short(seq)}, expected an integer)"
    return value, ""


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _json_problem(value: Any, path: str = "$") -> tuple[str, str] | None:
    """The first value that RFC 8785 cannot encode, as (JSON path, reason)."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return path, f"{value} is not JSON; store null or a string instead"
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    elif isinstance(value, int):
        if abs(value) > 2**53 - 1:
            return path, f"{value} is beyond the exact integer range of JSON (2**53-1); " \
                         "store it as a string"
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"key {key!r} is not a string"
            found = _json_problem(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _json_problem(item, f"{path}[{i}]")
            if found:
                return found
    else:
        return path, f"{type(value).__name__} is not JSON-ready; convert it first"
    return None


class LineStatus(str, Enum):
    """What :func:`scan_line` found; the non-OK values are also :class:`ProblemKind` values."""

    OK = "ok"
    MODIFIED = "modified"
    BAD_JSON = "bad_json"
    MALFORMED = "malformed"
    TORN = "torn_line"


@dataclass(frozen=True, slots=True)
class LineEntry:
    """What :func:`scan_line` learned about one line; the record itself is dropped so
    that a long log can be checked in small memory."""

    line: int
    status: LineStatus
    message: str = ""
    seq: int | None = None
    prev_hash: str | None = None
    stored_hash: str | None = None
    computed_hash: str | None = None
    kind: str | None = None
    records_spanned: int = 1  # for unreadable lines: how many records they may hold


_SAFE_INT = 2**53 - 1
_FAST_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                                 allow_nan=False)
_NON_BMP = re.compile("[\U00010000-\U0010ffff]")
#: A JSON escape of a UTF-16 surrogate: it parses to a non-BMP character (or a lone
#: surrogate) that the text itself does not show, so the fast route cannot be trusted.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_line(text: str) -> tuple[Any, bool]:
    """Parse one line; also say whether :func:`canonical_of` may take the fast route.

    RFC 8785 writes a float >= 1e16 as an integer literal, so a literal beyond the exact
    integer range is read back as the float it came from (the writer cannot have
    written such an integer: RFC 8785 refuses them)."""
    # Key order differs above U+FFFF (RFC 8785 sorts by UTF-16 code units), whether the
    # character is written as itself or as an escaped surrogate pair.
    fast = _NON_BMP.search(text) is None and _SURROGATE_ESCAPE.search(text) is None

    def parse_float(literal: str) -> float:
        nonlocal fast
        value = float(literal)
        # repr() and RFC 8785 agree on non-integral floats in [1e-4, 1e16): same
        # shortest digits, no exponent. Anything else goes the slow way.
        if literal != repr(value) or "e" in literal or value.is_integer():
            fast = False
        return value

    def parse_int(literal: str) -> int | float:
        nonlocal fast
        number = int(literal)
        if -_SAFE_INT <= number <= _SAFE_INT:
            return number
        fast = False
        return float(literal)

    value = json.loads(text, parse_float=parse_float, parse_int=parse_int,
                       parse_constant=_reject_constant)
    return value, fast


def canonical_of(value: Any, fast: bool) -> bytes:
    """RFC 8785 bytes of a parsed value. With ``fast`` (from :func:`load_line`) the C
    JSON encoder produces the identical bytes about 5x quicker; a test checks both
    routes agree."""
    if fast:
        try:
            return _FAST_ENCODER.encode(value).encode("utf-8")
        except (UnicodeEncodeError, ValueError):
            pass  # lone surrogates, NaN: let rfc8785 say what is wrong
    return canonical_bytes(value)


def scan_line(raw: bytes, line: int, *, terminated: bool = True) -> LineEntry:
    """Check one line (without its ``\\n``) on its own: JSON, envelope shape, hash and
    canonical form. ``terminated=False`` marks the bytes after the last ``\\n``."""
    if not terminated:
        return LineEntry(line, LineStatus.TORN, f"{len(raw)} bytes after the last "
                         "newline: an unfinished write (recovered on the next append)")
    spanned = max(1, raw.count(_RECORD_MARK))
    try:
        value, fast = load_line(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return LineEntry(line, LineStatus.BAD_JSON, f"not UTF-8 at byte {exc.start}",
                         records_spanned=spanned)
    except RecursionError:
        return LineEntry(line, LineStatus.BAD_JSON, f"not JSON we can read: {_TOO_DEEP}",
                         records_spanned=spanned)
    except ValueError as exc:
        msg = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) \
            else str(exc)
        return LineEntry(line, LineStatus.BAD_JSON, f"not JSON: {msg}",
                         records_spanned=spanned)
    if _too_deep(raw):
        return LineEntry(line, LineStatus.MALFORMED, f"JSON {_TOO_DEEP}",
                         records_spanned=spanned)
    if not isinstance(value, dict) or not isinstance(value.get("hash"), str):
        return LineEntry(line, LineStatus.MALFORMED, "not an envelope: no string 'hash'",
                         records_spanned=spanned)
    seq = value.get("seq")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    prev = value.get("prev_hash") if isinstance(value.get("prev_hash"), str) else None
    kind = value.get("kind") if isinstance(value.get("kind"), str) else None
    stored = value.pop("hash")
    try:
        body = canonical_of(value, fast)
    except (ValueError, RecursionError) as exc:
        return LineEntry(line, LineStatus.MALFORMED, f"cannot be canonicalised: {exc}",
                         seq=seq, records_spanned=spanned)
    computed = "sha256:" + sha256_hex(body)
    facts = dict(seq=seq, prev_hash=prev, stored_hash=stored, computed_hash=computed,
                 kind=kind)
    if computed != stored:
        return LineEntry(line, LineStatus.MODIFIED, f"content hashes to {computed[:19]}... "
                         f"but the stored hash is {stored[:19]}...", **facts)
    # The hash checks out, so the writer produced exactly these values; a line that is
    # not byte-identical to their canonical form was re-serialised by someone else.
    if raw != _LINE_HEAD + json.dumps(stored).encode() + b"," + body[1:]:
        return LineEntry(line, LineStatus.MODIFIED, "not RFC 8785 canonical JSON "
                         "(re-serialised after it was written)", **facts)
    shape = _shape_problem(value, stored)
    if shape:
        return LineEntry(line, LineStatus.MALFORMED, shape, **facts)
    return LineEntry(line, LineStatus.OK, **facts)


def _shape_problem(env: Mapping[str, Any], stored: str) -> str | None:
    if env.keys() != _BODY_KEYS:
        keys = sorted(set(env) | {"hash"})
        return f"envelope keys are {keys}, expected {sorted(ENVELOPE_KEYS)}"
    seq = env["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return f"seq must be an integer >= 1, got {seq!r}"
    for name, val in (("hash", stored), ("prev_hash", env["prev_hash"])):
        if not isinstance(val, str) or not HASH_RE.match(val):
            return f"{name} must be 'sha256:' and 64 lowercase hex digits"
    if env["kind"] not in _KINDS:
        return f"kind must be 'decision' or 'recovery', got {env['kind']!r}"
    if not isinstance(env["record"], dict):
        return "record must be a JSON object"
    return None
