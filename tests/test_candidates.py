"""Candidate input as users really have it: NumPy scalars as numbers; datetime, date,
Decimal and UUID in metadata, written canonically in the audit record; no score coerced.

Each case runs through the three ways in: ``BudgetItem``s, candidate mappings and the
seed's ``TokenBudgetManager``."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import jsonschema
import numpy as np
import pytest

from engine import BudgetItem, BudgetStrategy, CandidateError, Policy, TokenBudgetManager, allocate
from engine.audit.replay import replay
from engine.canonical import canonical_bytes, plain_scalar
from engine.decide import decide

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "audit.schema.json").read_text())
POLICY = Policy.default(100, separator="", strategy=BudgetStrategy.OPTIMAL)


def as_item(sid: str, score: Any, tokens: Any, metadata: dict[str, Any] | None = None) -> BudgetItem:
    return BudgetItem(f"text {sid}", score, tokens, sid, "PARAGRAPH", metadata or {})


def as_mapping(sid: str, score: Any, tokens: Any, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"source_id": sid, "content": f"text {sid}", "relevance_score": score, "token_count": tokens,
            "metadata": metadata or {}}


def via_allocate(make: Callable[..., Any]) -> Callable[[list[tuple[Any, ...]]], set[str]]:
    def run(rows: list[tuple[Any, ...]]) -> set[str]:
        return {d.source_id for d in allocate([make(*row) for row in rows], POLICY).included}
    return run


def via_manager(rows: list[tuple[Any, ...]]) -> set[str]:
    out = TokenBudgetManager().optimize_for_budget([as_item(*row) for row in rows], 100,
                                                   strategy=BudgetStrategy.OPTIMAL)
    return {i.source_id for i in out.included}


WAYS_IN = {"BudgetItem": via_allocate(as_item), "mapping": via_allocate(as_mapping), "manager": via_manager}


# --------------------------------------------------------------------------- NumPy numbers

ROWS = [("a", 0.9, 60), ("b", 0.5, 30), ("c", 0.45, 30), ("d", 0.1, 5)]


@pytest.mark.parametrize("way", WAYS_IN)
@pytest.mark.parametrize("score_type,token_type", [(np.float32, np.int64), (np.float64, np.int32),
                                                   (np.float16, np.uint16)])
def test_regression_numpy_scalars_are_numbers(way: str, score_type: Any, token_type: Any) -> None:
    """Issue 10: a retriever's float32 score or an int64 count was refused ("must be a
    number, got float32"). They are numbers, taken at their exact value: the same choice
    as with the Python numbers."""
    plain = WAYS_IN[way](ROWS)
    numpy_rows = [(sid, score_type(score), token_type(tokens)) for sid, score, tokens in ROWS]
    assert WAYS_IN[way](numpy_rows) == plain


def test_a_numpy_score_keeps_its_exact_value_in_the_record() -> None:
    decided = decide([as_item("a", np.float32(0.9), np.int64(3))], POLICY)
    row = decided.record["input"]["items"][0]
    assert row["relevance_score"] == float(np.float32(0.9)) == 0.8999999761581421
    assert type(row["relevance_score"]) is float and type(row["token_count"]) is int
    jsonschema.validate(decided.record, SCHEMA)


@pytest.mark.parametrize("way", WAYS_IN)
@pytest.mark.parametrize("score,message", [
    ("0.9", "relevance_score must be a number, got str '0.9'"),
    (True, "relevance_score must be a number, got bool True"),
    (np.bool_(True), "relevance_score must be a number, got numpy.bool np.True_"),
    (Decimal("0.9"), "relevance_score is a Decimal (0.9); pass float(score) if rounding it to the nearest "
                     "binary float is what you want (ctxbudget never rounds a score for you)"),
    (np.float32("nan"), "relevance_score is nan; it must be a finite number (fix the retriever's score for "
                        "this item)"),
])
def test_nothing_silently_coerces_a_score(way: str, score: Any, message: str) -> None:
    with pytest.raises(CandidateError) as err:
        WAYS_IN[way]([("a", score, 3)])
    assert err.value.code == "candidate.bad_relevance" and err.value.path == "$[0].relevance_score"
    assert err.value.message == f"item 'a': {message}"


def test_a_numpy_float_wider_than_a_double_must_be_exact() -> None:
    wide = np.longdouble(1) / np.longdouble(3)
    if float(wide) == wide:  # platforms where longdouble is a double: nothing to refuse
        assert WAYS_IN["BudgetItem"]([("a", wide, 3)]) == {"a"}
        return
    with pytest.raises(CandidateError, match="a 64-bit float cannot hold exactly; convert it with float()"):
        WAYS_IN["BudgetItem"]([("a", wide, 3)])


@pytest.mark.parametrize("tokens,hint", [(np.float64(3.0), "got 3.0 (write 3)"),
                                         (np.bool_(True), "got np.True_"), ("3", "got '3'")])
def test_token_counts_must_be_whole_numbers(tokens: Any, hint: str) -> None:
    with pytest.raises(CandidateError) as err:
        WAYS_IN["mapping"]([("a", 0.5, tokens)])
    assert err.value.code == "candidate.bad_token_count"
    assert err.value.message == f"item 'a': token_count must be a whole number >= 0, {hint}"


# --------------------------------------------------------------------------- metadata types

PLUS_TWO = timezone(timedelta(hours=2))
META = {
    "published": datetime(2024, 3, 1, 14, 30, 5, 250, tzinfo=PLUS_TWO),
    "fetched": datetime(2024, 3, 1, 9, 0),
    "day": date(2024, 3, 1),
    "price": Decimal("9.90"),
    "doc_uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested": {"rank": np.int64(2), "weights": [np.float32(0.5), np.bool_(False)], "seen": [date(2024, 1, 2)]},
}
CANONICAL = {
    "published": "2024-03-01T12:30:05.000250Z",
    "fetched": "2024-03-01T09:00:00",
    "day": "2024-03-01",
    "price": "9.90",
    "doc_uuid": "12345678-1234-5678-1234-567812345678",
    "nested": {"rank": 2, "weights": [0.5, False], "seen": ["2024-01-02"]},
}


@pytest.mark.parametrize("make", [as_item, as_mapping], ids=["BudgetItem", "mapping"])
def test_regression_dates_decimals_and_uuids_in_metadata_are_written_canonically(make: Any) -> None:
    """Issue 10: datetime, date, Decimal and UUID in metadata were refused ("only JSON
    values are allowed"). They are accepted and the audit record holds their canonical
    JSON form; the record validates, hashes, and replays to the same decision."""
    decided = decide([make("a", 0.9, 3, dict(META)), make("b", 0.5, 3)], POLICY)
    assert decided.record["input"]["items"][0]["metadata"] == CANONICAL
    jsonschema.validate(decided.record, SCHEMA)
    canonical_bytes(decided.record)  # RFC 8785 accepts every value (it raised on repr'd types before)
    assert replay(decided.record).identical


def pin_policy(budget: int) -> Policy:
    return Policy.from_mapping({
        "apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy", "metadata": {"name": "t", "revision": "1"},
        "spec": {"budget": {"max_tokens": budget, "separator": ""}, "pinned": [{"metadata": {"day": "2024-03-01"}}]}})


def test_metadata_types_through_the_manager() -> None:
    item = as_item("a", 0.9, 3, dict(META))
    out = TokenBudgetManager().optimize_for_budget([item, as_item("b", 0.5, 3)], 50,
                                                   strategy=BudgetStrategy.OPTIMAL)
    assert out.included[0] is item and item.metadata == META  # the caller's object, untouched
    pinned = TokenBudgetManager(policy=pin_policy(10)).allocate(
        [as_item("low", 0.01, 8, {"day": date(2024, 3, 1)}), as_item("high", 0.9, 8)])
    assert [i.source_id for i in pinned.included] == ["low"]


def test_a_metadata_pin_matches_the_canonical_form_in_engine_and_verifier() -> None:
    """Rules see what the record shows: a pin on `day: "2024-03-01"` holds for a candidate
    whose metadata is date(2024, 3, 1); the verifier agrees (allocate runs it)."""
    alloc = allocate([as_mapping("low", 0.01, 8, {"day": date(2024, 3, 1)}), as_mapping("high", 0.9, 8)],
                     pin_policy(10))
    assert [d.source_id for d in alloc.included] == ["low"]


@pytest.mark.parametrize("value,why", [
    (Decimal("NaN"), "is Decimal('NaN'); only finite numbers are allowed"),
    (np.float32("inf"), "is inf; only finite numbers are allowed"),
    (np.int64(2**60), f"is {2**60}, beyond ±2^53 (not exact in JSON); store it as a string"),
    (object(), "has a object value; only JSON values (and datetime, date, time, Decimal, UUID or NumPy "
               "scalars, written as strings and numbers) are allowed"),
])
def test_metadata_that_has_no_exact_json_form_is_refused(value: Any, why: str) -> None:
    with pytest.raises(CandidateError) as err:
        WAYS_IN["BudgetItem"]([("a", 0.5, 3, {"x": value})])
    assert err.value.code == "candidate.bad_metadata" and err.value.path == "$[0].metadata.x"
    assert err.value.message == f"item 'a': metadata.x {why}"


def test_plain_scalar_is_one_string_per_instant() -> None:
    instant = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
    assert plain_scalar(instant) == plain_scalar(instant.astimezone(PLUS_TWO)) == "2024-03-01T12:00:00Z"
    assert plain_scalar("text") == "text" and plain_scalar(3) == 3


def test_the_manager_takes_a_numpy_budget_and_minimum() -> None:
    items = [as_item(sid, score, tokens) for sid, score, tokens in ROWS]
    plain = TokenBudgetManager().optimize_for_budget(items, 100, min_relevance=0.2)
    out = TokenBudgetManager().optimize_for_budget(items, np.int64(100), min_relevance=np.float32(0.2))
    assert out.budget_limit == 100 and type(out.budget_limit) is int
    assert [i.source_id for i in out.included] == [i.source_id for i in plain.included]
    with pytest.raises(CandidateError, match="token_budget must be a whole number > 0, got 100.5"):
        TokenBudgetManager().optimize_for_budget(items, np.float64(100.5))
