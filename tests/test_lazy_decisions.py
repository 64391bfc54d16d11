"""Issue 13 part 1: an allocation's decisions are columns; the ItemDecision of an item,
and the reason an item was left out (the first rule it would break), are built only when
asked for — with the content they always had."""

from __future__ import annotations

import dataclasses
import random

import pytest

from engine import allocate
from engine import allocation as allocation_module
from engine.allocation import Decisions, ItemDecision
from engine.feasibility import Filler
from engine.policy import Policy
from engine.reasons import ReasonCode


def _items(n: int = 400, seed: int = 3) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [{"source_id": f"s{i}", "content": "x" * rng.randint(1, 9), "token_count": rng.randint(10, 300),
             "relevance_score": rng.random()} for i in range(n)]


def _policy(items: list[dict[str, object]]) -> Policy:
    return Policy.default(max_tokens=sum(int(x["token_count"]) for x in items) // 5)  # type: ignore[call-overload]


def test_allocate_and_its_verifier_build_no_exclusion_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Filler] = []
    real = allocation_module.Filler

    def counting(problem):  # type: ignore[no-untyped-def]
        f = real(problem)
        built.append(f)
        return f

    monkeypatch.setattr(allocation_module, "Filler", counting)
    items = _items()
    a = allocate(items, _policy(items))  # verifier on
    assert isinstance(a.decisions, Decisions) and built == []
    out = a.excluded
    assert len(built) == 1 and out and all(not d.included for d in out)
    assert {d.reason.code for d in out} <= {ReasonCode.OVER_BUDGET, ReasonCode.NOT_SELECTED, ReasonCode.ZERO_VALUE}


def test_lazy_reasons_are_the_eager_ones() -> None:
    """Each excluded item's reason is the filler's first blocker against the final chosen
    set (else zero value / not selected), as the eager build computed it."""
    items = _items(seed=5)
    a = allocate(items, _policy(items))
    every = list(a.decisions)  # materialise every decision
    chosen = {d.index for d in every if d.included}
    assert chosen == set(a.context_order)
    over = [d for d in every if d.reason.code is ReasonCode.OVER_BUDGET]
    assert over, "a tight budget leaves items over it"
    used = a.budgeted_tokens
    for d in over:
        assert d.reason.numbers["needed"] == d.tokens
        assert d.reason.evidence == (f"needed {d.tokens:,} tokens, {d.reason.numbers['left']:,} left of "
                                     f"{a.limit_tokens:,}")
        # What is left of the budget once the chosen items (and a separator) are in: too little.
        assert 0 <= d.reason.numbers["left"] <= a.limit_tokens - used
        assert d.reason.numbers["left"] < d.tokens


def test_decisions_read_like_the_tuple_they_stand_for() -> None:
    items = _items(50)
    a = allocate(items, _policy(items))
    d = a.decisions
    eager = tuple(d)
    assert all(isinstance(x, ItemDecision) for x in eager)
    assert len(d) == 50 and d == eager and eager == d and d == list(eager)
    assert d[-1] is eager[-1] and d[0] is eager[0]
    assert d[10:13] == eager[10:13] and isinstance(d[10:13], tuple) and d[::-1] == eager[::-1]
    with pytest.raises(IndexError):
        d[50]
    assert [x.index for x in d] == list(range(50))
    assert a.included == tuple(eager[i] for i in a.context_order)
    # An allocation with decisions replaced by a plain tuple compares equal to the original.
    assert dataclasses.replace(a, decisions=eager) == a
    assert repr(d) == repr(eager)


def test_reason_of_is_the_decisions_reason_without_building_it() -> None:
    """``Decisions.reason_of(i)`` (what replay compares) is ``decisions[i].reason``, before
    and after the decision is built, and asking for it builds no ItemDecision."""
    items = _items(seed=11)
    a = allocate(items, _policy(items))
    fresh = allocate(items, _policy(items)).decisions
    assert isinstance(a.decisions, Decisions) and isinstance(fresh, Decisions)
    reasons = [a.decisions.reason_of(i) for i in range(len(items))]
    assert all(d is None for d in a.decisions._items)  # nothing built by reason_of
    assert reasons == [fresh[i].reason for i in range(len(items))]
    assert [a.decisions.reason_of(i) for i in range(len(items))] == [d.reason for d in a.decisions]
    assert {r.code for r in reasons} >= {ReasonCode.OVER_BUDGET}
