"""The verifier's own reading of the policy language: templates, metadata equality,
group keys and pinned/blocked matchers.

Independent code on purpose: :mod:`engine.verify` uses these instead of the engine's
``engine.problem.render`` and ``engine.policy.Matcher.matches``, so a bug in one side is
caught by the other. What both must do is fixed by one table of cases,
``tests/semantics_cases.py``, which the tests drive through both sides:

* templates are read as ``str.format`` reads them, restricted: ``{{`` and ``}}`` are
  literal braces, ``{source_id}``, ``{content}`` and ``{level}`` are the only fields,
  filled in once (braces inside the values are text);
* metadata values are equal when both are numbers of equal value (``1 == 1.0``),
  both booleans and equal (``True`` is not ``1``), both strings and identical, both
  null, or both lists/mappings whose elements are equal under this same rule.
"""

from __future__ import annotations

import fnmatch
import itertools
import numbers
import unicodedata
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeGuard

from .policy import Matcher

TEMPLATE_FIELDS = frozenset({"source_id", "content", "level"})


@lru_cache(maxsize=64)
def parse_template(template: str) -> tuple[tuple[bool, str], ...]:
    """A template as parts ``(is_field, text)``: ``{{`` and ``}}`` are literal braces,
    ``{source_id}``, ``{content}`` and ``{level}`` are fields, nothing else is allowed
    (ValueError naming the position)."""
    parts: list[tuple[bool, str]] = []
    text: list[str] = []
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch in "{}" and template.startswith(ch * 2, i):
            text.append(ch)
            i += 2
        elif ch == "}":
            raise ValueError(f"a lone '}}' at character {i} of template {template!r}")
        elif ch == "{":
            end = template.find("}", i)
            name = template[i + 1:end] if end > i else ""
            if name not in TEMPLATE_FIELDS:
                raise ValueError(f"placeholder at character {i} of template {template!r} is not one of "
                                 "{source_id}, {content}, {level}")
            if text:
                parts.append((False, "".join(text)))
                text = []
            parts.append((True, name))
            i = end + 1
        else:
            j = min((k for k in (template.find("{", i), template.find("}", i)) if k >= 0), default=n)
            text.append(template[i:j])
            i = j
    if text:
        parts.append((False, "".join(text)))
    return tuple(parts)


@lru_cache(maxsize=64)
def _printf(template: str) -> str:
    """The parsed template as a printf-style format (literal ``%`` doubled): C-speed
    filling at 100k items, with the fields decided by :func:`parse_template` alone."""
    return "".join(f"%({text})s" if is_field else text.replace("%", "%%") for is_field, text in parse_template(template))


def render(template: str, *, source_id: str, content: str, level: str) -> str:
    """One item as the model sees it, by the verifier's own reading of ``template``
    (fields are substituted once: braces inside the values are text)."""
    return _printf(template) % {"source_id": source_id, "content": content, "level": level}


def render_all(template: str, items: Sequence[tuple[str, str, str]]) -> list[str]:
    """:func:`render` of many ``(source_id, content, level)`` rows: a template that is
    the content alone, or has no field, is not formatted item by item."""
    parts = parse_template(template)
    if parts == ((True, "content"),):
        return [content for _, content, _ in items]
    if not any(is_field for is_field, _ in parts):
        return ["".join(text for _, text in parts)] * len(items)
    form = _printf(template)
    return [form % {"source_id": s, "content": c, "level": lv} for s, c, lv in items]


def _is_number(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def is_sequence(x: object) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    return isinstance(x, (list, tuple))


def same_value(a: object, b: object) -> bool:
    """Metadata equality: numbers by value (``1 == 1.0``), booleans only with booleans
    (``True`` is not ``1``), strings exactly, null only null, lists and mappings
    element by element under the same rule."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (isinstance(a, Mapping) and isinstance(b, Mapping) and set(a) == set(b)
                and all(same_value(a[k], b[k]) for k in a))
    if is_sequence(a) or is_sequence(b):
        return (is_sequence(a) and is_sequence(b) and len(a) == len(b)
                and all(same_value(x, y) for x, y in zip(a, b)))
    return type(a) is type(b) and a == b


def value_key(x: object) -> object:
    """A hashable key with ``value_key(a) == value_key(b)`` exactly when
    ``same_value(a, b)`` (null and a missing field share one key)."""
    if isinstance(x, bool):
        return ("bool", x)
    if _is_number(x):
        return ("number", x)  # 1 and 1.0 are equal and hash alike
    if isinstance(x, str):
        return ("str", x)
    if x is None:
        return ("null",)
    if isinstance(x, Mapping):
        return ("map", frozenset((k, value_key(v)) for k, v in x.items()))
    if is_sequence(x):
        return ("list", tuple(value_key(v) for v in x))
    return ("other", type(x).__name__, repr(x))


def selects(m: Matcher, source_id: str, metadata: Mapping[str, Any]) -> bool:
    """Whether a pinned/blocked entry selects a candidate: ``id`` exactly, ``glob``
    case-sensitively on every platform, ``metadata`` every key present and equal."""
    if m.kind == "id":
        return source_id == m.id
    if m.kind == "glob":
        return fnmatch.fnmatchcase(source_id, m.glob or "")
    return all(k in metadata and same_value(metadata[k], want) for k, want in m.metadata)


def shingle_set(text: str, n: int) -> frozenset[str]:
    """The ``n``-word shingles of ``text`` as the near-duplicate rule reads it: NFKC, case
    folded, words are runs of ``str.isalnum`` characters, a shorter text is one shingle
    of all its words, a text without words has none (cases: ``tests/semantics_cases.py``)."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    toks = ["".join(run) for alnum, run in itertools.groupby(norm, str.isalnum) if alnum]
    if not toks:
        return frozenset()
    width = min(n, len(toks))
    return frozenset(" ".join(toks[k:k + width]) for k in range(len(toks) - width + 1))
