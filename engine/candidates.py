"""Candidates: the seed's ``BudgetItem`` and the frozen ``Candidate`` the engine works on.

What goes in: ``BudgetItem`` objects (the seed's public, mutable dataclass, kept exactly:
field names, order, no defaults) or plain mappings (the candidates file format, see
``schemas/candidates.schema.json``). What comes out: a tuple of frozen ``Candidate``
values, checked field by field. Bad input raises :class:`CandidateError` naming the item
and the field; nothing is coerced or dropped silently.

Numbers are ``int``/``float`` or NumPy integer/floating scalars (taken at their exact
value; ``bool``, strings and ``Decimal`` are not scores). Metadata may also hold
``datetime``, ``date``, ``time``, ``Decimal``, ``UUID`` and NumPy scalars: they are
written in their canonical JSON form (:func:`engine.canonical.plain_scalar`) when the
candidate is made, so every later stage, the audit record and a replay see one value.

The snapshot into ``Candidate`` happens once, at the boundary, so a caller mutating a
``BudgetItem`` after the call cannot change a decision that was already made or audited.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Dict

from .canonical import plain_scalar
from .errors import CandidateError, Location
from .tokens import KEY_TEXT_CHARS, content_sha256

DEFAULT_LEVEL = "PARAGRAPH"
#: Largest token count accepted for one item (far beyond any context window).
MAX_TOKEN_COUNT = 1_000_000_000_000
#: Integers in metadata must survive RFC 8785 (IEEE-754 doubles): the audit hashes them.
MAX_SAFE_INTEGER = 2**53 - 1
#: Nesting depth allowed inside metadata.
MAX_METADATA_DEPTH = 32


@dataclass
class BudgetItem:
    """Item being considered for context budget (the seed's public type, unchanged).

    ``metadata`` may carry ``parent_id`` (the hierarchy link) and ``doc_id``;
    ``create_budget_items_from_search`` fills both when the index has them.
    """

    content: str
    relevance_score: float
    token_count: int
    source_id: str
    level: str  # From IndexLevel
    metadata: Dict[str, Any]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One validated, immutable candidate.

    ``index`` is its position in the input (ties are broken by it, as the seed's stable
    sort does); ``token_count`` is ``None`` when the caller gave none and it must be
    counted; ``sha256`` is the content digest the audit record stores (and the count
    cache's key of a long content), computed when first read: ``_sha256`` holds it
    (``None`` until then; it takes no part in equality). Copying a candidate with other
    content (``dataclasses.replace``) must pass ``_sha256=None``.
    """

    index: int
    source_id: str
    content: str
    relevance_score: float
    token_count: int | None
    level: str
    metadata: Mapping[str, Any]
    parent_id: str | None
    _sha256: str | None = field(default=None, compare=False, repr=False)
    location: Location | None = None

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the content's UTF-8 bytes (computed once, on first use)."""
        digest = self._sha256
        if digest is None:
            digest = content_sha256(self.content)
            object.__setattr__(self, "_sha256", digest)
        return digest

    @property
    def count_key(self) -> str:
        """The count cache's key of the content (:func:`engine.tokens.count_key`)."""
        text = self.content
        return text if len(text) < KEY_TEXT_CHARS else self.sha256

    @property
    def doc_id(self) -> str | None:
        doc = self.metadata.get("doc_id")
        return doc if isinstance(doc, str) else None


def _fail(code: str, message: str, index: int, field: str | None, loc: Location | None) -> CandidateError:
    path = f"$[{index}]" + (f".{field}" if field else "")
    return CandidateError(code, message, path=path, location=loc)


def _numpy_number(value: Any) -> Any:
    """A NumPy integer or floating scalar as the Python ``int``/``float`` of the same value;
    anything else unchanged (``numpy.bool_`` is not a number, as ``bool`` is not)."""
    np = sys.modules.get("numpy")  # a NumPy scalar exists only once NumPy is imported
    if np is not None and isinstance(value, (np.integer, np.floating)):
        return plain_scalar(value)
    return value


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _check_score(value: Any, index: int, sid: str, loc: Location | None) -> float:
    """A finite score as a float, exactly the value given: ``int``, ``float`` and NumPy
    integer/floating scalars. Nothing is coerced — not strings, not ``bool``, not
    ``Decimal`` (which a float holds only approximately: the caller decides to round)."""
    try:
        value = _numpy_number(value)
    except ValueError as exc:
        raise _fail("candidate.bad_relevance", f"item {sid!r}: relevance_score {exc}",
                    index, "relevance_score", loc) from None
    if isinstance(value, Decimal):
        raise _fail(
            "candidate.bad_relevance",
            f"item {sid!r}: relevance_score is a Decimal ({value}); pass float(score) if rounding it "
            "to the nearest binary float is what you want (ctxbudget never rounds a score for you)",
            index, "relevance_score", loc,
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(
            "candidate.bad_relevance",
            f"item {sid!r}: relevance_score must be a number, got {_type_name(value)} {value!r}",
            index, "relevance_score", loc,
        )
    try:
        score = float(value)
    except OverflowError:
        raise _fail(
            "candidate.bad_relevance",
            f"item {sid!r}: relevance_score is an integer too large for a float "
            f"({len(str(value))} digits); rescale the scores",
            index, "relevance_score", loc,
        ) from None
    if math.isnan(score) or math.isinf(score):
        raise _fail(
            "candidate.bad_relevance",
            f"item {sid!r}: relevance_score is {score!r}; it must be a finite number "
            "(fix the retriever's score for this item)",
            index, "relevance_score", loc,
        )
    return score


def _check_tokens(value: Any, index: int, sid: str, loc: Location | None) -> int | None:
    if value is None:
        return None
    try:
        value = _numpy_number(value)
    except ValueError:
        pass  # an inexact wide float: refused below like any fractional count
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and value >= 0:
            hint = f" (write {int(value)})"
        else:
            hint = ""
        raise _fail(
            "candidate.bad_token_count",
            f"item {sid!r}: token_count must be a whole number >= 0, got {value!r}{hint}",
            index, "token_count", loc,
        )
    if value < 0 or value > MAX_TOKEN_COUNT:
        raise _fail(
            "candidate.bad_token_count",
            f"item {sid!r}: token_count is {value}; it must be from 0 to {MAX_TOKEN_COUNT:,}",
            index, "token_count", loc,
        )
    return value


def _check_text(value: str, what: str, index: int, sid: str, loc: Location | None) -> None:
    """Strings must be valid Unicode: the audit hashes their UTF-8 bytes."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(
            "candidate.bad_text",
            f"item {sid!r}: {what} is not valid Unicode (a lone surrogate "
            f"{value[exc.start]!r} at character {exc.start}); fix the text's encoding",
            index, what, loc,
        ) from None


def _json_value(value: Any, path: str, index: int, sid: str, loc: Location | None, depth: int = 0) -> Any:
    """Metadata as the JSON the audit record hashes (RFC 8785): JSON values with integers
    within the IEEE-754 safe range and finite floats, plus ``datetime``, ``date``,
    ``time``, ``Decimal``, ``UUID`` and NumPy scalars, written in their canonical JSON form
    (:func:`engine.canonical.plain_scalar`). Returns the value in that form (the same
    object when nothing needed converting)."""
    def bad(why: str) -> CandidateError:
        return CandidateError("candidate.bad_metadata", f"item {sid!r}: {path} {why}",
                              path=f"$[{index}].{path}", location=loc)

    if depth > MAX_METADATA_DEPTH:
        raise bad(f"is nested more than {MAX_METADATA_DEPTH} levels deep")
    if type(value) not in _JSON_SCALARS and not isinstance(value, (Mapping, list, tuple)):
        try:
            value = plain_scalar(value)
        except ValueError as exc:
            raise bad(str(exc)) from None
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise bad(f"is {value}, beyond ±2^53 (not exact in JSON); store it as a string")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise bad(f"is {value!r}; only finite numbers are allowed")
        return value
    if isinstance(value, str):
        _check_text(value, path, index, sid, loc)
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] | None = None  # a copy only once something changed
        for k, v in value.items():
            if not isinstance(k, str):
                raise bad(f"has a non-string key {k!r}")
            _check_text(k, f"{path} key", index, sid, loc)
            plain = _json_value(v, f"{path}.{k}", index, sid, loc, depth + 1)
            if plain is not v:
                out = dict(value) if out is None else out
                out[k] = plain
        return out if out is not None else value if isinstance(value, dict) else dict(value)
    if isinstance(value, (list, tuple)):
        items = [_json_value(v, f"{path}[{n}]", index, sid, loc, depth + 1) for n, v in enumerate(value)]
        return items if any(a is not b for a, b in zip(items, value)) else value
    raise bad(f"has a {_type_name(value)} value; only JSON values (and datetime, date, time, "
              "Decimal, UUID or NumPy scalars, written as strings and numbers) are allowed")


#: Types that are already JSON (``bool`` is a subclass of ``int``, listed for speed).
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def make_candidate(
    index: int,
    *,
    source_id: Any,
    content: Any,
    relevance_score: Any,
    token_count: Any = None,
    level: Any = DEFAULT_LEVEL,
    metadata: Any = None,
    parent_id: Any = None,
    location: Location | None = None,
) -> Candidate:
    """Validate one candidate's fields and freeze them. Raises ``CandidateError``."""
    if not isinstance(source_id, str) or not source_id:
        raise _fail(
            "candidate.bad_source_id",
            f"item #{index}: source_id must be a non-empty string, got {source_id!r}",
            index, "source_id", location,
        )
    if not isinstance(content, str):
        raise _fail(
            "candidate.bad_content",
            f"item {source_id!r}: content must be a string, got {type(content).__name__}",
            index, "content", location,
        )
    _check_text(source_id, "source_id", index, source_id, location)
    _check_text(content, "content", index, source_id, location)  # the digest is made when first read
    score = _check_score(relevance_score, index, source_id, location)
    tokens = _check_tokens(token_count, index, source_id, location)
    if hasattr(level, "name") and not isinstance(level, str):  # an IndexLevel-like Enum
        level = level.name
    if not isinstance(level, str) or not level:
        raise _fail(
            "candidate.bad_level",
            f"item {source_id!r}: level must be a non-empty string such as 'PARAGRAPH', got {level!r}",
            index, "level", location,
        )
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise _fail(
            "candidate.bad_metadata",
            f"item {source_id!r}: metadata must be a mapping, got {type(metadata).__name__}",
            index, "metadata", location,
        )
    if metadata:
        metadata = _json_value(dict(metadata), "metadata", index, source_id, location)
    _check_text(level, "level", index, source_id, location)
    if parent_id is None:
        parent_id = metadata.get("parent_id")
    if parent_id is not None and (not isinstance(parent_id, str) or not parent_id):
        raise _fail(
            "candidate.bad_parent_id",
            f"item {source_id!r}: parent_id must be a non-empty string or null, got {parent_id!r}",
            index, "parent_id", location,
        )
    if parent_id == source_id:
        raise _fail(
            "candidate.bad_parent_id",
            f"item {source_id!r} names itself as its parent",
            index, "parent_id", location,
        )
    ancestors = metadata.get("ancestors")
    if isinstance(ancestors, (list, tuple)) and source_id in ancestors:
        raise _fail(
            "candidate.bad_parent_id",
            f"item {source_id!r} lists itself in metadata.ancestors",
            index, "metadata.ancestors", location,
        )
    return Candidate(
        index=index,
        source_id=source_id,
        content=content,
        relevance_score=score,
        token_count=tokens,
        level=level,
        metadata=MappingProxyType(dict(metadata)),
        parent_id=parent_id,
        location=location,
    )


def from_budget_items(items: Iterable[BudgetItem]) -> tuple[Candidate, ...]:
    """Snapshot seed ``BudgetItem`` objects into validated candidates (checked in bulk,
    :mod:`engine.candbulk`; item by item when the bulk check finds something to report)."""
    from .candbulk import bulk_candidates  # it builds on this module's checks

    items = list(items)
    if set(map(type, items)) <= {BudgetItem}:
        fast = bulk_candidates([x.source_id for x in items], [x.content for x in items],
                               [x.relevance_score for x in items], [x.token_count for x in items],
                               [x.level for x in items], [x.metadata for x in items], None, None)
        if fast is not None:
            return fast
    return _budget_items_one_by_one(items)


def _budget_items_one_by_one(items: Iterable[BudgetItem]) -> tuple[Candidate, ...]:
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, BudgetItem):
            raise _fail(
                "candidate.bad_type",
                f"item #{i}: expected a BudgetItem, got {type(item).__name__}",
                i, None, None,
            )
        out.append(
            make_candidate(
                i,
                source_id=item.source_id,
                content=item.content,
                relevance_score=item.relevance_score,
                token_count=item.token_count,
                level=item.level,
                metadata=item.metadata,
            )
        )
    return check_unique(tuple(out))


def from_mappings(rows: Iterable[tuple[Mapping[str, Any], Location | None]]) -> tuple[Candidate, ...]:
    """Candidates from parsed file rows ``(mapping, location)`` (schema-checked already;
    checked in bulk, :mod:`engine.candbulk`, item by item when the bulk check finds
    something to report)."""
    from .candbulk import bulk_candidates  # it builds on this module's checks

    rows = list(rows)
    maps = [row for row, _loc in rows]
    if not set(map(type, maps)) <= {dict}:
        return _mappings_one_by_one(rows)
    fast = bulk_candidates([r.get("source_id") for r in maps], [r.get("content") for r in maps],
                           [r.get("relevance_score") for r in maps], [r.get("token_count") for r in maps],
                           [r.get("level", DEFAULT_LEVEL) for r in maps], [r.get("metadata") for r in maps],
                           [r.get("parent_id") for r in maps], [loc for _row, loc in rows])
    return fast if fast is not None else _mappings_one_by_one(rows)


def _mappings_one_by_one(rows: Iterable[tuple[Mapping[str, Any], Location | None]]) -> tuple[Candidate, ...]:
    out = []
    for i, (row, loc) in enumerate(rows):
        out.append(
            make_candidate(
                i,
                source_id=row.get("source_id"),
                content=row.get("content"),
                relevance_score=row.get("relevance_score"),
                token_count=row.get("token_count"),
                level=row.get("level", DEFAULT_LEVEL),
                metadata=row.get("metadata"),
                parent_id=row.get("parent_id"),
                location=loc,
            )
        )
    return check_unique(tuple(out))


def check_unique(cands: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
    """Reject duplicate ``source_id``s: decisions and audit reasons are keyed by id."""
    seen: dict[str, Candidate] = {}
    for c in cands:
        first = seen.get(c.source_id)
        if first is not None:
            where = f" (first at {first.location})" if first.location else f" (first at item #{first.index})"
            raise _fail(
                "candidate.duplicate_id",
                f"duplicate source_id {c.source_id!r}{where}; every candidate needs a unique id",
                c.index, "source_id", c.location,
            )
        seen[c.source_id] = c
    return cands


def to_budget_item(c: Candidate, token_count: int) -> BudgetItem:
    """A fresh seed ``BudgetItem`` for a candidate (callers may mutate it freely)."""
    meta = dict(c.metadata)
    if c.parent_id is not None:
        meta.setdefault("parent_id", c.parent_id)
    return BudgetItem(
        content=c.content,
        relevance_score=c.relevance_score,
        token_count=token_count,
        source_id=c.source_id,
        level=c.level,
        metadata=meta,
    )
