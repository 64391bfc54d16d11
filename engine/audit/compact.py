"""Compact records (schema version 2): what a record repeats per item is written once.

:func:`compact` is applied to the record as it is written (``decide``), :func:`expand` by
every reader (record checks, show, query, export, replay), so that both see the full
record of schema version 1 shape. ``expand(compact(r)) == r`` with ``schema_version``
``"2"`` (a test checks every kind of record). A version 1 record is read as it is.

What is left out, per item of ``items`` (measured: ``bench/audit_size.py``):

- ``content_sha256``, ``relevance`` and ``level`` when they equal the input row of the
  same ``source_id`` (they always do for a record the engine wrote);
- ``decision``: it follows from the reason code (``pinned``, ``selected`` and
  ``level_minimum`` include, every other code excludes);
- ``rule``, and each entry of ``numbers``, when it equals the record's default for that
  reason code (``item_defaults``: the most common rule per code, the numbers every item
  of that code shares, such as the budget);
- ``evidence`` when the code's evidence template in ``item_defaults`` rebuilds it from
  the item's numbers exactly (checked per item at write time; otherwise it is kept).

Per row of ``input.items``: ``token_count`` and ``parent_id`` when null, ``level`` when it
is the most common one (``input.default_level``). The input digest is still taken over
the full rows, so it does not depend on the version.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Mapping

__all__ = ["COMPACT_VERSION", "compact", "expand"]

COMPACT_VERSION = "2"
_INCLUDING = frozenset({"pinned", "selected", "level_minimum"})
_NULLABLE_ROW_KEYS = ("token_count", "parent_id")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DERIVED = frozenset({"content_sha256", "relevance", "level", "decision", "rule", "numbers",
                      "evidence"})
_FROM_ROW = (("content_sha256", "content_sha256"), ("relevance", "relevance_score"),
             ("level", "level"))


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (``True`` is not ``1``)."""
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if kind is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _decision(code: Any) -> str:
    return "included" if code in _INCLUDING else "excluded"


def _template(evidence: str, numbers: Mapping[str, Any]) -> str:
    """``evidence`` with each number of ``numbers`` replaced by a format field."""
    text = evidence.replace("{", "{{").replace("}", "}}")
    shown = []
    for key, v in numbers.items():
        if not _NAME.match(key) or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        forms = [(":,", f"{v:,}"), ("", str(v))] if isinstance(v, int) else [("", str(v))]
        shown += [(len(s), key, spec, s) for spec, s in forms]
    done: set[str] = set()
    for _n, key, spec, s in sorted(shown, reverse=True):  # longest first: "8,000" before "0"
        if key in done:
            continue
        pattern = r"(?<![\w.,{])" + re.escape(s) + r"(?![\w}]|[.,]\d)"
        new, hits = re.subn(pattern, lambda _m: "{" + key + spec + "}", text, count=1)
        if hits:
            text = new
            done.add(key)
    return text


def _render(template: str, numbers: Mapping[str, Any]) -> str | None:
    try:
        return template.format(**numbers)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        return None


def _defaults(items: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in items:
        groups[str(it.get("reason"))].append(it)
    rules: dict[str, Any] = {}
    numbers: dict[str, dict[str, Any]] = {}
    evidence: dict[str, str] = {}
    for code, group in sorted(groups.items()):
        first_rule = group[0].get("rule")
        if all(_same_rule(it.get("rule"), first_rule) for it in group):
            rules[code] = first_rule  # one rule for the whole group (the usual case)
        else:
            counted = Counter(repr(it.get("rule")) for it in group)
            top = counted.most_common(1)[0][0]
            rules[code] = next(it.get("rule") for it in group if repr(it.get("rule")) == top)
        first = group[0].get("numbers")
        if isinstance(first, dict):
            shared = dict(first)
            for it in group[1:]:
                if not shared:
                    break
                theirs = it.get("numbers")
                if not isinstance(theirs, dict):
                    shared = {}
                    break
                for k in [k for k, v in shared.items() if k not in theirs or not _same(theirs[k], v)]:
                    del shared[k]
            if shared:
                numbers[code] = shared
            ev = group[0].get("evidence")
            if isinstance(ev, str):
                template = _template(ev, first)
                if _render(template, first) == ev:
                    evidence[code] = template
    return {"rule": rules, "numbers": numbers, "evidence": evidence}


def _same_rule(a: Any, b: Any) -> bool:
    """Whether two rules count as one in :func:`_defaults` (equal ``repr``; the common
    case, both the same string or both None, without building the reprs)."""
    if a is b or (type(a) is str and type(b) is str and a == b):
        return True
    return repr(a) == repr(b)


_CONTAINER_TYPES = (dict, list)


def _compact_item(it: dict[str, Any], row: Mapping[str, Any] | None, rules: Mapping[str, Any],
                  shared_numbers: Mapping[str, dict[str, Any]], templates: Mapping[str, str]) -> dict[str, Any]:
    code = str(it.get("reason"))
    out = {k: v for k, v in it.items() if k not in _DERIVED}
    for key, row_key in _FROM_ROW:
        if key in it:
            a = it[key]
            if row is not None and row_key in row:
                b = row[row_key]
                if a is b or (type(a) is type(b) and (
                        _same(a, b) if type(a) in _CONTAINER_TYPES else bool(a == b))):
                    continue
            out[key] = a
    if "decision" in it and it["decision"] != ("included" if code in _INCLUDING else "excluded"):
        out["decision"] = it["decision"]
    if "rule" in it and (code not in rules or not _same(it["rule"], rules[code])):
        out["rule"] = it["rule"]
    numbers = it.get("numbers")
    if "numbers" in it:
        shared = shared_numbers.get(code)
        if not isinstance(numbers, dict) or (shared is not None and not all(k in numbers for k in shared)):
            out["numbers"] = numbers
        else:
            rest = dict(numbers) if shared is None else {k: v for k, v in numbers.items() if k not in shared}
            if rest:
                out["numbers"] = rest
    if "evidence" in it:
        template = templates.get(code)
        if template is None or not isinstance(numbers, dict) or _render(template, numbers) != it["evidence"]:
            out["evidence"] = it["evidence"]
    return out


def compact(record: Mapping[str, Any]) -> dict[str, Any]:
    """The version 2 form of a full record built by :mod:`engine.audit.record`."""
    out = dict(record)
    out["schema_version"] = COMPACT_VERSION
    inp = record.get("input")
    rows: dict[str, Mapping[str, Any]] = {}
    if isinstance(inp, dict) and isinstance(inp.get("items"), list):
        levels = Counter(r.get("level") for r in inp["items"] if isinstance(r.get("level"), str))
        level = levels.most_common(1)[0][0] if levels else None
        new_rows = []
        for r in inp["items"]:
            rows[str(r.get("source_id"))] = r
            new = dict(r)
            if "token_count" in new and new["token_count"] is None:
                del new["token_count"]
            if "parent_id" in new and new["parent_id"] is None:
                del new["parent_id"]
            if "level" in new and new["level"] == level:
                del new["level"]
            new_rows.append(new)
        out["input"] = {**inp, "items": new_rows}
        if level is not None:
            out["input"]["default_level"] = level
    items = record.get("items")
    if isinstance(items, list) and items:
        defaults = _defaults(items)
        rules, shared, templates = defaults["rule"], defaults["numbers"], defaults["evidence"]
        out["items"] = [_compact_item(it, rows.get(str(it.get("source_id"))), rules, shared, templates)
                        for it in items]
        out["item_defaults"] = defaults
    return out


def expand(record: Mapping[str, Any]) -> dict[str, Any]:
    """The full record a reader checks and shows: a version 2 record expanded, any other
    returned as it is. Never raises: a part that is not shaped as the writer writes it
    is left as stored, for the record checks to report."""
    if not isinstance(record, Mapping) or record.get("schema_version") != COMPACT_VERSION:
        return dict(record) if isinstance(record, Mapping) else record
    out = dict(record)
    defaults = out.pop("item_defaults", None)
    rows: dict[str, Mapping[str, Any]] = {}
    inp = out.get("input")
    if isinstance(inp, dict) and isinstance(inp.get("items"), list):
        inp = dict(inp)
        level = inp.pop("default_level", None)
        full_rows = []
        for r in inp["items"]:
            if isinstance(r, dict):
                r = {**r, **{k: None for k in _NULLABLE_ROW_KEYS if k not in r}}
                if "level" not in r and level is not None:
                    r["level"] = level
                rows[str(r.get("source_id"))] = r
            full_rows.append(r)
        out["input"] = {**inp, "items": full_rows}
    items = out.get("items")
    if isinstance(items, list) and isinstance(defaults, dict):
        out["items"] = [_expand_item(it, rows, defaults) if isinstance(it, dict) else it
                        for it in items]
    return out


def _expand_item(it: dict[str, Any], rows: Mapping[str, Mapping[str, Any]],
                 defaults: Mapping[str, Any]) -> dict[str, Any]:
    code = str(it.get("reason"))
    row = rows.get(str(it.get("source_id"))) or {}
    full = dict(it)
    for key, row_key in (("content_sha256", "content_sha256"), ("relevance", "relevance_score"),
                         ("level", "level")):
        if key not in full and row_key in row:
            full[key] = row[row_key]
    full.setdefault("decision", _decision(code))
    rules = defaults.get("rule")
    if "rule" not in full and isinstance(rules, dict) and code in rules:
        full["rule"] = rules[code]
    shared = defaults.get("numbers")
    shared = shared.get(code) if isinstance(shared, dict) else None
    numbers = full.get("numbers", {})
    if isinstance(shared, dict) and isinstance(numbers, dict):
        full["numbers"] = {**shared, **numbers}
    elif "numbers" not in full:
        full["numbers"] = {}
    templates = defaults.get("evidence")
    template = templates.get(code) if isinstance(templates, dict) else None
    if "evidence" not in full and isinstance(template, str) and isinstance(full["numbers"], dict):
        text = _render(template, full["numbers"])
        if text is not None:
            full["evidence"] = text
    return full
