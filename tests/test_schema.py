"""engine.schema and schemas/*.schema.json: shipped schemas, messages, best-first order."""

from __future__ import annotations

import copy
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from engine.errors import Location, PolicyError
from engine.load import load_yaml_file, load_yaml_text
from engine.schema import (
    CANDIDATES_SCHEMA,
    _candidate_fast_check,
    POLICY_SCHEMA,
    candidate_issues,
    load_schema,
    policy_issues,
    suggest,
    validate_policy,
    validate_policy_mapping,
)

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
MINIMAL: dict[str, Any] = {
    "apiVersion": "ctxbudget/v1",
    "kind": "BudgetPolicy",
    "metadata": {"name": "m", "revision": "1"},
    "spec": {"budget": {"max_tokens": 8000}},
}


def with_spec(**spec: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    data["spec"].update(spec)
    return data


def only_issue(data: Any) -> PolicyError:
    issues = policy_issues(data)
    assert len(issues) == 1, [str(issue) for issue in issues]
    return issues[0]


def _objects(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append((where, node))
        for key, value in node.items():
            found.extend(_objects(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_objects(value, f"{where}/{index}"))
    return found


# --------------------------------------------------------------------------- the schema files


@pytest.mark.parametrize("name", [POLICY_SCHEMA, CANDIDATES_SCHEMA])
def test_schemas_ship_in_the_package_and_are_valid_2020_12(name: str) -> None:
    assert files("engine.schemas").joinpath(name).is_file()
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", [POLICY_SCHEMA, CANDIDATES_SCHEMA])
def test_every_object_forbids_unknown_keys(name: str) -> None:
    objects = _objects(load_schema(name))
    assert objects
    assert [where for where, node in objects if node.get("additionalProperties") is not False] == []


def test_policy_fixtures_that_should_be_valid_are() -> None:
    for name in ("full.yaml", "minimal.yaml"):
        validate_policy_mapping(load_yaml_file(FIXTURES / name))


def test_candidate_schema_accepts_the_documented_fields() -> None:
    full = {"source_id": "a", "content": "", "relevance_score": 0, "token_count": 0, "level": "CHUNK",
            "metadata": {"any": [1, {"x": None}]}, "parent_id": None}
    assert candidate_issues(full) == ()
    file_schema = dict(load_schema(CANDIDATES_SCHEMA))
    file_schema["$ref"] = "#/$defs/file"
    assert Draft202012Validator(file_schema).is_valid([full, full])
    assert not Draft202012Validator(file_schema).is_valid([full, {"source_id": "b"}])


# --------------------------------------------------------------------------- messages


def test_unknown_field_suggests_the_closest_name() -> None:
    err = only_issue(with_spec(budget={"max_token": 8000, "max_tokens": 1}))
    assert (err.code, err.path, err.message) == (
        "policy.unknown_field", "$.spec.budget.max_token", "unknown field 'max_token'; did you mean 'max_tokens'?"
    )


def test_unknown_field_snake_cases_camel_case() -> None:
    err = only_issue(with_spec(minRelevance=0.3))
    assert err.message == "unknown field 'minRelevance'; did you mean 'min_relevance'?"


def test_unknown_field_without_a_close_match_lists_the_allowed_names() -> None:
    err = only_issue(with_spec(hierarchy={"zzz": 1}))
    assert err.message == "unknown field 'zzz'; allowed here: exclusive, prefer_parent_ratio"


def test_wrong_type_message() -> None:
    err = only_issue(with_spec(budget={"max_tokens": "8k"}))
    assert (err.code, err.message) == ("policy.wrong_type", "expected integer, got string '8k'")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("8000", "expected integer, got string '8000'; remove the quotes"),
        ("8_000", "expected integer, got string '8_000'; write it without underscores (8000)"),
        (True, "expected integer, got boolean true"),
        (None, "expected integer, got null"),
        ([1], "expected integer, got a list"),
        ({"a": 1}, "expected integer, got a mapping"),
        (8000.5, "expected integer, got number 8000.5"),
    ],
)
def test_wrong_type_hints(value: Any, message: str) -> None:
    assert only_issue(with_spec(budget={"max_tokens": value})).message == message


def test_integral_floats_count_as_integers() -> None:
    assert policy_issues(with_spec(budget={"max_tokens": 8000.0})) == ()


def test_string_expected_suggests_quoting() -> None:
    data = copy.deepcopy(MINIMAL)
    data["metadata"]["revision"] = 3
    assert only_issue(data).message == "expected string, got integer 3; quote it ('3')"


def test_enum_message_lists_the_choices_and_suggests() -> None:
    err = only_issue(with_spec(strategy="optimum"))
    assert (err.code, err.message) == (
        "policy.bad_value",
        "must be one of: optimal, greedy, balanced, density; got 'optimum' — did you mean 'optimal'?",
    )
    assert only_issue(with_spec(strategy="zzz")).message == (
        "must be one of: optimal, greedy, balanced, density; got 'zzz'"
    )


def test_const_and_range_messages() -> None:
    data = copy.deepcopy(MINIMAL)
    data["apiVersion"] = "ctxbudget/v2"
    assert only_issue(data).message == "must be 'ctxbudget/v1'; got 'ctxbudget/v2'"
    err = only_issue(with_spec(min_relevance=1.5))
    assert (err.code, err.message) == ("policy.out_of_range", "must be <= 1; got 1.5")
    assert only_issue(with_spec(solver={"time_limit_s": 0})).message == "must be > 0; got 0"


def test_missing_field_is_located_at_its_parent() -> None:
    loaded = load_yaml_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata:\n  name: x\nspec:\n  budget: {max_tokens: 1}\n", "p.yaml")
    with pytest.raises(PolicyError) as info:
        validate_policy_mapping(loaded)
    err = info.value
    assert (err.code, err.path, err.location) == ("policy.missing_field", "$.metadata.revision", Location("p.yaml", 3, 1))
    assert err.message == "required field 'revision' is missing; add it under metadata"
    assert only_issue({k: v for k, v in MINIMAL.items() if k != "spec"}).message == (
        "required field 'spec' is missing; add it at the top level"
    )


def test_matchers_need_exactly_one_selector() -> None:
    issues = policy_issues(with_spec(pinned=[{"id": "a", "glob": "b*"}, {"reason": "x"}, "refund"]))
    assert [(issue.code, issue.path, issue.message) for issue in issues] == [
        ("policy.wrong_type", "$.spec.pinned[2]", "expected mapping, got string 'refund'"),
        ("policy.bad_matcher", "$.spec.pinned[0]",
         "a matcher takes exactly one of id, glob, metadata, found id and glob; split it into separate matchers"),
        ("policy.bad_matcher", "$.spec.pinned[1]", "a matcher needs one of id, glob, metadata; add one, e.g. `id: refund-terms`"),
    ]


def test_pattern_hint_and_duplicates() -> None:
    assert only_issue(with_spec(custom_levels=["chunk"])).message == (
        "'chunk' is not allowed here; level names are UPPER_CASE, e.g. CHUNK"
    )
    assert only_issue(with_spec(custom_levels=["CHUNK", "CHUNK"])).message == (
        "'CHUNK' is listed more than once; list each only once"
    )
    assert only_issue(with_spec(pinned=[{"metadata": {}}])).message == "must not be empty"


def test_all_issues_are_reported_best_first() -> None:
    with pytest.raises(PolicyError) as info:
        validate_policy_mapping(load_yaml_file(FIXTURES / "many_issues.yaml", file="many_issues.yaml"))
    err = info.value
    got = "".join(f"{issue.code}\t{issue.render_one()}\n" for issue in err.issues)
    assert got == (FIXTURES.parent.parent / "golden" / "errors" / "policy_many_issues.txt").read_text(encoding="utf-8")
    # The gathered error's own fields are those of the best issue.
    assert (err.code, err.path) == (err.issues[0].code, err.issues[0].path)
    # jsonschema's relevance: shallower problems first, weak keywords (oneOf) last.
    assert err.issues[0].path == "$.apiVersion"
    assert [issue.code for issue in err.issues][-2:] == ["policy.bad_matcher", "policy.bad_matcher"]


def test_validate_policy_without_locations_uses_the_file() -> None:
    with pytest.raises(PolicyError) as info:
        validate_policy(with_spec(strategy="x"), file="api")
    assert info.value.location == Location("api")
    assert validate_policy(MINIMAL) is None


def test_candidate_issue_details_name_the_rule() -> None:
    issues = candidate_issues({"source_id": "a", "content": "x"}, path="$[4]", location=Location("c.json", 9, 3))
    assert [(i.code, i.path, i.details, i.location) for i in issues] == [
        ("candidate.schema", "$[4].relevance_score", {"rule": "missing_field"}, Location("c.json", 9, 3))
    ]


@pytest.mark.parametrize(
    ("word", "choices", "expected"),
    [("maxTokens", ["max_tokens"], "max_tokens"), ("SECTOIN", ["SECTION", "SENTENCE"], "SECTION"),
     ("section", ["SECTION"], "SECTION"), ("zzz", ["max_tokens"], None)],
)
def test_suggest(word: str, choices: list[str], expected: str | None) -> None:
    assert suggest(word, choices) == expected


# --------------------------------------------------------------------------- candidate fast path

_values = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.sampled_from(["", "a", "P"]) | \
    st.just({}) | st.just([]) | st.just({"k": [1]})
_candidates = st.dictionaries(
    st.sampled_from(["source_id", "content", "relevance_score", "token_count", "level", "metadata", "parent_id", "x"]),
    _values,
)


@settings(max_examples=400, deadline=None)
@given(_candidates)
def test_candidate_fast_path_never_accepts_what_jsonschema_rejects(item: dict[str, Any]) -> None:
    valid = Draft202012Validator(load_schema(CANDIDATES_SCHEMA)).is_valid(item)
    if _candidate_fast_check()(item):
        assert valid
    assert (candidate_issues(item) == ()) == valid


def test_candidate_fast_path_takes_ordinary_candidates() -> None:
    item = {"source_id": "a#1", "content": "x", "relevance_score": 0.3, "token_count": 4, "level": "SECTION",
            "metadata": {"doc_id": "a"}, "parent_id": None}
    assert _candidate_fast_check()(item)
    assert not _candidate_fast_check()(dict(item, relevance_score=True))
