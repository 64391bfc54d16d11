"""engine.load: YAML and JSON text → plain data with locations, and every refused trap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.candfile import load_candidates_file, load_candidates_text
from engine.errors import CandidateError, Location, PolicyError
from engine.load import (
    MAX_ALIAS_NODES,
    Loaded,
    child_path,
    dump_yaml,
    gather_issues,
    load_yaml_file,
    load_yaml_text,
    nearest_location,
    parent_path,
)

FIXTURES = Path(__file__).parent / "fixtures" / "policies"


def policy_error(text: str, **kwargs: object) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_yaml_text(text, "p.yaml", **kwargs)  # type: ignore[arg-type]
    return info.value


def codes(error: Exception) -> list[str]:
    return [issue.code for issue in error.issues]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- paths


def test_child_path_uses_dots_indexes_and_brackets() -> None:
    assert child_path("$", "spec") == "$.spec"
    assert child_path("$.spec.pinned", 0) == "$.spec.pinned[0]"
    assert child_path("$.spec.levels", "SECTION") == "$.spec.levels.SECTION"
    assert child_path("$.m", "a.b") == "$.m['a.b']"
    assert child_path("$.m", "it's") == "$.m['it\\'s']"


@pytest.mark.parametrize(
    ("path", "parent"),
    [("$", None), ("$.a", "$"), ("$.a.b", "$.a"), ("$.a[3]", "$.a"), ("$.m['a.b']", "$.m"), ("$.a[0].id", "$.a[0]")],
)
def test_parent_path(path: str, parent: str | None) -> None:
    assert parent_path(path) == parent


def test_nearest_location_walks_up_to_an_ancestor_then_the_file() -> None:
    locations = {"$": Location("f", 1, 1), "$.spec": Location("f", 4, 1)}
    assert nearest_location(locations, "$.spec.budget.max_tokens") == Location("f", 4, 1)
    assert nearest_location({}, "$.spec", "f") == Location("f")
    assert nearest_location({}, "$.spec") is None


def test_gather_issues_keeps_the_first_as_its_own_fields() -> None:
    one = PolicyError("policy.a", "first", path="$.a")
    two = PolicyError("policy.b", "second", path="$.b")
    gathered = gather_issues([one, two])
    assert (gathered.code, gathered.path, gathered.issues) == ("policy.a", "$.a", (one, two))
    assert str(gathered) == "$.a: first\n$.b: second"
    assert gather_issues([one]) is one


# --------------------------------------------------------------------------- YAML happy path


def test_locations_point_at_keys_and_list_items() -> None:
    text = "spec:\n  levels:\n    SECTION:\n      max_tokens: 2000\n  pinned:\n    - {id: a}\n    - glob: 'b*'\n"
    loaded = load_yaml_text(text, "p.yaml")
    assert loaded.data == {"spec": {"levels": {"SECTION": {"max_tokens": 2000}}, "pinned": [{"id": "a"}, {"glob": "b*"}]}}
    assert loaded.file == "p.yaml"
    assert loaded.locations["$"] == Location("p.yaml", 1, 1)
    assert loaded.locations["$.spec.levels.SECTION.max_tokens"] == Location("p.yaml", 4, 7)
    assert loaded.locations["$.spec.pinned[0]"] == Location("p.yaml", 6, 7)
    assert loaded.locations["$.spec.pinned[0].id"] == Location("p.yaml", 6, 8)
    assert loaded.locations["$.spec.pinned[1].glob"] == Location("p.yaml", 7, 7)
    assert loaded.location_of("$.spec.pinned[1].missing") == Location("p.yaml", 7, 7)


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("true", True), ("False", False), ("TRUE", True), ("null", None), ("~", None), ("", None),
        ("42", 42), ("-7", -7), ("0", 0), ("0x1F", 31), ("0o17", 15),
        ("1.5", 1.5), ("1e3", 1000.0), (".5", 0.5), ("-2.5E-3", -0.0025),
        ("1_000", "1_000"), ("12:30", "12:30"), ("hello world", "hello world"), ("'no'", "no"), ('"yes"', "yes"),
        ("!!str 5", "5"),
    ],
)
def test_plain_scalars_follow_yaml_1_2_core(literal: str, value: object) -> None:
    loaded = load_yaml_text(f"v: {literal}\n")
    assert loaded.data["v"] == value
    assert type(loaded.data["v"]) is type(value)


def test_aliases_are_expanded() -> None:
    loaded = load_yaml_text("a: &x {b: 1, c: [1, 2]}\nd: *x\n")
    assert loaded.data == {"a": {"b": 1, "c": [1, 2]}, "d": {"b": 1, "c": [1, 2]}}
    assert loaded.data["a"] is not loaded.data["d"]
    assert "$.d.c[1]" in loaded.locations


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert load_yaml_file(path).data == {"a": 1}


def test_loaded_is_frozen() -> None:
    loaded = load_yaml_text("a: 1\n")
    with pytest.raises(AttributeError):
        loaded.data = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        loaded.locations["$.b"] = Location()  # type: ignore[index]
    assert isinstance(loaded, Loaded)


# --------------------------------------------------------------------------- YAML traps


def test_duplicate_key_message() -> None:
    err = policy_error("budget:\n  max_tokens: 1\n  template: x\n  max_tokens: 2\n")
    assert err.code == "policy.duplicate_key"
    assert str(err) == (
        "p.yaml:4:3: $.budget.max_tokens: duplicate key 'max_tokens' (first defined at line 2); "
        "YAML would silently keep the last value — remove one"
    )


@pytest.mark.parametrize(("word", "meant"), [("yes", "true"), ("No", "false"), ("ON", "true"), ("off", "false"), ("y", "true"), ("N", "false")])
def test_yaml11_booleans_are_refused(word: str, meant: str) -> None:
    err = policy_error(f"exclusive: {word}\n")
    assert err.code == "policy.yaml11_boolean"
    assert err.message == f"'{word}' is read as a boolean by YAML 1.1; quote it ('{word}') or write {meant}"
    assert (err.path, err.location) == ("$.exclusive", Location("p.yaml", 1, 12))


def test_all_load_issues_are_gathered_in_document_order() -> None:
    err = policy_error("a: no\nb: .inf\nc: 1\nc: 2\n1: x\nd: !!binary aGk=\ne: 010\nf:\n  <<: {x: 1}\n")
    assert codes(err) == [
        "policy.yaml11_boolean", "policy.non_finite", "policy.duplicate_key", "policy.non_string_key",
        "policy.yaml_tag", "policy.ambiguous_number", "policy.merge_key",
    ]
    messages = [issue.message for issue in err.issues]
    assert messages[1] == "'.inf' is not a finite number; NaN and infinity are not allowed — write a finite number"
    assert messages[3] == "key 1 is read as an integer; keys must be strings — quote it ('1')"
    assert messages[4] == (
        "explicit YAML tags such as '!!binary' are not supported; remove the tag (quote the value to make it a string)"
    )
    assert messages[5] == "'010' is octal in YAML 1.1 but decimal in YAML 1.2; write it without leading zeros (10) or quote it ('010')"


@pytest.mark.parametrize("literal", [".nan", ".NaN", ".inf", "-.Inf", "+.INF", "1e999"])
def test_non_finite_numbers_are_refused(literal: str) -> None:
    assert policy_error(f"x: {literal}\n").code == "policy.non_finite"


def test_python_tags_are_refused_not_constructed() -> None:
    err = policy_error("x: !!python/object/apply:os.system ['echo hi']\n")
    assert err.code == "policy.yaml_tag"


def test_complex_and_null_keys_are_refused() -> None:
    err = policy_error("? [a, b]\n: 1\n~: 2\n")
    assert codes(err) == ["policy.non_string_key", "policy.non_string_key"]
    assert err.issues[0].message == "a list or mapping cannot be a key; keys must be plain strings"


def test_multiple_documents() -> None:
    err = policy_error("a: 1\n---\nb: 2\n")
    assert str(err) == (
        "p.yaml:2:1: $: the file holds more than one YAML document ('---'); a policy is one document — "
        "remove the extra '---' and what follows, or split the files"
    )


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "---\n", "--- ~\n"])
def test_empty_documents(text: str) -> None:
    err = policy_error(text)
    assert (err.code, err.location) == ("policy.empty", Location("p.yaml", 1, 1))


@pytest.mark.parametrize(("text", "got"), [("- a\n", "a list"), ("just text\n", "a single value")])
def test_top_level_must_be_a_mapping(text: str, got: str) -> None:
    err = policy_error(text)
    assert err.code == "policy.not_a_mapping"
    assert err.message == f"the top level must be a mapping of `key: value` lines, got {got}"


def test_alias_bomb_is_capped() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcd", "bcde"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    err = policy_error("\n".join(lines) + "\n")
    assert err.code == "policy.alias_bomb"
    assert err.message.startswith(f"the document expands to more than {MAX_ALIAS_NODES} nodes")
    assert load_yaml_text("\n".join(lines[:3]) + "\n").data["c"][9][9] == ["x"] * 10  # 1,111 nodes: fine


def test_custom_node_limit() -> None:
    assert policy_error("a: [1, 2, 3]\n", max_nodes=3).code == "policy.alias_bomb"


def test_recursive_alias_is_refused() -> None:
    err = policy_error("a: &a\n  b: *a\n")
    assert err.code == "policy.alias_bomb"
    assert "recursive alias" in err.message


def test_deep_nesting_is_refused() -> None:
    assert policy_error("a: " + "[" * 70 + "]" * 70 + "\n").code == "policy.too_deep"
    assert policy_error("a: " + "[" * 3000 + "]" * 3000 + "\n").code == "policy.too_deep"


def test_very_deep_nesting_is_refused_before_yaml_reads_it() -> None:
    """PyYAML's scanner is quadratic in flow depth (a 3,000-deep list took seconds and
    timed out the fuzz test on a loaded machine): such a text is refused by a bracket
    scan first, naming the bracket past the limit."""
    from engine.load import PRESCAN_DEPTH

    err = policy_error("a: 1\nb: " + "[" * 3000 + "]" * 3000 + "\n")
    assert err.code == "policy.too_deep"
    assert (err.location.line, err.location.col) == (2, 4 + PRESCAN_DEPTH)
    assert "more than 64 levels" in err.message


def test_brackets_inside_a_string_below_the_scan_limit_are_text() -> None:
    assert load_yaml_text("a: '" + "[" * 200 + "'\n").data == {"a": "[" * 200}


@pytest.mark.parametrize("text", ["a:\n\tb: 1\n", "a:\tb\n"])
def test_tabs(text: str) -> None:
    err = policy_error(text)
    assert err.code == "policy.tab_character"
    assert err.message == (
        "tab character where YAML allows only spaces (indentation and separators); replace the tab with spaces"
    )


def test_tab_inside_quotes_is_fine() -> None:
    assert load_yaml_text("a: 'x\ty'\n").data == {"a": "x\ty"}


def test_binary_junk() -> None:
    err = policy_error("a: 1\nb: x\x00y\n")
    assert (err.code, err.location) == ("policy.control_character", Location("p.yaml", 2, 5))
    assert err.message.startswith("control character U+0000 is not allowed in YAML")


def test_syntax_error_has_the_mark() -> None:
    err = policy_error("a: b: c\n")
    assert (err.code, err.location) == ("policy.yaml_syntax", Location("p.yaml", 1, 5))
    assert err.message == (
        "invalid YAML: mapping values are not allowed here; check the indentation, colons and quotes here"
    )


def test_not_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: 1\nname: caf\xe9\n")
    with pytest.raises(PolicyError) as info:
        load_yaml_file(path)
    err = info.value
    assert (err.code, err.location) == ("policy.not_utf8", Location(str(path), 2, 10))
    assert err.message == "the file is not valid UTF-8 (byte 0xe9); save it as UTF-8"


def test_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 200 + "\n")
    with pytest.raises(PolicyError) as info:
        load_yaml_file(path, max_bytes=100)
    assert info.value.code == "policy.too_large"
    assert info.value.details == {"size_bytes": 204, "limit_bytes": 100}
    assert policy_error("a: xxxxx\n", max_bytes=4).code == "policy.too_large"
    assert load_yaml_file(path, max_bytes=204).data["a"] == "x" * 200


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_yaml_file(tmp_path / "nope.yaml")
    assert (info.value.code, info.value.message) == ("policy.file_not_found", "no such file; check the path")


def test_file_label_can_be_chosen() -> None:
    loaded = load_yaml_file(FIXTURES / "minimal.yaml", file="minimal.yaml")
    assert loaded.locations["$.spec.budget"] == Location("minimal.yaml", 5, 3)


# --------------------------------------------------------------------------- dump_yaml round trip

_keys = st.text(min_size=1, max_size=8)
_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1)  # the JSON-exact range the loader accepts
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
_data = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _data, min_size=1, max_size=5))
def test_dump_yaml_reads_back_equal(data: dict[str, object]) -> None:
    text = dump_yaml(data)
    assert load_yaml_text(text).data == data


@pytest.mark.parametrize("word", ["no", "Y", "on", "010", "1e3", "null", "~", "<<", ".nan", "0x10", "true"])
def test_dump_yaml_quotes_what_would_read_differently(word: str) -> None:
    assert load_yaml_text(dump_yaml({"k": word, word: 1})).data == {"k": word, word: 1}


# --------------------------------------------------------------------------- candidates

GOOD = {"source_id": "a", "content": "x", "relevance_score": 0.5}


def candidate_error(text: str, file: str = "c.jsonl", **kwargs: str) -> CandidateError:
    with pytest.raises(CandidateError) as info:
        load_candidates_text(text, file, **kwargs)
    return info.value


def test_jsonl_records_are_located_by_line_and_blank_lines_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    second = {"source_id": "b", "content": "y", "relevance_score": 1, "metadata": {"k": True}, "parent_id": None}
    path.write_text(json.dumps(GOOD) + "\n\n   \n" + json.dumps(second) + "\n")
    assert load_candidates_file(path) == ((GOOD, Location(str(path), 1)), (second, Location(str(path), 4)))


def test_json_array_elements_are_located(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('[\n  {"source_id": "a", "content": "x", "relevance_score": 0.5},\n\n  {"source_id": "b",\n'
                    '   "content": "y", "relevance_score": 0.1, "token_count": 3}\n]\n')
    loaded = load_candidates_file(path)
    assert [location for _, location in loaded] == [Location(str(path), 2, 3), Location(str(path), 4, 3)]
    assert loaded[1][0]["token_count"] == 3


def test_array_form_is_sniffed_for_other_extensions() -> None:
    assert load_candidates_text(f"  [{json.dumps(GOOD)}]")[0][0] == GOOD
    assert load_candidates_text("[]") == ()
    assert load_candidates_text("\n  \n") == ()


def test_json_extension_requires_an_array(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(GOOD))
    with pytest.raises(CandidateError) as info:
        load_candidates_file(path)
    assert info.value.code == "candidate.json_syntax"
    assert info.value.message == (
        "invalid JSON: expected '[' to start the array; a .json candidates file is one array of objects"
    )


def test_every_candidate_problem_is_reported_in_file_order() -> None:
    lines = [
        '{"source_id": "a", "content": "x", "relevance_score": NaN}',
        '{"source_id": "b", "content": "y"}',
        '{"source_id": "c", "content": "y", "relevance_score": 1, "tokens": 3}',
        '{"source_id": 5, "content": "y", "relevance_score": "high"}',
        "{bad json",
        '{"source_id": "d", "source_id": "e", "content": "y", "relevance_score": 1}',
        "[1]",
        '{"source_id": "", "content": "x", "relevance_score": 1, "token_count": -1, "parent_id": 3}',
    ]
    err = candidate_error("\n".join(lines) + "\n")
    assert str(err) == "\n".join([
        "c.jsonl:1: $: NaN is not valid JSON (numbers must be finite); write a finite number",
        "c.jsonl:2: $.relevance_score: required field 'relevance_score' is missing; add it to the candidate",
        "c.jsonl:3: $.tokens: unknown field 'tokens'; allowed here: content, level, metadata, parent_id, "
        "relevance_score, source_id, token_count",
        "c.jsonl:4: $.relevance_score: expected number, got string 'high'",
        'c.jsonl:4: $.source_id: expected string, got integer 5; quote it ("5")',
        "c.jsonl:5:2: $: invalid JSON: Expecting property name enclosed in double quotes; each line must hold "
        "exactly one JSON object",
        "c.jsonl:6: $: duplicate key 'source_id'; JSON readers would silently keep the last value — remove one",
        "c.jsonl:7: $: expected object, got an array",
        'c.jsonl:8: $.parent_id: expected string or null, got integer 3; quote it ("3")',
        "c.jsonl:8: $.source_id: must not be empty",
        "c.jsonl:8: $.token_count: must be >= 0; got -1",
    ])
    assert codes(err) == [
        "candidate.non_finite", "candidate.schema", "candidate.schema", "candidate.schema", "candidate.schema",
        "candidate.json_syntax", "candidate.duplicate_key", "candidate.schema", "candidate.schema",
        "candidate.schema", "candidate.schema",
    ]
    assert err.issues[1].details == {"rule": "missing_field"}
    assert err.issues[2].details == {"rule": "unknown_field"}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_are_refused(literal: str) -> None:
    err = candidate_error(f'[{{"source_id": "a", "content": "x", "relevance_score": {literal}}}]', "c.json")
    assert (err.code, err.message) == (
        "candidate.non_finite", f"{literal} is not valid JSON (numbers must be finite); write a finite number"
    )


def test_array_syntax_error_has_line_and_column() -> None:
    err = candidate_error('[\n  {"source_id": "a"}\n  {"source_id": "b"}\n]', "c.json")
    assert (err.code, err.location) == ("candidate.json_syntax", Location("c.json", 3, 3))


def test_array_schema_issue_names_the_element() -> None:
    err = candidate_error(f'[{json.dumps(GOOD)},\n {{"source_id": "b", "content": "y", "relevance_score": true}}]')
    assert (err.path, err.location) == ("$[1].relevance_score", Location("c.jsonl", 2, 2))
    assert err.message == "expected number, got boolean true"


def test_extra_data_on_a_line() -> None:
    err = candidate_error(json.dumps(GOOD) + " {}\n")
    assert (err.code, err.location) == ("candidate.json_syntax", Location("c.jsonl", 1, 60))


def test_candidates_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"source_id": "\xff"}\n')
    with pytest.raises(CandidateError) as info:
        load_candidates_file(path)
    assert (info.value.code, info.value.location) == ("candidate.not_utf8", Location(str(path), 2, 16))
    assert info.value.message == "the file is not valid UTF-8 (byte 0xff); save it as UTF-8"


def test_candidates_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CandidateError) as info:
        load_candidates_file(tmp_path / "none.jsonl")
    assert info.value.code == "candidate.file_not_found"


def test_scores_stay_numbers() -> None:
    ((item, _),) = load_candidates_text('{"source_id": "a", "content": "", "relevance_score": 1e-3}')
    assert math.isclose(item["relevance_score"], 0.001)


_STREAM_CASES = {
    "valid": json.dumps(GOOD) + "\n\n  \n" + json.dumps({**GOOD, "source_id": "b"}),
    "crlf and bom": "\ufeff" + json.dumps(GOOD) + "\r\n" + json.dumps({**GOOD, "source_id": "b"}) + "\r\n",
    "two boms, array": "\ufeff\ufeff  [" + json.dumps(GOOD) + "]",
    "errors on many lines": "\n".join([json.dumps(GOOD), "{bad", json.dumps({"source_id": "c"}), '{"a": NaN}',
                                       '{"x": 1, "x": 2}', json.dumps(GOOD) + " extra", json.dumps({**GOOD, "level": 3})]),
    "blank": "\n \t\n",
    "unicode whitespace line": json.dumps(GOOD) + "\n\u2028\n" + json.dumps({**GOOD, "source_id": "d"}),
}


@pytest.mark.parametrize("text", list(_STREAM_CASES.values()), ids=list(_STREAM_CASES))
def test_jsonl_files_are_streamed_with_the_same_results_and_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Issue 13 part 4: a JSON Lines candidates file is read line by line, never whole
    (the whole-file reader is not called), with the same records, locations and errors
    (file:line:col) as the text reader."""
    import engine.candfile as candfile

    path = tmp_path / "c.jsonl"
    path.write_bytes(text.encode("utf-8"))
    try:
        want: Any = candfile.load_candidates_text(text.encode("utf-8").decode("utf-8-sig"), str(path))
    except CandidateError as exc:
        want = exc
    whole = candfile.read_text
    calls: list[object] = []
    monkeypatch.setattr(candfile, "read_text", lambda *a, **k: calls.append(a) or whole(*a, **k))
    try:
        got: Any = candfile.load_candidates_file(path)
    except CandidateError as exc:
        got = exc
    if isinstance(want, CandidateError):
        assert isinstance(got, CandidateError)
        assert [(i.code, i.message, i.location) for i in got.issues] == \
            [(i.code, i.message, i.location) for i in want.issues]
        assert str(got) == str(want)
    else:
        assert got == want
    assert bool(calls) == text.lstrip("\ufeff").lstrip().startswith("[")  # only an array is read whole


def test_a_jsonl_error_names_the_file_and_line_when_streamed(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + '{"source_id": "b", "content": 1, "relevance_score": 0.5}\n')
    with pytest.raises(CandidateError) as info:
        load_candidates_file(path)
    assert info.value.location == Location(str(path), 3)
    assert str(info.value).startswith(f"{path}:3")


def test_non_utf8_jsonl_keeps_the_whole_file_error(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"source_id": "\xff"}\n')
    with pytest.raises(CandidateError) as info:
        load_candidates_file(path)
    assert info.value.code == "candidate.not_utf8" and info.value.location == Location(str(path), 2, 16)
