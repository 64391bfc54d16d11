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
import sys
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import rfc8785


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of a JSON-ready value (dicts, lists, str, int,
    float, bool, None). Raises ``rfc8785.CanonicalizationError`` on NaN/inf or
    integers beyond the IEEE-754 safe range.

    Plain values take a fast route (:func:`_plain_copy`, then the C JSON encoder, whose
    bytes are RFC 8785's for them: a property test checks both routes agree); anything
    else (other types, keys past U+D7FF, lone surrogates) goes through ``rfc8785``."""
    floats: list[float] = []
    try:
        text = _FAST_ENCODER.encode(_plain_copy(value, floats))
        if floats:
            text = _put_floats(text, floats)
        return text.encode("utf-8")
    except (_NotPlain, UnicodeEncodeError):  # a lone surrogate: rfc8785 says what is wrong
        pass
    return rfc8785.dumps(value)


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
