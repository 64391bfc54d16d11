"""Bulk validation: a whole batch of candidates checked column by column, in one pass.

What goes in: the raw fields of a batch, one list per field (what
:func:`engine.candidates.from_mappings` and :func:`~engine.candidates.from_budget_items`
read off their inputs). What comes out: the tuple of :class:`~engine.candidates.Candidate`
that validating item by item (:func:`~engine.candidates.make_candidate`) would build,
equal field for field, or ``None``.

``None`` means "some value needs the per-item validator": a wrong type, a number out of
range, a NaN, a lone surrogate, a self-parent, a duplicate id, a NumPy scalar that does
not convert exactly, nested metadata that does not pass. The caller then validates the
whole batch item by item, so every error — code, path, message, location, and which
item is reported first — is the one the per-item validator has always raised. The fast
path never raises a ``CandidateError`` of its own and never accepts what the per-item
validator refuses: each check below is the per-item one restricted to the plain types
(``type(x) is float``, not ``isinstance``), and anything else goes to the per-item path.

The checks are whole-column expressions (``map(type, ...)``, one ``isascii`` of the
joined strings, the sum of the scores is finite only when every score is) so their cost
is a few C-level passes, not a dozen Python calls per item.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from .candidates import MAX_SAFE_INTEGER, MAX_TOKEN_COUNT, Candidate, _json_value, _numpy_number
from .errors import CandidateError, Location

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_FLOAT: frozenset[type] = frozenset({float})
_NUMBER: frozenset[type] = frozenset({float, int})
_STR: frozenset[type] = frozenset({str})
_TOKENS: frozenset[type] = frozenset({int, type(None)})
_META: frozenset[type] = frozenset({dict, type(None)})


def bulk_candidates(source_ids: Sequence[Any], contents: Sequence[Any], scores: Sequence[Any],
                    tokens: Sequence[Any], levels: Sequence[Any], metadata: Sequence[Any],
                    parent_ids: Sequence[Any] | None, locations: Sequence[Location | None] | None,
                    ) -> tuple[Candidate, ...] | None:
    """The candidates of one batch (``parent_ids``/``locations``: ``None`` for all when
    not given), with unique ids, or ``None`` to validate item by item (module docstring)."""
    n = len(source_ids)
    if not _plain_strings(source_ids) or not _plain_strings(levels := _level_names(levels)):
        return None
    if len(set(source_ids)) != n or not _types_in(contents, _STR):
        return None
    values = _scores(scores)
    counts = _token_counts(tokens)
    if values is None or counts is None:
        return None
    if not all(map(str.isascii, contents)):
        try:
            for text in contents:
                text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the per-item validator names it
            return None
    metas = _metadata(metadata, source_ids, parent_ids, locations)
    if metas is None:
        return None
    frozen, parents = metas
    locs: Sequence[Location | None] = locations if locations is not None else [None] * n
    # The content digests are left to Candidate.sha256 (computed when first read).
    return _assemble(range(n), source_ids, contents, values, counts, levels, frozen, parents, [None] * n, locs)


#: ``Candidate``'s fields in order (a test checks this against the dataclass).
FIELDS = ("index", "source_id", "content", "relevance_score", "token_count", "level", "metadata",
          "parent_id", "_sha256", "location")
_SETTERS = tuple(getattr(Candidate, name).__set__ for name in FIELDS)  # the slots' own setters


def _assemble(*columns: Sequence[Any]) -> tuple[Candidate, ...]:
    """``Candidate(*row)`` for each row of the columns, values already checked. Each slot
    is written by its descriptor, which is what the frozen dataclass's ``__init__`` does
    through ``object.__setattr__`` at twice the cost (it has no ``__post_init__``): one
    field at a time over all the objects, by ``map`` (a C loop, no bytecode per item)."""
    new = object.__new__
    out = [new(Candidate) for _ in columns[0]]
    for setter, column in zip(_SETTERS, columns, strict=True):
        deque(map(setter, out, column), 0)
    return tuple(out)


def _types_in(column: Sequence[Any], allowed: frozenset[type]) -> bool:
    return set(map(type, column)) <= allowed


def _plain_strings(column: Sequence[Any]) -> bool:
    """Every value a non-empty ``str`` that encodes to UTF-8 (no lone surrogate)."""
    if not _types_in(column, _STR) or not all(column):
        return False
    joined = "".join(column)
    if joined.isascii():
        return True
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _level_names(levels: Sequence[Any]) -> Sequence[Any]:
    """Levels as the per-item validator reads them: an ``IndexLevel``-like Enum by name."""
    if _types_in(levels, _STR):
        return levels
    return [lv.name if hasattr(lv, "name") and not isinstance(lv, str) else lv for lv in levels]


def _scores(scores: Sequence[Any]) -> Sequence[float] | None:
    """Finite float scores, exactly the values given (ints and NumPy scalars converted
    as the per-item validator converts them), or None."""
    kinds = set(map(type, scores))
    if not kinds <= _FLOAT:
        if not kinds <= _NUMBER:
            try:
                scores = [_numpy_number(s) for s in scores]
            except ValueError:
                return None
            if not _types_in(scores, _NUMBER):
                return None
        try:
            scores = [float(s) for s in scores]
        except OverflowError:
            return None
    # A sum is finite only when every term is (a NaN or an infinity stays in it); an
    # overflowing sum of finite scores only sends the batch to the per-item validator.
    return scores if math.isfinite(sum(scores)) else None


def _token_counts(tokens: Sequence[Any]) -> Sequence[int | None] | None:
    """Token counts that are ``None`` or ints within range (NumPy integers converted), or None."""
    if not _types_in(tokens, _TOKENS):
        try:
            tokens = [_numpy_number(t) for t in tokens]
        except ValueError:
            return None
        if not _types_in(tokens, _TOKENS):
            return None
    given = [t for t in tokens if t is not None]
    if given and (min(given) < 0 or max(given) > MAX_TOKEN_COUNT):
        return None
    return tokens


def _flat_json(meta: dict[str, Any]) -> bool:
    """A one-level mapping of plain JSON scalars that the per-item check passes unchanged."""
    for key, value in meta.items():
        kind = type(key)
        if kind is not str or not key.isascii():
            return False
        kind = type(value)
        if kind is str:
            if not value.isascii():
                return False
        elif kind is int:
            if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                return False
        elif kind is float:
            if value - value != 0.0:  # NaN or an infinity
                return False
        elif kind is not bool and value is not None:
            return False
    return True


def _metadata(metadata: Sequence[Any], source_ids: Sequence[str], parent_ids: Sequence[Any] | None,
              locations: Sequence[Location | None] | None,
              ) -> tuple[Sequence[Mapping[str, Any]], Sequence[str | None]] | None:
    """Each item's frozen metadata and parent id, or None."""
    n = len(metadata)
    no_parents = parent_ids is None or not any(p is not None for p in parent_ids)
    if no_parents and not any(metadata):  # the common case: no metadata, no links
        return ([_EMPTY] * n, [None] * n) if _types_in(metadata, _META) else None
    frozen: list[Mapping[str, Any]] = []
    parents: list[str | None] = []
    for i, meta in enumerate(metadata):
        sid = source_ids[i]
        if not meta:
            if meta is not None and not isinstance(meta, Mapping):
                return None
            plain: Mapping[str, Any] = _EMPTY
        elif type(meta) is dict and _flat_json(meta):
            plain = MappingProxyType(dict(meta))
        elif isinstance(meta, Mapping):
            try:
                plain = MappingProxyType(dict(_json_value(dict(meta), "metadata", i, sid,
                                                          locations[i] if locations else None)))
            except CandidateError:
                return None
        else:
            return None
        parent = parent_ids[i] if parent_ids is not None else None
        if parent is None:
            parent = plain.get("parent_id")
        if parent is not None and (type(parent) is not str or not parent or parent == sid):
            return None
        ancestors = plain.get("ancestors")
        if isinstance(ancestors, (list, tuple)) and sid in ancestors:
            return None
        frozen.append(plain)
        parents.append(parent)
    return frozen, parents
