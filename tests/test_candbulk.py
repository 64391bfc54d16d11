"""The bulk candidate check (engine/candbulk.py) against the per-item validator.

For every input — good ones with every accepted type, and a corpus of bad ones (the
cases of test_candidates, test_spec_contract and the fuzz corpus, each alone and two of
them in one batch) — the bulk path must give the candidates the per-item path gives,
field for field and type for type, or the error the per-item path raises: the same code,
path, message, location and details, for the same item first.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import candbulk
from engine.allocate import _check_limits, to_candidates
from engine.candidates import (BudgetItem, Candidate, _budget_items_one_by_one, _mappings_one_by_one,
                               from_budget_items, from_mappings)
from engine.errors import CandidateError, Location
from engine.policy import Limits, Policy
from engine.retrieval.index import IndexLevel

SURROGATE = "bad \ud800 text"


def good(k: int, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"source_id": f"id{k}", "content": f"text {k}", "relevance_score": 0.5 + k / 100,
                           "token_count": 3 + k}
    row.update(extra)
    return row


#: Rows the validator accepts, each exercising a type or shape the bulk path must convert
#: exactly as the per-item path does.
ACCEPTED: dict[str, dict[str, Any]] = {
    "plain": {},
    "int score": {"relevance_score": 1},
    "negative score": {"relevance_score": -0.25},
    "float32 score": {"relevance_score": np.float32(0.9)},
    "float64 score": {"relevance_score": np.float64(0.3)},
    "int64 count": {"token_count": np.int64(7)},
    "uint16 count": {"token_count": np.uint16(7)},
    "no count": {"token_count": None},
    "zero count": {"token_count": 0},
    "unicode id": {"source_id": "über-1"},
    "unicode content": {"content": "naïve café ☕"},
    "empty content": {"content": ""},
    "unicode level": {"level": "ÉBENE"},
    "sentence": {"level": "SENTENCE"},
    "flat metadata": {"metadata": {"doc_id": "d1", "page": 3, "w": 0.5, "ok": True, "none": None}},
    "unicode metadata": {"metadata": {"titre": "été"}},
    "nested metadata": {"metadata": {"tags": ["a", "b"], "more": {"x": 1}}},
    "canonical metadata": {"metadata": {"when": datetime(2024, 3, 1, tzinfo=timezone.utc), "day": date(2024, 1, 2),
                                        "price": Decimal("9.90"), "uid": uuid.UUID(int=5),
                                        "rank": np.int64(2), "f": np.float32(0.5)}},
    "empty metadata": {"metadata": {}},
    "null metadata": {"metadata": None},
    "parent in row": {"parent_id": "id0"},
    "parent in metadata": {"metadata": {"parent_id": "id0"}},
    "ancestors": {"metadata": {"ancestors": ["id0", "root"]}},
    "max count": {"token_count": 1_000_000_000_000},
    "big int score": {"relevance_score": 10**300},
}

#: Rows the validator refuses (test_candidates, test_spec_contract, the fuzz corpus).
REFUSED: dict[str, dict[str, Any]] = {
    "str score": {"relevance_score": "0.9"},
    "bool score": {"relevance_score": True},
    "numpy bool score": {"relevance_score": np.bool_(True)},
    "decimal score": {"relevance_score": Decimal("0.9")},
    "nan score": {"relevance_score": float("nan")},
    "inf score": {"relevance_score": float("inf")},
    "float32 nan score": {"relevance_score": np.float32("nan")},
    "huge int score": {"relevance_score": 10**400},
    "null score": {"relevance_score": None},
    "float count": {"token_count": 2.5},
    "whole float count": {"token_count": 3.0},
    "numpy float count": {"token_count": np.float64(3.0)},
    "numpy bool count": {"token_count": np.bool_(True)},
    "str count": {"token_count": "3"},
    "negative count": {"token_count": -3},
    "count too large": {"token_count": 10**13},
    "empty id": {"source_id": ""},
    "null id": {"source_id": None},
    "int id": {"source_id": 5},
    "surrogate id": {"source_id": SURROGATE},
    "duplicate id": {"source_id": "id0"},
    "null content": {"content": None},
    "int content": {"content": 5},
    "surrogate content": {"content": SURROGATE},
    "null level": {"level": None},
    "empty level": {"level": ""},
    "int level": {"level": 5},
    "surrogate level": {"level": SURROGATE},
    "list metadata": {"metadata": ["a"]},
    "str metadata": {"metadata": "a"},
    "unsafe int metadata": {"metadata": {"n": 2**53}},
    "nan metadata": {"metadata": {"x": float("nan")}},
    "non-string key": {"metadata": {1: "a"}},
    "surrogate metadata": {"metadata": {"t": SURROGATE}},
    "surrogate key": {"metadata": {SURROGATE: 1}},
    "object in metadata": {"metadata": {"x": object()}},
    "deep metadata": {"metadata": {"x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}},
    "self parent": {"parent_id": "SELF"},
    "empty parent": {"parent_id": ""},
    "int parent": {"parent_id": 5},
    "int parent in metadata": {"metadata": {"parent_id": 5}},
    "self parent in metadata": {"metadata": {"parent_id": "SELF"}},
    "self in ancestors": {"metadata": {"ancestors": ["root", "SELF"]}},
}


def row(k: int, change: dict[str, Any]) -> dict[str, Any]:
    out = good(k, **change)
    for key in ("parent_id",):
        if out.get(key) == "SELF":
            out[key] = out["source_id"]
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta = dict(meta)
        if meta.get("parent_id") == "SELF":
            meta["parent_id"] = out["source_id"]
        if isinstance(meta.get("ancestors"), list):
            meta["ancestors"] = [out["source_id"] if a == "SELF" else a for a in meta["ancestors"]]
        out["metadata"] = meta
    return out


def outcome(fn: Any, arg: Any) -> Any:
    """What ``fn(arg)`` gives: each candidate with its fields' types, or the error in full."""
    try:
        cands = fn(arg)
    except CandidateError as exc:
        return ("error", exc.to_dict(), exc.details)
    return ("ok", [(c, [type(getattr(c, f.name)) for f in dataclasses.fields(c)]) for c in cands])


def mapping_rows(batch: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Location]]:
    return [(r, Location("c.jsonl", k + 1)) for k, r in enumerate(batch)]


def budget_items(batch: list[dict[str, Any]]) -> list[BudgetItem]:
    return [BudgetItem(r["content"], r["relevance_score"], r["token_count"], r["source_id"],
                       r.get("level", "PARAGRAPH"), r.get("metadata")) for r in batch if "parent_id" not in r]


def assert_same(batch: list[dict[str, Any]]) -> Any:
    rows = mapping_rows(batch)
    fast = outcome(from_mappings, rows)
    assert fast == outcome(_mappings_one_by_one, rows)
    items = budget_items(batch)
    assert outcome(from_budget_items, items) == outcome(_budget_items_one_by_one, items)
    return fast


CASES = {**{f"ok: {k}": v for k, v in ACCEPTED.items()}, **{f"bad: {k}": v for k, v in REFUSED.items()}}


@pytest.mark.parametrize("change", CASES.values(), ids=CASES.keys())
def test_one_case_among_good_rows(change: dict[str, Any]) -> None:
    result = assert_same([good(0), row(1, change), good(2)])
    assert result[0] == ("error" if any(change is v for v in REFUSED.values()) else "ok")


def test_every_accepted_case_in_one_batch_takes_the_bulk_path() -> None:
    batch = [good(0)] + [row(k + 1, change) for k, change in enumerate(ACCEPTED.values())
                         if "source_id" not in change]
    rows = mapping_rows(batch)
    fast = candbulk.bulk_candidates(*columns(rows))
    assert fast is not None and fast == _mappings_one_by_one(rows)


def columns(rows: list[tuple[dict[str, Any], Location]]) -> tuple[list[Any], ...]:
    maps = [r for r, _ in rows]
    return ([r.get("source_id") for r in maps], [r.get("content") for r in maps],
            [r.get("relevance_score") for r in maps], [r.get("token_count") for r in maps],
            [r.get("level", "PARAGRAPH") for r in maps], [r.get("metadata") for r in maps],
            [r.get("parent_id") for r in maps], [loc for _, loc in rows])


@pytest.mark.parametrize("first,second", list(itertools.combinations(sorted(REFUSED), 2))[::7])
def test_the_first_bad_item_is_the_one_reported(first: str, second: str) -> None:
    """Two bad items: the error is the earlier one's, as item-by-item validation finds it."""
    batch = [good(0), row(1, REFUSED[first]), good(2), row(3, REFUSED[second])]
    assert assert_same(batch)[0] == "error"
    assert assert_same(batch[::-1])[0] == "error"


def test_enum_levels_and_subclasses_are_validated_like_before() -> None:
    items = [BudgetItem("a", 0.5, 3, "a", IndexLevel.SENTENCE, {}),  # type: ignore[arg-type]
             BudgetItem("b", 0.4, 3, "b", "PARAGRAPH", {})]
    assert outcome(from_budget_items, items) == outcome(_budget_items_one_by_one, items)
    assert from_budget_items(items)[0].level == "SENTENCE"

    class Item(BudgetItem):
        pass

    sub = [Item("a", 0.5, 3, "a", "PARAGRAPH", {}), BudgetItem("b", 0.4, "3", "b", "P", {})]  # type: ignore[arg-type]
    assert outcome(from_budget_items, sub) == outcome(_budget_items_one_by_one, sub)
    mixed: list[Any] = [BudgetItem("a", 0.5, 3, "a", "P", {}), {"source_id": "b"}]
    assert outcome(from_budget_items, mixed) == outcome(_budget_items_one_by_one, mixed)


def test_the_bulk_path_writes_every_candidate_field() -> None:
    assert candbulk.FIELDS == tuple(f.name for f in dataclasses.fields(Candidate))


def test_metadata_is_a_snapshot() -> None:
    meta = {"doc_id": "d"}
    item = BudgetItem("a", 0.5, 3, "a", "P", meta)
    cand = from_budget_items([item])[0]
    meta["doc_id"] = "changed"
    assert cand.metadata["doc_id"] == "d" and cand.doc_id == "d"
    with pytest.raises(TypeError):
        cand.metadata["doc_id"] = "x"  # type: ignore[index]


def test_candidates_in_and_mixed_inputs() -> None:
    cands = from_mappings(mapping_rows([good(0), good(1)]))
    assert to_candidates(cands) == cands and to_candidates(iter(cands)) == cands
    with pytest.raises(CandidateError) as err:
        to_candidates([cands[0], good(1)])
    assert err.value.message == "candidates must all be BudgetItem, Candidate or mappings; got Candidate, dict"


@pytest.mark.parametrize("content,size", [("x" * 41, 41), ("é" * 21, 42), ("☕" * 14, 42), ("😀" * 11, 44)])
def test_item_size_limit_counts_utf8_bytes(content: str, size: int) -> None:
    policy = Policy.default(100, limits=Limits(max_item_bytes=40))
    cands = to_candidates([good(0), good(1, content=content)])
    with pytest.raises(CandidateError) as err:
        _check_limits(policy, cands)
    assert (err.value.code, err.value.path) == ("candidate.too_large", "$[1].content")
    assert err.value.message == (f"item 'id1' has {size:,} bytes of content, over limits.max_item_bytes=40; "
                                 "split it or raise the limit")
    _check_limits(policy, to_candidates([good(0), good(1, content=content[: 40 // 4])]))


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**60, 2**60), st.floats(), st.text(max_size=4),
                   st.decimals(allow_nan=True), st.lists(st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({
    "source_id": st.one_of(st.sampled_from(["a", "b", "c", ""]), VALUES),
    "content": st.one_of(st.text(max_size=5), VALUES),
    "relevance_score": VALUES,
    "token_count": VALUES,
    "level": st.one_of(st.sampled_from(["PARAGRAPH", "SENTENCE"]), VALUES),
    "metadata": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), VALUES, max_size=3), VALUES),
    "parent_id": st.one_of(st.none(), st.sampled_from(["a", "b"]), VALUES),
}), max_size=4))
def test_property_bulk_equals_one_by_one(batch: list[dict[str, Any]]) -> None:
    rows = mapping_rows(batch)
    assert outcome(from_mappings, rows) == outcome(_mappings_one_by_one, rows)
