"""Issue 13 part 2: counting never eats the solver's time limit (``solver.time_limit_scope``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import pytest

from engine import BudgetItem, BudgetStrategy, PolicyError, allocate
from engine.decide import decide
from engine.policy import LevelRule, Policy, SolverSettings, TimeLimitScope
from engine.tokens import TiktokenCounter, get_tokenizer

SLEEP_S = 0.4
LIMIT_S = 0.25


class SlowCounter(TiktokenCounter):
    """The policy's real tokenizer, made slow: its first batch count sleeps (a loaded
    machine, a cold cache), every count stays exact."""

    def __init__(self) -> None:
        real = get_tokenizer()
        super().__init__(real.name, real.encoding)
        self.slept = False

    def count_many(self, texts: Sequence[str], hashes: Sequence[str] | None = None, *,
                   keys: Sequence[str] | None = None) -> list[int]:
        if not self.slept:
            self.slept = True
            time.sleep(SLEEP_S)
        return super().count_many(texts, hashes, keys=keys)


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> SlowCounter:
    counter = SlowCounter()
    # The module, not the function of the same name that ``engine.allocate`` stays bound to.
    monkeypatch.setattr(sys.modules["engine.allocate"], "policy_tokenizer", lambda _policy: counter)
    return counter


def items(n: int = 40) -> list[BudgetItem]:
    return [BudgetItem(f"chunk {k} " + "word " * (5 + k % 7), 0.3 + (k % 10) / 20, None, f"id{k}", "PARAGRAPH", {})
            for k in range(n)]


def policy(scope: TimeLimitScope, *, levels: bool = False) -> Policy:
    # ``levels``: a non-binding quota sends the problem to CP-SAT instead of the knapsack core.
    return Policy.default(150, separator="", strategy=BudgetStrategy.OPTIMAL,
                          solver=SolverSettings(time_limit_s=LIMIT_S, time_limit_scope=scope),
                          levels=(LevelRule("PARAGRAPH", max_items=1_000),) if levels else ())


@pytest.mark.parametrize("levels", [False, True], ids=["knapsack", "cp-sat"])
def test_regression_slow_counting_no_longer_turns_optimal_into_a_fallback(slow: SlowCounter, levels: bool) -> None:
    """Before: the limit started before counting, so a count slower than the limit left
    no time for the search and OPTIMAL fell back to a heuristic."""
    alloc = allocate(items(), policy(TimeLimitScope.SOLVE, levels=levels))
    assert slow.slept
    assert alloc.selection.status == "optimal"
    assert alloc.fallback_reason is None and alloc.strategy_used is BudgetStrategy.OPTIMAL
    assert alloc.timings["count_s"] >= SLEEP_S > LIMIT_S
    assert alloc.timings["reduce_s"] >= alloc.timings["count_s"]


def test_the_call_scope_keeps_the_whole_call_limit_and_the_record_says_so(slow: SlowCounter) -> None:
    decided = decide(items(), policy(TimeLimitScope.CALL, levels=True))
    alloc, record = decided.allocation, decided.record
    assert alloc.selection.status == "fallback"
    assert alloc.fallback_reason == (f"the time limit of {LIMIT_S:g} s was used up before the search could "
                                     "start (counting tokens and building the model)")
    assert record["solver"]["time_limit_scope"] == "call"
    assert record["solver"]["time_limit_s"] == LIMIT_S
    assert record["timings"]["count_s"] >= SLEEP_S
    assert record["policy"]["effective"]["spec"]["solver"]["time_limit_scope"] == "call"


def test_the_record_says_the_solve_scope_applied(slow: SlowCounter) -> None:
    record = decide(items(), policy(TimeLimitScope.SOLVE)).record
    assert record["solver"]["status"] == "optimal"
    assert record["solver"]["time_limit_scope"] == "solve"
    assert record["timings"]["count_s"] >= SLEEP_S
    assert record["policy"]["effective"]["spec"]["solver"]["time_limit_scope"] == "solve"


def _mapping(solver: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy", "metadata": {"name": "t", "revision": "1"},
            "spec": {"budget": {"max_tokens": 100}, "solver": solver}}


def test_the_scope_is_read_from_the_policy_and_defaults_to_solve() -> None:
    assert Policy.from_mapping(_mapping({})).solver.time_limit_scope is TimeLimitScope.SOLVE
    assert Policy.from_mapping(_mapping({"time_limit_scope": "call"})).solver.time_limit_scope is TimeLimitScope.CALL
    with pytest.raises(PolicyError) as err:
        Policy.from_mapping(_mapping({"time_limit_scope": "everything"}))
    assert err.value.path == "$.spec.solver.time_limit_scope"


def test_records_written_before_the_scope_existed_replay_under_the_whole_call_limit() -> None:
    effective = Policy.default(100).to_dict()
    del effective["spec"]["solver"]["time_limit_scope"]
    assert Policy.from_record(effective).solver.time_limit_scope is TimeLimitScope.CALL
