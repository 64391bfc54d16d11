"""Canonical JSON (RFC 8785) and the digests built on it.

One definition of "the same bytes" for every hash in ctxbudget: policy digests, input
digests, model fingerprints and the audit hash chain. RFC 8785 fixes key order, number
formatting and string escaping, so two machines hash a value identically.

:func:`plain_scalar` is the one definition of how values JSON has no type for are
written (candidate metadata is converted with it at the input boundary, so the engine,
the verifier, the audit record and a replay from that record all see the same value):

* ``datetime`` → ISO 8601; an aware one in UTC with ``Z`` (one string per instant), a
  naive one as given, without an offset; ``date`` and ``time`` → ISO 8601;
* ``Decimal`` → its own string (``Decimal("9.90")`` → ``"9.90"``, the precision kept);
  NaN and infinities are refused, as for floats;
* ``UUID`` → its canonical lower-case hyphenated string;
* NumPy scalars → the Python ``bool``/``int``/``float`` of the same value (a float type
  wider than a double, whose value a double cannot hold exactly, is refused).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import rfc8785

try:  # optional: the fast route below; without it the walk and the C encoder write the same bytes
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps a bare install working
    _orjson = None  # type: ignore[assignment]


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of a JSON-ready value (dicts, lists, str, int,
    float, bool, None). Raises ``rfc8785.CanonicalizationError`` on NaN/inf or
    integers beyond the IEEE-754 safe range.

    Plain dicts and lists take the fastest route (:func:`_orjson_bytes`: orjson, its
    floats rewritten where RFC 8785 writes them otherwise, checked by parsing back);
    other plain values a fast one (:func:`_plain_copy`, then the C JSON encoder, whose
    bytes are RFC 8785's for them: property tests check every route agrees); anything
    else (other types, keys past U+D7FF, lone surrogates) goes through ``rfc8785``."""
    return canonical_bytes_parsed(value)[0]


def canonical_bytes_parsed(value: Any) -> tuple[bytes, Any]:
    """:func:`canonical_bytes` and, when the orjson route wrote them, the value parsed
    back from those bytes (its check), which is what a reader of the bytes gets (else
    ``None``): a writer that must return what it stored need not parse it again."""
    if _orjson is not None and type(value) in _CONTAINERS:
        fast = _orjson_bytes_parsed(value)
        if fast is not None:
            return fast
    return _other_routes(value), None


def _other_routes(value: Any) -> bytes:
    floats: list[float] = []
    try:
        text = _FAST_ENCODER.encode(_plain_copy(value, floats))
        if floats:
            text = _put_floats(text, floats)
        return text.encode("utf-8")
    except (_NotPlain, UnicodeEncodeError):  # a lone surrogate: rfc8785 says what is wrong
        pass
    return rfc8785.dumps(value)


_CONTAINERS = (dict, list)
#: orjson refuses (so the value takes the routes below) integers past 2**53 - 1, dataclasses,
#: dates and times, subclasses of str/int/dict/list, and whatever it has no form for.
_ORJSON_OPTIONS = 0 if _orjson is None else (
    _orjson.OPT_SORT_KEYS | _orjson.OPT_STRICT_INTEGER | _orjson.OPT_PASSTHROUGH_DATACLASS
    | _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_SUBCLASS)
#: A UTF-8 lead byte of a character past U+DFFF: a key holding one may sort otherwise in
#: RFC 8785 (UTF-16 order) than in orjson (code point order).
_PAST_SURROGATES = re.compile(rb"[\xee-\xf4]")
#: orjson writes an integral float as "<digits>.0", RFC 8785 as its integer.
_INTEGRAL = re.compile(rb"\.0[,\]}]")
#: orjson's exponent ("1e+16", "8.2e-6"); RFC 8785 writes some of them as plain digits.
_EXPONENT = re.compile(rb"e[-+][0-9]+(?=[,\]}])")
_NUMBER_CHARS = frozenset(b"0123456789.-")
_BEFORE_VALUE = frozenset(b":,[")


def _refuse(value: Any) -> Any:
    raise TypeError  # not plain: orjson's error sends the value down the other routes


def _orjson_bytes(value: Any) -> bytes | None:
    """:func:`_orjson_bytes_parsed`'s bytes."""
    found = _orjson_bytes_parsed(value)
    return None if found is None else found[0]


def _orjson_bytes_parsed(value: Any) -> tuple[bytes, Any] | None:
    """RFC 8785 bytes of a plain dict or list by way of orjson, or None (take the other
    routes). orjson writes strings, integers and keys below U+E000 as RFC 8785 does and
    floats with their shortest digits; where RFC 8785 writes a float otherwise (an
    integral one without ".0", exponents ES6's way) the number is rewritten. A rewrite
    can only be wrong where a string holds what looks like a number after ``:``, ``,``
    or ``[``; parsing the bytes back and comparing them with ``value`` catches that, and
    every value orjson writes that is not plain (UUID, Enum, tuple: they come back
    otherwise)."""
    try:
        out = _orjson.dumps(value, default=_refuse, option=_ORJSON_OPTIONS)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return None
    if not out.isascii() and _PAST_SURROGATES.search(out) is not None:
        return None
    if b".0" in out:
        out = _rewrite(out, _INTEGRAL, integral=True)
    if b"e-" in out or b"e+" in out:
        out = _rewrite(out, _EXPONENT, integral=False)
    try:
        back = _orjson.loads(out)
    except ValueError:  # pragma: no cover - a rewrite never breaks the syntax
        return None
    return (out, back) if back == value else None


def _rewrite(out: bytes, pattern: re.Pattern[bytes], *, integral: bool) -> bytes:
    """``out`` with each number the pattern finds (its tail: ".0" or the exponent) that
    stands where a value stands written RFC 8785's way."""
    parts: list[bytes] = []
    last = 0
    for m in pattern.finditer(out):
        end = m.start() + 2 if integral else m.end()
        start = m.start()
        while start > 0 and out[start - 1] in _NUMBER_CHARS:
            start -= 1
        token = out[start:end]
        if start == 0 or out[start - 1] not in _BEFORE_VALUE:
            continue  # inside a string: the parse-back check decides
        if integral:
            new = token[:-2]
            if not new.lstrip(b"-").isdigit():
                continue
            if new == b"-0":
                new = b"0"
        else:
            try:
                new = rfc8785.dumps(float(token))
            except (ValueError, rfc8785.CanonicalizationError):
                continue
        parts += (out[last:start], new)
        last = end
    if not parts:
        return out
    parts.append(out[last:])
    return b"".join(parts)


def _placeholder(i: int) -> str:
    return f"\x00f{i}\x00"


def _put_floats(text: str, floats: list[float]) -> str:
    """Write each exponent float where :func:`_plain_copy` left its placeholder string.
    A placeholder's JSON (``"\\u0000f<i>\\u0000"``, quotes included) occurs only where a
    string token equals it, so when the text holds exactly one per float, they are ours."""
    parts = text.split('"\\u0000f')
    if len(parts) != len(floats) + 1:
        raise _NotPlain  # a string in the value looks like one: take the slow route
    out, seen = [parts[0]], set()
    for part in parts[1:]:  # keys are sorted: the placeholders come in any order
        number, sep, rest = part.partition('\\u0000"')
        if not sep or not number.isdigit() or number in seen or int(number) >= len(floats):
            raise _NotPlain
        seen.add(number)
        out.append(rfc8785.dumps(floats[int(number)]).decode("ascii") + rest)
    return "".join(out)


class _NotPlain(Exception):
    pass


_SAFE_INT = 2**53 - 1
_FAST_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                                 allow_nan=False)
_PLAIN_SCALARS = (str, bool, type(None))


def _plain_copy(value: Any, floats: list[float]) -> Any:
    """``value`` with integral floats as ints (RFC 8785 writes ``1.0`` as ``1``) and
    exponent floats as placeholders (appended to ``floats``), for the C encoder;
    :class:`_NotPlain` for anything whose RFC 8785 bytes the C encoder would not write:
    types other than exact dict/list/str/int/float/bool/None, floats not finite, integers beyond 2**53, keys not str or with a
    character above U+D7FF (RFC 8785 sorts keys by UTF-16 code units, Python by code
    points; they agree below the surrogates)."""
    kind = type(value)
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str or not (k.isascii() or max(k, default="") < "\ud800"):
                raise _NotPlain
            out[k] = _plain_copy(v, floats)
        return out
    if kind is list:
        return [_plain_copy(v, floats) for v in value]
    if kind in _PLAIN_SCALARS:
        return value
    if kind is int:
        if -_SAFE_INT <= value <= _SAFE_INT:
            return value
        raise _NotPlain
    if kind is float:
        if value.is_integer():
            if -_SAFE_INT <= value <= _SAFE_INT:
                return int(value)
            raise _NotPlain
        if not math.isfinite(value):
            raise _NotPlain
        if "e" in repr(value):  # RFC 8785 writes exponents its own way: put in after
            floats.append(value)
            return _placeholder(len(floats) - 1)
        return value
    raise _NotPlain


def sha256_hex(data: bytes | str) -> str:
    """Hex SHA-256 of bytes, or of a str encoded as UTF-8."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``value``."""
    return "sha256:" + sha256_hex(canonical_bytes(value))


def plain_scalar(value: Any) -> Any:
    """``value`` as a JSON-native scalar when it is one of the types above, else
    ``value`` itself (unchanged, not checked). Raises ``ValueError`` with the reason for a
    value that has no exact JSON form (a NaN ``Decimal``, an inexact ``longdouble``)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"is Decimal({str(value)!r}); only finite numbers are allowed")
        return str(value)
    if isinstance(value, UUID):
        return str(value)
    np = sys.modules.get("numpy")  # a NumPy scalar exists only once NumPy is imported
    if np is not None and isinstance(value, np.generic):
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            as_float = float(value)
            if as_float != value and as_float == as_float:  # NaN stays NaN: checked by the caller
                raise ValueError(f"is a numpy.{type(value).__name__} that a 64-bit float cannot hold "
                                 "exactly; convert it with float() if rounding is acceptable")
            return as_float
        if isinstance(value, np.str_):
            return str(value)
    return value


class _NotIndentable(Exception):
    """A value :func:`indented_json` leaves to ``json.dumps``."""


_FLAT_SCALARS = frozenset({str, int, float, bool, type(None)})
#: ``indent`` and level -> a C encoder whose item separator carries that level's indentation.
_FLAT_ENCODERS: dict[tuple[int, int], json.JSONEncoder] = {}
_FLAT_ENCODERS_SCALAR = json.JSONEncoder(ensure_ascii=False)
_ENCODE_STR = _FLAT_ENCODERS_SCALAR.encode


def _flat(values: Any) -> bool:
    """Whether every value is a plain scalar or an empty dict/list (written the same at
    any level)."""
    kinds = set(map(type, values))
    if kinds <= _FLAT_SCALARS:
        return True
    if not kinds <= _FLAT_SCALARS | {dict, list}:
        return False
    for v in values:
        t = type(v)
        if (t is dict or t is list) and v:
            return False
    return True


def _indented(value: Any, level: int, indent: int, out: list[str]) -> None:
    t = type(value)
    if t is dict:
        if not value:
            out.append("{}")
            return
        for key in value:
            if type(key) is not str:
                raise _NotIndentable  # json writes 1 as "1", True as "true": not worth repeating here
        flat = _flat(value.values())
    elif t is list or t is tuple:
        if not value:
            out.append("[]")
            return
        flat = _flat(value)
    elif t in _FLAT_SCALARS:
        out.append(_FLAT_ENCODERS_SCALAR.encode(value))
        return
    else:
        raise _NotIndentable
    inner = "\n" + " " * (indent * (level + 1))
    close = "\n" + " " * (indent * level)
    if not flat and t is not dict and len(value) >= _TABLE_MIN and _table(value, level, indent, out):
        return
    if flat:
        enc = _FLAT_ENCODERS.get((indent, level))
        if enc is None:
            enc = _FLAT_ENCODERS[(indent, level)] = json.JSONEncoder(
                ensure_ascii=False, separators=("," + inner, ": "), check_circular=False)
        text = enc.encode(value if t is not tuple else list(value))
        out += (text[0], inner, text[1:-1], close, text[-1])
        return
    if t is dict:
        out.append("{")
        sep = inner
        for key, v in value.items():
            out += (sep, _ENCODE_STR(key), ": ")
            _indented(v, level + 1, indent, out)
            sep = "," + inner
        out += (close, "}")
    else:
        out.append("[")
        sep = inner
        for v in value:
            out.append(sep)
            _indented(v, level + 1, indent, out)
            sep = "," + inner
        out += (close, "]")



#: A list of at least this many dicts with the same keys is written column by column.
_TABLE_MIN = 8
#: Writes a list of scalars one per line: no encoded scalar holds a raw line break.
_LINES = json.JSONEncoder(ensure_ascii=False, separators=("\n", ": "), check_circular=False)


def _same_keys(rows: Any) -> tuple[str, ...] | None:
    """The keys every row has, in the same order (str keys, non-empty dicts), or None."""
    first = rows[0]
    if type(first) is not dict or not first:
        return None
    keys = tuple(first)
    for row in rows:
        if type(row) is not dict or len(row) != len(keys) or tuple(row) != keys:
            return None
    for key in keys:
        if type(key) is not str:
            return None
    return keys


def _row_texts(rows: Any, keys: tuple[str, ...], level: int, indent: int) -> list[str]:
    """Each of ``rows`` (dicts with ``keys``) written as a dict at ``level``, column by
    column: a column of scalars in one C encoder call (one value per line, then split: a
    raw line break cannot occur inside an encoded scalar), a column of dicts group by
    group of equal keys (the same way, one level deeper), any other column value by value."""
    columns: list[list[str]] = []
    for key in keys:
        col = [row[key] for row in rows]
        if _flat(col):
            columns.append(_LINES.encode(col)[1:-1].split("\n"))
            continue
        cells: list[str] = [""] * len(col)
        groups: dict[Any, list[int]] = {}
        rest: list[int] = []
        for i, v in enumerate(col):
            if type(v) is dict and v:
                groups.setdefault(tuple(v), []).append(i)
            else:
                rest.append(i)
        for at in groups.values():
            sub = [col[i] for i in at]
            sub_keys = _same_keys(sub) if len(at) >= _TABLE_MIN else None
            if sub_keys is None:
                rest += at
                continue
            for i, text in zip(at, _row_texts(sub, sub_keys, level + 1, indent)):
                cells[i] = text
        for i in rest:
            part: list[str] = []
            _indented(col[i], level + 1, indent, part)
            cells[i] = "".join(part)
        columns.append(cells)
    row_in = "\n" + " " * (indent * (level + 1))
    # One %-format per row (a key's own "%" doubled): the cells are arguments, never parsed.
    row = "{" + "".join((("," if j else "") + row_in + _ENCODE_STR(key) + ": ").replace("%", "%%") + "%s"
                        for j, key in enumerate(keys)) + "\n" + " " * (indent * level) + "}"
    return [row % cells for cells in zip(*columns)]


def _table(rows: Any, level: int, indent: int, out: list[str]) -> bool:
    """A list of dicts that all have the same str keys (:func:`_row_texts`). False (and
    nothing written) when ``rows`` is not such a list."""
    keys = _same_keys(rows)
    if keys is None:
        return False
    inner = "\n" + " " * (indent * (level + 1))
    out += ("[", inner, ("," + inner).join(_row_texts(rows, keys, level + 1, indent)),
            "\n" + " " * (indent * level), "]")
    return True


def indented_json(value: Any, indent: int = 2) -> str:
    """``json.dumps(value, indent=indent, ensure_ascii=False)``, the same text, several
    times quicker on large documents: each dict or list whose values are all scalars is
    written by the C encoder (Python's own indenting encoder is pure Python), with the
    line break and indentation of its level as the item separator. Anything else (keys
    that are not str, types JSON has no form for, a circular value) is json's own."""
    out: list[str] = []
    try:
        _indented(value, 0, indent, out)
    except (_NotIndentable, RecursionError):
        return json.dumps(value, indent=indent, ensure_ascii=False)
    return "".join(out)
