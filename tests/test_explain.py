"""The infeasibility explainer: minimal only when proven, within the call's time limit,
the same core on every run."""

from __future__ import annotations

from typing import Any

import pytest
from ortools.sat.python import cp_model

from engine import BudgetStrategy, InfeasibleError, allocate
from engine.candidates import from_mappings
from engine.explain import infeasible_error, minimal_core
from engine.policy import Policy
from engine.problem import reduce
from engine.strategies import params


def pol(budget: int = 1000, time_limit_s: float = 2.0, **spec: Any) -> Policy:
    body = {"budget": {"max_tokens": budget, "separator": ""}, "strategy": "optimal",
            "solver": {"time_limit_s": time_limit_s}, **spec}
    return Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                "metadata": {"name": "t", "revision": "1"}, "spec": body})


def cand(sid: str, rel: float, tokens: int, level: str = "PARAGRAPH") -> dict[str, Any]:
    return {"source_id": sid, "content": f"text {sid}", "relevance_score": rel, "token_count": tokens,
            "level": level}


# Four minimums competing for one budget, plus rules that play no part in the conflict.
CANDS = [cand("terms", 0.1, 400, "DOCUMENT"), cand("s1", 0.9, 300, "SECTION"), cand("s2", 0.8, 300, "SECTION"),
         cand("p1", 0.5, 50), cand("p2", 0.4, 50), cand("x", 0.3, 5, "SENTENCE")]
SPEC: dict[str, Any] = {"pinned": [{"id": "terms"}],
                        "levels": {"SECTION": {"min_items": 2}, "PARAGRAPH": {"min_tokens": 100},
                                   "SENTENCE": {"max_items": 1}}}
CORE = ["budget", "levels.PARAGRAPH.min_tokens", "levels.SECTION.min_items", "pinned[terms]"]


def problem(time_limit_s: float = 2.0) -> Any:
    return reduce(pol(time_limit_s=time_limit_s, **SPEC), from_mappings((c, None) for c in CANDS))


def test_a_proven_core_is_minimal_and_the_same_on_every_run() -> None:
    first = minimal_core(problem())
    assert sorted(first[0]) == CORE and first[1] is True
    assert all(minimal_core(problem()) == first for _ in range(3))


def test_regression_a_timed_out_check_is_never_reported_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10: when the explainer's first check ran out of time, the core was reported
    `minimal: true`. Here every explainer check (the models with assumptions) comes back
    UNKNOWN, as a check cut by its limit does; the allocation model itself still proves
    infeasibility."""
    real = cp_model.CpSolver.solve

    def check_times_out(self: cp_model.CpSolver, model: cp_model.CpModel, *a: Any, **k: Any) -> Any:
        status = real(self, model, *a, **k)
        return cp_model.UNKNOWN if model.proto.assumptions else status

    monkeypatch.setattr(cp_model.CpSolver, "solve", check_times_out)
    with pytest.raises(InfeasibleError) as err:
        allocate(CANDS, pol(**SPEC))
    assert err.value.details["minimal"] is False
    keys = [c["key"] for c in err.value.details["core"]]
    assert set(CORE) <= set(keys)  # every rule is named: the conflict is among them
    assert err.value.message.endswith(
        "(the explanation stopped at the time limit of 2 s: this set conflicts but may not be minimal; "
        "raise solver.time_limit_s for a minimal one); relax one of them")


def test_no_time_left_means_every_rule_unproven() -> None:
    err = infeasible_error(problem(), time_limit_s=0.0)
    assert err.details["minimal"] is False
    assert set(CORE) <= {c["key"] for c in err.details["core"]}


def test_the_checks_share_one_deterministic_budget_made_of_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each check gets what is left of ``deterministic_limit(time_limit_s)`` (never more,
    never a fixed time per check) and at most the wall time left of the same limit."""
    seen: list[dict[str, Any]] = []
    real = params.parameters

    def spy(*a: Any, **k: Any) -> dict[str, Any]:
        out = real(*a, **k)
        seen.append(out)
        return out

    monkeypatch.setattr(params, "parameters", spy)
    core, proven = minimal_core(problem(time_limit_s=0.5))
    assert sorted(core) == CORE and proven is True
    limits = [p["max_deterministic_time"] for p in seen]
    assert len(seen) >= len(CORE) + 1  # the whole set, then one check per member
    assert limits[0] == params.deterministic_limit(0.5)
    assert limits == sorted(limits, reverse=True)  # each check spends from the same budget
    assert all(p["max_time_in_seconds"] <= 0.5 and p["num_workers"] == 1 for p in seen)


def test_a_tiny_deterministic_budget_stops_shrinking_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # A budget just big enough for the first check: the shrinking stops, unproven.
    monkeypatch.setattr(params, "DETERMINISTIC_SHARE", 1e-9)
    core, proven = minimal_core(problem())
    assert proven is False and set(CORE) <= set(core)


def test_the_call_limit_reaches_the_explainer() -> None:
    # A pin larger than the budget: every strategy raises, greedy without running CP-SAT.
    cands = [cand("terms", 0.1, 400), cand("p", 0.5, 10)]
    policy = pol(budget=300, pinned=[{"id": "terms"}])
    with pytest.raises(InfeasibleError) as err:
        allocate(cands, policy, strategy=BudgetStrategy.GREEDY)
    assert err.value.details["minimal"] is True
    assert [c["key"] for c in err.value.details["core"]] == ["budget", "pinned[terms]"]
    with pytest.raises(InfeasibleError) as err:
        allocate(cands, policy, strategy=BudgetStrategy.GREEDY, time_limit_s=0.0)
    assert err.value.details["minimal"] is False
