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
import sys
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import rfc8785


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of a JSON-ready value (dicts, lists, str, int,
    float, bool, None). Raises ``rfc8785.CanonicalizationError`` on NaN/inf or
    integers beyond the IEEE-754 safe range."""
    return rfc8785.dumps(value)


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
