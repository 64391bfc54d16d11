"""The decide path's CPU cuts keep what they replace: the envelope an append returns is
the stored line as a reader parses it (it is no longer parsed again from the line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.audit.log import AuditLog

RECORDS: list[dict[str, Any]] = [
    {"decision_id": "a", "n": 2.0, "small": 7.5e-05, "big": 1e21, "neg": -0.0, "t": (1, 2)},
    {"decision_id": "b", "text": "é \u2028 \U0001f600", "nested": {"x": [1, {"y": None}]}, "flag": True},
    {"decision_id": "c", "looks": "a:1.0,b", "list": [0.5, 3.0, "1e-7"]},
]


@pytest.mark.parametrize("record", RECORDS)
def test_the_returned_envelope_is_the_stored_line(tmp_path: Path, record: dict[str, Any]) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", signer=None)
    log.append({"decision_id": "first"})
    env = log.append(record)
    stored = list(log)[-1]
    assert env == stored
    assert [type(v) for v in env["record"].values()] == [type(v) for v in stored["record"].values()]


# -- compact(): the previous implementation is the oracle (same output, record by record) --
from collections import Counter, defaultdict  # noqa: E402
from collections.abc import Mapping  # noqa: E402

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from engine.audit.compact import (_DERIVED, _FROM_ROW, _NULLABLE_ROW_KEYS, COMPACT_VERSION,  # noqa: E402
                                  _decision, _render, _same, _template, compact, expand)

def _old_defaults(items: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in items:
        groups[str(it.get("reason"))].append(it)
    rules: dict[str, Any] = {}
    numbers: dict[str, dict[str, Any]] = {}
    evidence: dict[str, str] = {}
    for code, group in sorted(groups.items()):
        counted = Counter(repr(it.get("rule")) for it in group)
        top = counted.most_common(1)[0][0]
        rules[code] = next(it.get("rule") for it in group if repr(it.get("rule")) == top)
        first = group[0].get("numbers")
        if isinstance(first, dict):
            shared = {k: v for k, v in first.items()
                      if all(isinstance(it.get("numbers"), dict) and k in it["numbers"]
                             and _same(it["numbers"][k], v) for it in group)}
            if shared:
                numbers[code] = shared
            ev = group[0].get("evidence")
            if isinstance(ev, str):
                template = _template(ev, first)
                if _render(template, first) == ev:
                    evidence[code] = template
    return {"rule": rules, "numbers": numbers, "evidence": evidence}


def _old_compact_item(it: dict[str, Any], row: Mapping[str, Any] | None,
                  defaults: Mapping[str, Any]) -> dict[str, Any]:
    code = str(it.get("reason"))
    out = {k: v for k, v in it.items() if k not in _DERIVED}
    for key, row_key in _FROM_ROW:
        if key in it and (row is None or row_key not in row or not _same(it[key], row[row_key])):
            out[key] = it[key]
    if "decision" in it and it["decision"] != _decision(code):
        out["decision"] = it["decision"]
    if "rule" in it and (code not in defaults["rule"] or not _same(it["rule"], defaults["rule"][code])):
        out["rule"] = it["rule"]
    numbers = it.get("numbers")
    shared = defaults["numbers"].get(code, {})
    if "numbers" in it:
        if not isinstance(numbers, dict) or not all(k in numbers for k in shared):
            out["numbers"] = numbers
        else:
            rest = {k: v for k, v in numbers.items() if k not in shared}
            if rest:
                out["numbers"] = rest
    if "evidence" in it:
        template = defaults["evidence"].get(code)
        if template is None or not isinstance(numbers, dict) or _render(template, numbers) != it["evidence"]:
            out["evidence"] = it["evidence"]
    return out


def old_compact(record: Mapping[str, Any]) -> dict[str, Any]:
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
            new_rows.append({k: v for k, v in r.items()
                             if not (k in _NULLABLE_ROW_KEYS and v is None)
                             and not (k == "level" and v == level)})
        out["input"] = {**inp, "items": new_rows}
        if level is not None:
            out["input"]["default_level"] = level
    items = record.get("items")
    if isinstance(items, list) and items:
        defaults = _old_defaults(items)
        out["items"] = [_old_compact_item(it, rows.get(str(it.get("source_id"))), defaults)
                        for it in items]
        out["item_defaults"] = defaults
    return out




_SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.0, 0.5, 1.0, -0.0, 2.5])
_NUMBERS = st.dictionaries(st.sampled_from(["needed", "left", "budget", "cap", "n", "bad key"]),
                           _SCALARS | st.lists(st.integers(0, 2), max_size=2), max_size=4)


@st.composite
def _records(draw: st.DrawFn) -> dict[str, Any]:
    ids = [f"s{i}" for i in range(draw(st.integers(1, 8)))]
    rows = [{"source_id": sid, "relevance_score": draw(st.sampled_from([0.5, 0.25, 1, None])),
             "token_count": draw(st.sampled_from([None, 3, 0])), "level": draw(st.sampled_from(
                 ["PARAGRAPH", "SECTION", None, 1])), "parent_id": draw(st.sampled_from([None, "s0"])),
             "metadata": {}, "content_sha256": draw(st.sampled_from(["h1", "h2"]))}
            for sid in ids if draw(st.booleans()) or sid == "s0"]
    items = []
    for sid in ids:
        numbers = draw(_NUMBERS | st.sampled_from([None, "x", []]))
        item: dict[str, Any] = {
            "source_id": sid, "level": draw(st.sampled_from(["PARAGRAPH", "SECTION", None])),
            "tokens": draw(st.integers(0, 9)), "relevance": draw(st.sampled_from([0.5, 0.25, 1, None])),
            "value": 1, "content_sha256": draw(st.sampled_from(["h1", "h2"])),
            "decision": draw(st.sampled_from(["included", "excluded", "maybe"])),
            "reason": draw(st.sampled_from(["selected", "over_budget", "pinned", "capped", 3])),
            "rule": draw(st.sampled_from([None, "$.spec.budget", "$.spec.levels", ["x"], {"r": 1}])),
            "numbers": numbers}
        if isinstance(numbers, dict) and draw(st.booleans()):
            item["evidence"] = " ".join(f"{k} {v:,}" if isinstance(v, int) and not isinstance(v, bool)
                                        else f"{k} {v}" for k, v in numbers.items())
        else:
            item["evidence"] = draw(st.sampled_from(["part of the optimal selection", "needed 3, 2 left"]))
        for key in draw(st.lists(st.sampled_from(sorted(item)), max_size=2)):
            if key not in ("source_id", "reason"):
                item.pop(key, None)
        items.append(item)
    return {"schema_version": "1", "input": {"count": len(rows), "items": rows}, "items": items}


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(_records())
def test_compact_writes_what_the_previous_compact_wrote(record: dict[str, Any]) -> None:
    new, old = compact(record), old_compact(record)
    assert new == old
    assert repr(new) == repr(old)  # key order and types too
    assert expand(new) == expand(old)


def test_compact_of_every_kind_of_record_is_the_previous_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from auditcases import every_kind

    log = AuditLog(tmp_path / "kinds.jsonl", signer=None)
    every_kind(log, monkeypatch)
    for env in log:
        full = expand(env["record"])
        assert repr(compact(full)) == repr(old_compact(full))


def test_a_serving_process_freezes_its_start_up_objects_and_collects_young_ones_less_often() -> None:
    import gc

    from engine.service.run import GC_YOUNG_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0  # what was allocated until now is out of the collections
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
