"""Registries cover every rule: the compiler's by rule kind, the verifier's by schema rule."""

from __future__ import annotations

import json
from pathlib import Path

import engine
from engine.compile import RULE_COMPILERS
from engine.problem import RuleKind
from engine.reasons import ReasonCode
from engine.verify import CHECKERS

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "policy.schema.json").read_text())

#: spec keys that are settings, not rules an allocation can break.
SETTINGS = {"tokenizer", "custom_levels", "objective", "strategy", "solver", "ordering", "audit", "limits",
            "candidates"}


def test_every_rule_kind_has_a_compiler() -> None:
    assert set(RULE_COMPILERS) == set(RuleKind)


def test_every_rule_of_the_schema_has_a_checker() -> None:
    spec_keys = set(SCHEMA["properties"]["spec"]["properties"])
    rules = spec_keys - SETTINGS
    assert rules == {"budget", "min_relevance", "levels", "sources", "pinned", "blocked", "hierarchy",
                     "duplicates"}
    assert rules <= set(CHECKERS)
    # accounting: every candidate once; context: the text and its count; prefer_parent:
    # hierarchy.prefer_parent_ratio, checked apart from exclusivity; objective: the
    # items' values and the selection's total, recomputed from spec.objective.
    assert set(CHECKERS) - rules == {"accounting", "context", "prefer_parent", "objective"}


#: The verifier's checker for each rule kind the Problem builds (reduce), and for the
#: decisions reduce takes before any strategy runs.
CHECKER_OF = {
    RuleKind.BUDGET: "budget",
    RuleKind.LEVEL_MIN_ITEMS: "levels",
    RuleKind.LEVEL_MAX_ITEMS: "levels",
    RuleKind.LEVEL_MIN_TOKENS: "levels",
    RuleKind.LEVEL_MAX_TOKENS: "levels",
    RuleKind.SOURCE_MAX_ITEMS: "sources",
    RuleKind.SOURCE_MAX_TOKENS: "sources",
    RuleKind.PREFER_PARENT: "prefer_parent",
    RuleKind.PINNED: "pinned",
    RuleKind.HIERARCHY: "hierarchy",
    RuleKind.NEAR_DUPLICATE: "duplicates",
}
PRE_DECISION_CHECKER = {
    ReasonCode.BLOCKED: "blocked",
    ReasonCode.BELOW_MIN_RELEVANCE: "min_relevance",
    ReasonCode.TOO_LARGE: "budget",
}


def test_every_rule_kind_of_the_problem_has_a_checker() -> None:
    assert set(CHECKER_OF) == set(RuleKind)
    assert set(CHECKER_OF.values()) | set(PRE_DECISION_CHECKER.values()) <= set(CHECKERS)


def test_public_api_is_sorted_and_importable() -> None:
    assert engine.__all__ == sorted(engine.__all__)
    for name in engine.__all__:
        assert hasattr(engine, name), name
    public = {n for n in vars(engine) if not n.startswith("_")} - {
        # submodules are importable but not part of the flat API
        n for n, v in vars(engine).items() if type(v).__name__ == "module"}
    assert public == set(engine.__all__) - {"__version__"}
