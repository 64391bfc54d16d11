"""engine.policy: building, semantic checks, extends, defaults, rendering and digests.

Golden error files live in tests/golden/errors/policy_<fixture>.txt, one issue per line
(``code<TAB>file:line:col: $.path: message``). Regenerate on purpose with
``CTXBUDGET_UPDATE_GOLDEN=1 pytest tests/test_policy.py`` and review the diff like code.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from engine.errors import Location, PolicyError
from engine.extends import resolve_extends
from engine.load import load_yaml_text
from engine.policy import (
    BUILTIN_LEVELS,
    DEFAULT_OBJECTIVE,
    AuditSettings,
    Budget,
    BudgetStrategy,
    Fallback,
    GroupBy,
    Hierarchy,
    LevelRule,
    Limits,
    Matcher,
    Objective,
    Ordering,
    Policy,
    SolverLog,
    SolverSettings,
    SourceRule,
    Transform,
    load_policy,
    render_policy,
)

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
GOLDEN = Path(__file__).parent / "golden" / "errors"
MINIMAL: dict[str, Any] = {
    "apiVersion": "ctxbudget/v1",
    "kind": "BudgetPolicy",
    "metadata": {"name": "m", "revision": "1"},
    "spec": {"budget": {"max_tokens": 1000}},
}


@pytest.fixture
def in_fixtures(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the fixture folder so locations name files as bare names (stable goldens)."""
    monkeypatch.chdir(FIXTURES)
    return FIXTURES


def policy_with(**spec: Any) -> dict[str, Any]:
    """MINIMAL with ``spec`` keys set (budget keys merged; a None budget value removes it)."""
    data = copy.deepcopy(MINIMAL)
    for key, value in spec.items():
        if key == "budget":
            data["spec"]["budget"].update(value)
            data["spec"]["budget"] = {k: v for k, v in data["spec"]["budget"].items() if v is not None}
        else:
            data["spec"][key] = value
    return data


def semantic_codes(data: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping(data)
    return [issue.code for issue in info.value.issues]


# --------------------------------------------------------------------------- golden errors

GOLDEN_CASES = [
    "unknown_key", "duplicate_key", "wrong_type", "yaml11_boolean", "multiple_documents", "alias_bomb", "nan",
    "extends_outside", "cycle_a", "extends_missing", "many_issues", "semantic", "child_of_typo",
]


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_error(name: str, in_fixtures: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(f"{name}.yaml")
    got = "".join(f"{issue.code}\t{issue.render_one()}\n" for issue in info.value.issues)
    golden = GOLDEN / f"policy_{name}.txt"
    if os.environ.get("CTXBUDGET_UPDATE_GOLDEN"):
        golden.write_text(got, encoding="utf-8")
    assert got == golden.read_text(encoding="utf-8")


def test_golden_files_have_no_strays() -> None:
    expected = {f"policy_{name}.txt" for name in GOLDEN_CASES}
    assert {path.name for path in GOLDEN.iterdir()} == expected


# --------------------------------------------------------------------------- building


def test_full_policy_is_typed(in_fixtures: Path) -> None:
    policy = load_policy("full.yaml")
    assert (policy.api_version, policy.kind, policy.name, policy.product, policy.revision, policy.owner) == (
        "ctxbudget/v1", "BudgetPolicy", "support", "helpdesk", "7", "search-team"
    )
    assert policy.description == "Support answers with refund terms always included."
    assert policy.budget == Budget(None, 8192, 1024, 512, "[{source_id}] {content}", "\n\n")
    assert policy.budget.limit_tokens == 8192 - 1024 - 512
    assert policy.min_relevance == 0.2
    assert policy.levels == (
        LevelRule("CHUNK", max_items=5),
        LevelRule("SECTION", 0, 3, 0, 2000, 0.5, 0.3),
    )
    assert policy.level("SECTION") is policy.levels[1]
    assert policy.level("DOCUMENT") is None
    assert policy.custom_levels == ("CHUNK",)
    assert policy.known_levels == (*BUILTIN_LEVELS, "CHUNK")
    assert policy.sources == SourceRule(GroupBy.PREFIX, "#", None, 3, 2000)
    assert [m.path for m in policy.pinned] == ["$.spec.pinned[0]", "$.spec.pinned[1]", "$.spec.pinned[2]"]
    assert policy.pinned[2] == Matcher("metadata", None, None, (("kind", "disclaimer"),), None, "$.spec.pinned[2]")
    assert policy.blocked[0].reason == "PII never leaves the boundary"
    assert policy.hierarchy == Hierarchy(True, 0.75)
    assert policy.objective == Objective(Transform.POWER, 2.0, 60)  # written: the other keys take the base values
    assert policy.strategy is BudgetStrategy.BALANCED
    assert policy.solver == SolverSettings(0.5, 2, 7, Fallback.ERROR, 0.01, SolverLog.HASH)
    assert policy.ordering is Ordering.LOST_IN_THE_MIDDLE
    assert policy.audit == AuditSettings("audit/support.jsonl", True)
    assert policy.limits == Limits(1000, 4096)
    assert policy.file == "full.yaml"


def test_defaults_when_absent(in_fixtures: Path) -> None:
    policy = load_policy("minimal.yaml")
    assert policy.tokenizer == "cl100k_base"
    assert policy.budget == Budget(max_tokens=8000, template="{content}", separator="\n\n")
    assert (policy.min_relevance, policy.levels, policy.custom_levels, policy.sources) == (0.0, (), (), None)
    assert (policy.pinned, policy.blocked) == ((), ())
    # Defaults chosen from the HotpotQA benchmark (README, 'Quality'): hierarchy on, score squared.
    assert policy.hierarchy == Hierarchy(True, None)
    assert policy.objective == DEFAULT_OBJECTIVE  # chosen by bench/robustness.py (issue 11)
    assert policy.strategy is BudgetStrategy.OPTIMAL
    assert policy.solver == SolverSettings(2.0, 1, 0, Fallback.GREEDY, 0.0, SolverLog.HASH)
    assert policy.ordering is Ordering.RELEVANCE
    assert policy.audit == AuditSettings(None, False)
    assert policy.limits == Limits(200_000, 10_485_760)
    assert (policy.product, policy.owner, policy.description) == (None, None, None)


def test_enums_are_the_yaml_strings_and_keep_the_seed_order() -> None:
    assert [s.name for s in BudgetStrategy] == ["GREEDY", "BALANCED", "OPTIMAL", "DENSITY"]
    assert [s.value for s in BudgetStrategy] == ["greedy", "balanced", "optimal", "density"]
    assert Transform("reciprocal_rank") is Transform.RECIPROCAL_RANK
    assert Ordering("lost_in_the_middle") is Ordering.LOST_IN_THE_MIDDLE


def test_policy_and_parts_are_frozen(in_fixtures: Path) -> None:
    policy = load_policy("full.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.effective["spec"]["strategy"] = "greedy"  # type: ignore[index]
    assert isinstance(policy.effective["spec"]["pinned"], tuple)
    assert policy.to_dict()["spec"]["pinned"][0] == {"id": "refund-terms", "required": True}
    assert not hasattr(policy, "__dict__")


def test_location_of_finds_the_nearest_ancestor(in_fixtures: Path) -> None:
    policy = load_policy("full.yaml")
    assert policy.location_of("$.spec.levels.SECTION.share") == Location("full.yaml", 20, 76)
    assert policy.location_of("$.spec.pinned[1]") == Location("full.yaml", 30, 7)
    assert policy.location_of("$.spec.budget.nothing") == Location("full.yaml", 12, 3)
    assert Policy.default(10).location_of("$.spec") is None


def test_matcher_semantics() -> None:
    by_id = Matcher("id", "refund-terms", None, (), None, "$.spec.pinned[0]")
    by_glob = Matcher("glob", None, "legal-*", (), None, "$.spec.pinned[1]")
    by_meta = Matcher("metadata", None, None, (("kind", "disclaimer"), ("pii", True), ("v", 1)), None, "$.p")
    assert by_id.matches("refund-terms", {}) and not by_id.matches("refund-terms-2", {})
    assert by_glob.matches("legal-eu", {}) and not by_glob.matches("LEGAL-eu", {})
    assert by_meta.matches("x", {"kind": "disclaimer", "pii": True, "v": 1.0, "other": 3})
    assert not by_meta.matches("x", {"kind": "disclaimer", "pii": 1, "v": 1})
    assert not by_meta.matches("x", {"kind": "disclaimer", "pii": True, "v": True})
    assert not by_meta.matches("x", {"kind": "disclaimer", "pii": True})
    assert not by_meta.matches("x", {"kind": "disclaimer", "pii": True, "v": "1"})
    assert (by_id.label, by_glob.label, by_meta.label) == (
        "id 'refund-terms'", "glob 'legal-*'", "metadata {kind: 'disclaimer', pii: true, v: 1}"
    )


def test_null_metadata_matches_only_null() -> None:
    matcher = Matcher("metadata", None, None, (("team", None),), None, "$.p")
    assert matcher.matches("x", {"team": None})
    assert not matcher.matches("x", {}) and not matcher.matches("x", {"team": ""})


def test_objective_weights() -> None:
    assert Objective(Transform.IDENTITY).weight(0.4, 3) == 0.4
    assert Objective().weight(0.5, 3) == 0.25  # the default: power 2
    assert Objective(Transform.POWER, 2.0).weight(0.5, 1) == 0.25
    assert Objective(Transform.POWER, 2.0).weight(-0.5, 1) == 0.0
    assert Objective(Transform.RECIPROCAL_RANK, k=60).weight(0.9, 1) == 1 / 61
    with pytest.raises(ValueError):
        Objective(Transform.RECIPROCAL_RANK).weight(0.9, 0)


def test_budget_render_item_and_limit() -> None:
    budget = Budget(max_tokens=10, template="[{source_id}|{level}] {content}")
    assert budget.render_item(source_id="a", content="text", level="SECTION") == "[a|SECTION] text"
    with pytest.raises(ValueError):
        _ = Budget().limit_tokens


def test_from_mapping_refuses_extends() -> None:
    data = dict(MINIMAL, extends="base.yaml")
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping(data)
    assert (info.value.code, info.value.path) == ("policy.extends_unresolved", "$.extends")


def test_from_mapping_runs_the_schema_first() -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping(policy_with(strategy="fast", budget={"max_tokens": "x"}, hierarchy={"prefer_parent_ratio": 0.5}))
    # Schema issues only: the semantic checks run on schema-valid input.
    assert [issue.code for issue in info.value.issues] == ["policy.bad_value", "policy.wrong_type"]


# --------------------------------------------------------------------------- semantic checks


@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        ({"budget": {"max_tokens": None}}, "budget_missing", None),
        ({"budget": {"context_window": 4000}}, "budget_conflict", None),
        ({"budget": {"max_tokens": None, "context_window": 1000, "reserve_output": 600, "reserve_prompt": 400}},
         "reserves_exceed_window",
         "reserve_output + reserve_prompt (600 + 400) must be less than context_window (1000); lower the reserves "
         "or raise context_window"),
        ({"budget": {"reserve_prompt": 10}}, "reserves_without_window",
         "reserve_prompt only applies with context_window; remove it, or replace max_tokens with context_window"),
        ({"levels": {"SECTION": {"min_items": 3, "max_items": 1}}}, "level_items_range", None),
        ({"levels": {"SECTION": {"min_tokens": 30, "max_tokens": 10}}}, "level_tokens_range", None),
        ({"levels": {"SECTION": {"min_tokens": 600}, "PARAGRAPH": {"min_tokens": 401}}},
         "level_min_tokens_exceed_budget", None),
        ({"levels": {"SECTION": {"share": 0.5}, "PARAGRAPH": {"share": 0.6}}}, "shares_exceed_one", None),
        ({"levels": {"CHAPTER": {}}}, "unknown_level",
         "unknown level 'CHAPTER'; known levels: DOCUMENT, SECTION, PARAGRAPH, SENTENCE (declare new ones in "
         "spec.custom_levels)"),
        ({"custom_levels": ["DOCUMENT"]}, "custom_level_builtin", None),
        ({"budget": {"template": "[{source_id}]"}}, "template_missing_content",
         "template has no {content}, so the items' text would never reach the prompt; add it, e.g. "
         "'[{source_id}] {content}'"),
        ({"budget": {"template": "{content} {score}"}}, "template_placeholder", None),
        ({"budget": {"template": "{content} {}"}}, "template_placeholder", None),
        ({"budget": {"template": "{content:>10}"}}, "template_placeholder", None),
        ({"budget": {"template": "{content} }"}}, "template_syntax",
         "template has unbalanced braces (Single '}' encountered in format string); write a literal brace as "
         "'{{' or '}}'"),
        ({"hierarchy": {"exclusive": False, "prefer_parent_ratio": 0.5}}, "prefer_parent_needs_exclusive", None),
        ({"sources": {"group_by": "metadata"}}, "group_field_missing", None),
        ({"pinned": [{"glob": "a*"}], "blocked": [{"glob": "a*"}]}, "pinned_and_blocked",
         "glob 'a*' is both pinned ($.spec.pinned[0]) and blocked; remove it from one of the lists"),
        ({"pinned": [{"id": "z"}, {"metadata": {"pii": True, "a": 1}}], "blocked": [{"metadata": {"a": 1, "pii": True}}]},
         "pinned_and_blocked",
         "metadata {a: 1, pii: true} is both pinned ($.spec.pinned[1]) and blocked; remove it from one of the lists"),
        ({"objective": {"transform": "power"}}, "power_exponent", None),
    ],
)
def test_each_semantic_check(spec: dict[str, Any], code: str, message: str | None) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping(policy_with(**spec))
    assert [issue.code for issue in info.value.issues] == [f"policy.semantic.{code}"]
    if message is not None:
        assert info.value.message == message


@pytest.mark.parametrize(
    "spec",
    [
        {"budget": {"template": "{{literal}} [{source_id}|{level}] {content}"}},
        {"levels": {"CHUNK": {"share": 0.5}, "SECTION": {"share": 0.5}}, "custom_levels": ["CHUNK"]},
        {"levels": {"SECTION": {"min_tokens": 500, "max_tokens": 500}, "PARAGRAPH": {"min_tokens": 500}}},
        {"hierarchy": {"exclusive": True, "prefer_parent_ratio": 0.5}},
        {"sources": {"group_by": "metadata", "field": "vendor"}},
        {"pinned": [{"id": "a"}], "blocked": [{"glob": "a"}]},
        {"objective": {"transform": "power", "exponent": 0.5}},
        {"budget": {"max_tokens": None, "context_window": 1001, "reserve_output": 600, "reserve_prompt": 400}},
    ],
)
def test_semantic_checks_accept_the_boundaries(spec: dict[str, Any]) -> None:
    Policy.from_mapping(policy_with(**spec))


def test_semantic_issues_are_located(in_fixtures: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("semantic.yaml")
    by_code = {issue.code: issue.location for issue in info.value.issues}
    assert by_code["policy.semantic.unknown_level"] == Location("semantic.yaml", 9, 5)
    assert by_code["policy.semantic.pinned_and_blocked"] == Location("semantic.yaml", 14, 13)


# --------------------------------------------------------------------------- extends


def test_extends_merges_maps_replaces_lists_and_keeps_child_metadata(in_fixtures: Path) -> None:
    policy = load_policy("child.yaml")
    assert (policy.name, policy.revision, policy.owner) == ("child", "2", None)  # base metadata not inherited
    assert policy.budget.max_tokens == 6000  # child wins
    assert policy.budget.template == "[{source_id}] {content}"  # inherited from the base
    assert policy.min_relevance == 0.1
    assert policy.levels == (LevelRule("SECTION", max_items=5, max_tokens=1500),)  # deep merge
    assert [m.glob for m in policy.pinned] == ["legal-*"]  # lists replace
    assert (policy.solver.seed, policy.solver.time_limit_s) == (9, 1.0)
    assert "extends" not in policy.effective


def test_extends_chain(in_fixtures: Path) -> None:
    policy = load_policy("grandchild.yaml")
    assert (policy.name, policy.strategy, policy.budget.max_tokens, policy.solver.seed) == (
        "grandchild", BudgetStrategy.GREEDY, 6000, 9
    )
    assert policy.location_of("$.spec.strategy") == Location("grandchild.yaml", 6, 3)
    assert policy.location_of("$.spec.solver.seed") == Location("child.yaml", 14, 12)
    assert policy.location_of("$.spec.min_relevance") == Location("base.yaml", 11, 3)


def test_extends_locations_point_to_the_file_each_value_came_from(in_fixtures: Path) -> None:
    loaded = resolve_extends("child.yaml")
    assert loaded.file == "child.yaml"
    assert loaded.locations["$"] == Location("child.yaml", 1, 1)
    assert loaded.locations["$.spec.budget.max_tokens"] == Location("child.yaml", 9, 5)
    assert loaded.locations["$.spec.budget.template"] == Location("base.yaml", 10, 5)
    assert loaded.locations["$.spec.levels.SECTION.max_items"] == Location("child.yaml", 11, 15)
    assert loaded.locations["$.spec.levels.SECTION.max_tokens"] == Location("base.yaml", 13, 29)
    assert loaded.locations["$.spec.pinned[0]"] == Location("child.yaml", 13, 7)
    assert "$.spec.pinned[1]" not in loaded.locations  # the base's longer list is gone
    assert "$.metadata.owner" not in loaded.locations


def test_extends_labels_follow_the_path_given(in_fixtures: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES.parent)
    policy = load_policy(os.path.join("policies", "child.yaml"))
    assert policy.location_of("$.spec.min_relevance") == Location(os.path.join("policies", "base.yaml"), 11, 3)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _child(extends: str) -> str:
    return f"extends: {extends}\napiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {{name: c, revision: '1'}}\n"


@pytest.mark.parametrize("target", ["/etc/hosts", "../outside.yaml", "sub/../../outside.yaml", "~/x.yaml"])
def test_extends_outside_the_folder(tmp_path: Path, target: str) -> None:
    _write(tmp_path / "outside.yaml", "spec: {budget: {max_tokens: 1}}\n")
    child = _write(tmp_path / "policies" / "child.yaml", _child(target))
    with pytest.raises(PolicyError) as info:
        load_policy(child)
    assert (info.value.code, info.value.location) == ("policy.extends_outside", Location(str(child), 1, 1))


def test_extends_through_a_symlink_leading_outside(tmp_path: Path) -> None:
    outside = _write(tmp_path / "elsewhere" / "base.yaml", "spec: {budget: {max_tokens: 1}}\n")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "base.yaml").symlink_to(outside)
    child = _write(tmp_path / "policies" / "child.yaml", _child("base.yaml"))
    with pytest.raises(PolicyError) as info:
        load_policy(child)
    assert info.value.code == "policy.extends_symlink"
    assert info.value.message == (
        "extends 'base.yaml': base.yaml is a symbolic link; a base policy must be a real file in this policy's "
        "folder (links are not followed, so that a link swapped in cannot make the policy read another file) — "
        "replace the link with a copy of the file")
    assert info.value.location == Location(str(child), 1, 1)


@pytest.mark.parametrize("link", ["base.yaml", "bases"])
def test_extends_refuses_even_a_symlink_that_stays_inside(tmp_path: Path, link: str) -> None:
    _write(tmp_path / "real" / "base.yaml", "spec: {budget: {max_tokens: 1}}\n")
    if link == "bases":
        (tmp_path / "bases").symlink_to(tmp_path / "real")
    else:
        (tmp_path / "bases").mkdir()
        (tmp_path / "bases" / "base.yaml").symlink_to(tmp_path / "real" / "base.yaml")
    child = _write(tmp_path / "child.yaml", _child("bases/base.yaml"))
    with pytest.raises(PolicyError) as info:
        load_policy(child)
    assert info.value.code == "policy.extends_symlink"
    assert info.value.message.startswith(f"extends 'bases/base.yaml': {'bases' if link == 'bases' else 'bases/base.yaml'} is a symbolic link")


def test_extends_into_a_subfolder_is_allowed(tmp_path: Path) -> None:
    _write(tmp_path / "bases" / "base.yaml", "spec: {budget: {max_tokens: 77}}\n")
    child = _write(tmp_path / "child.yaml", _child("bases/base.yaml"))
    policy = load_policy(child)
    assert policy.budget.max_tokens == 77
    assert policy.location_of("$.spec.budget.max_tokens") == Location(os.path.join(str(tmp_path), "bases", "base.yaml"), 1, 17)


def test_extends_must_be_a_file_name(tmp_path: Path) -> None:
    child = _write(tmp_path / "child.yaml", _child("[a]"))
    with pytest.raises(PolicyError) as info:
        load_policy(child)
    assert (info.value.code, info.value.message) == (
        "policy.wrong_type", "extends must name a policy file in the same folder, e.g. base.yaml"
    )


def test_extends_self_is_a_cycle(tmp_path: Path) -> None:
    child = _write(tmp_path / "self.yaml", _child("self.yaml"))
    with pytest.raises(PolicyError) as info:
        load_policy(child)
    assert info.value.message == "extends cycle: self.yaml → self.yaml; remove one of these extends"


def test_extends_chain_depth_is_capped(tmp_path: Path) -> None:
    for index in range(12):
        _write(tmp_path / f"p{index}.yaml", _child(f"p{index + 1}.yaml"))
    _write(tmp_path / "p12.yaml", "spec: {budget: {max_tokens: 1}}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "p0.yaml")
    assert info.value.code == "policy.extends_too_deep"


# --------------------------------------------------------------------------- Policy.default / replace


def test_default_policy() -> None:
    policy = Policy.default(8000, min_relevance=0.3, strategy=BudgetStrategy.GREEDY)
    assert policy.budget == Budget(max_tokens=8000)
    assert (policy.min_relevance, policy.strategy, policy.name, policy.revision) == (0.3, BudgetStrategy.GREEDY, "default", "0")
    assert (policy.file, dict(policy.locations)) == (None, {})
    assert policy.digest.startswith("sha256:") and len(policy.digest) == 71
    assert Policy.default(8000, min_relevance=0.3, strategy=BudgetStrategy.GREEDY) is policy  # cached
    assert Policy.default(8000, strategy="greedy", min_relevance=0.3).digest == policy.digest
    assert Policy.default(8000).digest != policy.digest


def test_default_policy_matches_a_minimal_file() -> None:
    data = copy.deepcopy(MINIMAL)
    data["metadata"] = {"name": "default", "revision": "0"}
    data["spec"]["budget"]["max_tokens"] = 8000
    assert Policy.from_mapping(data).digest == Policy.default(8000).digest


def test_default_policy_accepts_budget_fields_and_typed_parts() -> None:
    policy = Policy.default(100, tokenizer="approx:utf8_bytes", separator="", levels=[LevelRule("SECTION", max_items=2)])
    assert (policy.tokenizer, policy.budget.separator, policy.levels) == (
        "approx:utf8_bytes", "", (LevelRule("SECTION", max_items=2),)
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "code"),
    [
        ((0,), {}, "policy.out_of_range"),
        ((True,), {}, "policy.out_of_range"),
        ((8.5,), {}, "policy.out_of_range"),
        ((10,), {"min_relevance": 1.5}, "policy.out_of_range"),
        ((10,), {"min_relevance": float("nan")}, "policy.out_of_range"),
        ((10,), {"strategy": "fastest"}, "policy.bad_value"),
        ((10,), {"stratgy": "greedy"}, "policy.unknown_field"),
        ((10,), {"levels": (LevelRule("SECTION", min_items=2, max_items=1),)}, "policy.semantic.level_items_range"),
    ],
)
def test_default_policy_checks_its_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.default(*args, **kwargs)
    assert info.value.code == code


def test_default_unknown_setting_suggests() -> None:
    with pytest.raises(PolicyError) as info:
        Policy.default(10, stratgy="greedy")
    assert info.value.message == "unknown policy setting 'stratgy'; did you mean 'strategy'?"


def test_replace_recomputes_effective_and_digest(in_fixtures: Path) -> None:
    policy = load_policy("full.yaml")
    changed = policy.replace(max_tokens=500, context_window=None, reserve_output=0, reserve_prompt=0, strategy="greedy")
    assert (changed.budget.limit_tokens, changed.strategy) == (500, BudgetStrategy.GREEDY)
    assert changed.effective["spec"]["budget"]["max_tokens"] == 500
    assert changed.digest != policy.digest
    assert (changed.file, changed.locations) == (policy.file, policy.locations)
    assert policy.replace().digest == policy.digest
    with pytest.raises(PolicyError) as info:
        policy.replace(max_tokens=500)  # context_window still set
    assert info.value.code == "policy.semantic.budget_conflict"


# --------------------------------------------------------------------------- render and digest


def test_render_is_deterministic_and_round_trips(in_fixtures: Path) -> None:
    policy = load_policy("full.yaml")
    text = render_policy(policy)
    assert text == render_policy(load_policy("full.yaml"))
    assert text.endswith(f"# digest: {policy.digest}\n")
    again = Policy.from_mapping(load_yaml_text(text, "rendered.yaml").data)
    assert again.digest == policy.digest
    assert render_policy(again) == text


def test_effective_mapping_round_trips_through_json(in_fixtures: Path) -> None:
    # The audit stores policy.to_dict() and replay rebuilds the policy from it.
    for policy in (load_policy("full.yaml"), load_policy("grandchild.yaml"), Policy.default(50, separator="")):
        again = Policy.from_mapping(json.loads(json.dumps(policy.to_dict())))
        assert (again.digest, again.budget, again.levels, again.pinned) == (
            policy.digest, policy.budget, policy.levels, policy.pinned
        )


def test_render_shows_every_default(in_fixtures: Path) -> None:
    text = render_policy(load_policy("minimal.yaml"))
    assert text.startswith("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata:\n  name: minimal\n  revision: '1'\nspec:\n")
    for line in ("    separator: \"\\n\\n\"\n", "  strategy: optimal\n", "    time_limit_s: 2.0\n", "    store_content: false\n"):
        assert line in text


def test_render_of_an_extended_policy_is_standalone(in_fixtures: Path) -> None:
    policy = load_policy("grandchild.yaml")
    again = Policy.from_mapping(load_yaml_text(render_policy(policy)).data)
    assert again.digest == policy.digest and again.levels == policy.levels


def test_digests_are_stable() -> None:
    # A change here changes every audit record's policy digest: make it on purpose only
    # (last: the default objective's z-score blend and reading-order steps, issue 11's third
    # study; before: the default objective's document steps, issue 11; solver.time_limit_scope,
    # issue 13 part 2; the default objective chosen by bench/robustness.py, issue 11; the
    # solver log defaults to its digest only, issue 12 part 8).
    assert Policy.default(8000).digest == "sha256:fec2a8ed96a563f20dffc47b10c0159d3f7f5d48538f26889f08e93f75a7d631"


def test_digest_ignores_formatting_but_not_content(in_fixtures: Path) -> None:
    compact = load_yaml_text(
        "apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {revision: '1', name: minimal}\n"
        "spec: {budget: {max_tokens: 8000, template: '{content}'}, strategy: optimal}\n"
    )
    assert Policy.from_mapping(compact.data).digest == load_policy("minimal.yaml").digest
    assert Policy.from_mapping(policy_with(min_relevance=0)).digest == Policy.from_mapping(policy_with(min_relevance=0.0)).digest
    assert Policy.from_mapping(policy_with(min_relevance=0.1)).digest != Policy.from_mapping(MINIMAL).digest


def test_from_mapping_accepts_a_frozen_effective_mapping(in_fixtures: Path) -> None:
    policy = load_policy("full.yaml")
    assert Policy.from_mapping(policy.effective).digest == policy.digest


def test_policies_hash_by_content() -> None:
    Policy.default(10)
    assert hash(Policy.default(10)) == hash(Policy.default(10))
    assert len({Policy.default(10), Policy.default(10, strategy="greedy")}) == 2
    with pytest.raises(PolicyError):
        Policy.default(10.0)  # type: ignore[arg-type]  # never served from the cache of 10


def test_from_record_builds_each_distinct_policy_once() -> None:
    """Replay reads many records of few policies (issue 13 part 4): equal mappings, keys
    in any order, give the same Policy object; a different mapping never gets a stale one,
    and an invalid one raises every time (nothing cached)."""
    effective = Policy.default(321).to_dict()
    first = Policy.from_record(effective)
    reordered = json.loads(json.dumps(effective, sort_keys=True))
    reordered["spec"] = dict(reversed(list(reordered["spec"].items())))
    assert Policy.from_record(reordered) is first and first.budget.max_tokens == 321
    edited = json.loads(json.dumps(effective))
    edited["spec"]["budget"]["max_tokens"] = 322
    assert Policy.from_record(edited).budget.max_tokens == 322
    assert Policy.from_record(effective) is first
    edited["spec"]["budget"]["max_tokens"] = -1
    for _ in range(2):
        with pytest.raises(PolicyError):
            Policy.from_record(edited)
