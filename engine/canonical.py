"""Canonical JSON (RFC 8785) and the digests built on it.

One definition of "the same bytes" for every hash in ctxbudget: policy digests, input
digests, model fingerprints and the audit hash chain. RFC 8785 fixes key order, number
formatting and string escaping, so two machines hash a value identically.
"""

from __future__ import annotations

import hashlib
from typing import Any

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
