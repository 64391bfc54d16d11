"""JSON Schema validation (draft 2020-12) with errors a person can act on.

The schemas ship inside the package (``engine.schemas``, from the repository's
``schemas/`` folder) and are read with :mod:`importlib.resources`, never by path.

Every schema violation becomes one issue with a stable code, the JSON path of the
offending value, its file:line:col (the nearest located ancestor when the value itself
is missing) and a message that says how to fix it:

=========================  ===============================================================
``policy.unknown_field``   "unknown field 'max_token'; did you mean 'max_tokens'?"
``policy.wrong_type``      "expected integer, got string '8k'"
``policy.bad_value``       "must be one of: optimal, greedy, balanced, density; got 'fast'"
``policy.out_of_range``    "must be <= 1; got 1.5"
``policy.missing_field``   "required field 'revision' is missing; add it under metadata"
``policy.bad_matcher``     a pinned/blocked matcher without exactly one of id/glob/metadata
``policy.schema``          anything else (jsonschema's own message)
=========================  ===============================================================

Candidates use the same messages under the single code ``candidate.schema``, with
``details['rule']`` set to the policy-side name (``unknown_field``, ``wrong_type``, ...).

All issues are reported together, best first by jsonschema's ``relevance`` ranking
(the ranking behind ``best_match``), ties in document order.

After the schema, :func:`engine.semantic.semantic_issues` checks the cross-field rules a
JSON Schema cannot express (codes ``policy.semantic.*``) on the *effective* mapping, the
policy with every default filled in (see :mod:`engine.policy`).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # jsonschema is imported when a document is invalid (or the fast checks cannot tell)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

from .errors import CandidateError, Location, PolicyError
from .load import Loaded, child_path, gather_issues, nearest_location

POLICY_SCHEMA = "policy.schema.json"
CANDIDATES_SCHEMA = "candidates.schema.json"
BUILTIN_LEVELS = ("DOCUMENT", "SECTION", "PARAGRAPH", "SENTENCE")
"""Built-in hierarchy levels, outermost first."""

# Policies are YAML, so their users think in mappings and lists; candidates are JSON.
_POLICY_WORDS = {"object": "mapping", "array": "list", "root": "at the top level", "quote": "'"}
_JSON_WORDS = {"object": "object", "array": "array", "root": "to the candidate", "quote": '"'}
_BOUNDS = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema ``name`` from the ``engine.schemas`` package (cached:
    do not mutate the result)."""
    text = files("engine.schemas").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=None)
def _validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(name))


def policy_issues(
    data: Any, *, locations: Mapping[str, Location] | None = None, file: str | None = None
) -> tuple[PolicyError, ...]:
    """Every schema violation of a policy mapping, best first (empty when valid).

    ``locations`` maps JSON paths to where they are written (see
    :class:`engine.load.Loaded`); ``file`` is used when a path has no location."""
    if _policy_fast_check()(data):
        return ()
    locs = locations or {}
    found: list[tuple[tuple[Any, ...], PolicyError]] = []
    for error, rule, path, message in _violations(data, POLICY_SCHEMA, "$", _POLICY_WORDS):
        location = nearest_location(locs, path, file)
        issue = PolicyError(f"policy.{rule}", message, path=path, location=location)
        found.append((_rank(error, location, path), issue))
    return tuple(issue for _, issue in sorted(found, key=lambda pair: pair[0]))


def validate_policy(
    data: Any, *, locations: Mapping[str, Location] | None = None, file: str | None = None
) -> None:
    """Raise ONE :class:`PolicyError` carrying every schema issue (best first) of a
    policy mapping; return ``None`` when it is valid."""
    issues = policy_issues(data, locations=locations, file=file)
    if issues:
        raise gather_issues(issues)


def validate_policy_mapping(loaded: Loaded) -> None:
    """:func:`validate_policy` on a :class:`~engine.load.Loaded` document."""
    validate_policy(loaded.data, locations=loaded.locations, file=loaded.file)


def candidate_issues(
    item: Any, *, path: str = "$", location: Location | None = None
) -> tuple[CandidateError, ...]:
    """Every schema violation of one candidate, best first, as ``candidate.schema``
    errors located at ``location`` (the candidate's line); ``path`` is the candidate's
    own JSON path (``$`` for a JSON Lines record, ``$[3]`` in an array)."""
    if _candidate_fast_check()(item):
        return ()
    found = []
    for error, rule, issue_path, message in _violations(item, CANDIDATES_SCHEMA, path, _JSON_WORDS):
        issue = CandidateError("candidate.schema", message, path=issue_path, location=location, details={"rule": rule})
        found.append((_rank(error, location, issue_path), issue))
    return tuple(issue for _, issue in sorted(found, key=lambda pair: pair[0]))


# --------------------------------------------------------------------------- fast path

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
    "object": (dict,), "array": (list,), "null": (type(None),),
}
_ANNOTATIONS = frozenset({"description", "title", "default", "$comment", "examples", "x-hint"})


def _property_check(schema: Mapping[str, Any]) -> Any:
    """A predicate for one property schema using only type/minLength/minimum, or None."""
    if not set(schema) <= {"type", "minLength", "minimum"} | _ANNOTATIONS:
        return None
    names = schema.get("type", [])
    types = tuple(t for name in ([names] if isinstance(names, str) else names) for t in _PY_TYPES[name])
    min_length, minimum = schema.get("minLength", 0), schema.get("minimum")

    def check(value: Any) -> bool:
        if isinstance(value, bool) and bool not in types:
            return False
        if not isinstance(value, types):
            return False
        if isinstance(value, str) and len(value) < min_length:
            return False
        return minimum is None or not isinstance(value, (int, float)) or value >= minimum

    return check


@lru_cache(maxsize=None)
def _candidate_fast_check() -> Any:
    """A conservative validity test compiled from the candidate schema: True only when
    jsonschema would accept the item too (anything else goes to jsonschema for its
    messages). About 30x faster on the valid items that make up nearly every file."""
    root = load_schema(CANDIDATES_SCHEMA)
    schema = root["$defs"]["candidate"]
    simple = {"type", "additionalProperties", "required", "properties"} | _ANNOTATIONS
    checks = {name: _property_check(sub) for name, sub in schema.get("properties", {}).items()}
    if (root.get("$ref") != "#/$defs/candidate" or not set(schema) <= simple or schema.get("type") != "object"
            or schema.get("additionalProperties") is not False or None in checks.values()):
        return lambda item: False
    required = frozenset(schema.get("required", ()))

    def fast(item: Any) -> bool:
        return (isinstance(item, dict) and required.issubset(item)
                and all(key in checks and checks[key](value) for key, value in item.items()))

    return fast


#: Keywords the compiled policy check implements (draft 2020-12 meaning), and those it
#: ignores because they never decide validity. A schema with any other keyword is never
#: compiled: every document then goes to jsonschema.
_COMPILED_KEYWORDS = frozenset({
    "type", "properties", "additionalProperties", "required", "minProperties", "items", "maxItems",
    "uniqueItems", "enum", "const", "minLength", "maxLength", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "oneOf", "$ref"})
_IGNORED_KEYWORDS = _ANNOTATIONS | {"$schema", "$id", "$defs", "x-exactly-one"}


class _NotCompiled(Exception):
    """The schema uses something the compiled check does not implement."""


def _plain(value: Any) -> bool:
    """Whether ``value`` is made only of the JSON types the compiled check judges (YAML
    can also give dates, and floats can be non-finite: those go to jsonschema)."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(map(_plain, value))
    if isinstance(value, dict):
        return all(isinstance(k, str) for k in value) and all(map(_plain, value.values()))
    return False


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality as jsonschema sees it: true is not 1, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def _is_type(name: str, value: Any) -> bool:
    if name == "integer":
        # 2.0 is an integer to jsonschema; the compiled check leaves floats to it.
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _PY_TYPES[name]) and (name == "boolean" or not isinstance(value, bool))


def _compile(schema: Any, root: Mapping[str, Any], refs: dict[str, Any]) -> Any:
    """A predicate ``value -> bool`` equivalent to the schema's validity for plain
    values (see :func:`_plain`), or :class:`_NotCompiled`."""
    if schema is True:
        return lambda value: True
    if schema is False:
        return lambda value: False
    if not isinstance(schema, dict) or not set(schema) <= _COMPILED_KEYWORDS | _IGNORED_KEYWORDS:
        raise _NotCompiled(schema)
    checks: list[Any] = []
    ref = schema.get("$ref")
    if ref is not None:
        if not isinstance(ref, str) or not ref.startswith("#/$defs/") or ref.count("/") != 2:
            raise _NotCompiled(ref)
        name = ref.split("/")[-1]
        if name not in refs:
            refs[name] = None  # a cycle resolves through the table at call time
            refs[name] = _compile(root["$defs"][name], root, refs)
        checks.append(lambda value, name=name: refs[name](value))
    if "type" in schema:
        names = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        if not all(n in _PY_TYPES for n in names):
            raise _NotCompiled(names)
        checks.append(lambda value: any(_is_type(n, value) for n in names))
    if "enum" in schema:
        choices = list(schema["enum"])
        checks.append(lambda value: any(_json_equal(value, c) for c in choices))
    if "const" in schema:
        const = schema["const"]
        checks.append(lambda value: _json_equal(value, const))
    bounds = [(k, schema[k]) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema]
    if bounds:
        def in_bounds(value: Any) -> bool:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return True
            for kind, bound in bounds:
                if not (value >= bound if kind == "minimum" else value <= bound if kind == "maximum"
                        else value > bound if kind == "exclusiveMinimum" else value < bound):
                    return False
            return True
        checks.append(in_bounds)
    if "minLength" in schema or "maxLength" in schema or "pattern" in schema:
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
        checks.append(lambda value: not isinstance(value, str) or (
            len(value) >= low and (high is None or len(value) <= high)
            and (pattern is None or pattern.search(value) is not None)))
    if {"properties", "additionalProperties", "required", "minProperties"} & set(schema):
        props = {k: _compile(v, root, refs) for k, v in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        other = _compile(extra, root, refs)
        required = tuple(schema.get("required", ()))
        least = schema.get("minProperties", 0)

        def object_ok(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            if len(value) < least or not all(k in value for k in required):
                return False
            return all(props[k](v) if k in props else other(v) for k, v in value.items())
        checks.append(object_ok)
    if {"items", "maxItems", "uniqueItems"} & set(schema):
        item = _compile(schema.get("items", True), root, refs)
        most, unique = schema.get("maxItems"), schema.get("uniqueItems", False)

        def array_ok(value: Any) -> bool:
            if not isinstance(value, list):
                return True
            if most is not None and len(value) > most:
                return False
            if unique and any(_json_equal(a, b) for i, a in enumerate(value) for b in value[:i]):
                return False
            return all(map(item, value))
        checks.append(array_ok)
    if "oneOf" in schema:
        options = [_compile(sub, root, refs) for sub in schema["oneOf"]]
        checks.append(lambda value: sum(1 for o in options if o(value)) == 1)
    return lambda value: all(check(value) for check in checks)


@lru_cache(maxsize=None)
def _policy_fast_check() -> Any:
    """A validity test compiled from the policy schema (its keywords as draft 2020-12
    defines them): True exactly when jsonschema would accept the mapping, for mappings
    of plain JSON values; anything else (a date, a non-finite float, a float where an
    integer is asked, an invalid document) goes to jsonschema, for its verdict and its
    messages. It saves importing jsonschema (~80 ms) for every valid policy a
    command loads; a test holds its verdicts equal to jsonschema's."""
    root = load_schema(POLICY_SCHEMA)
    try:
        check = _compile(root, root, {})
    except (_NotCompiled, KeyError, TypeError, re.error):
        return lambda data: False
    return lambda data: _plain(data) and check(data)


# --------------------------------------------------------------------------- translation


def _rank(error: ValidationError, location: Location | None, path: str) -> tuple[Any, ...]:
    """Sort key, best first: jsonschema's relevance (without its sibling-path
    component), then document order."""
    from jsonschema.exceptions import relevance

    # jsonschema types the key as merely comparable; it is a 5-tuple of numbers.
    shallow, _siblings, strong_kind, strong, typed = cast("tuple[Any, ...]", relevance(error))
    line = location.line if location and location.line is not None else 0
    col = location.col if location and location.col is not None else 0
    return (-shallow, -strong_kind, -strong, -typed, line, col, path)


def _violations(
    data: Any, schema_name: str, base: str, words: Mapping[str, str]
) -> Iterable[tuple[ValidationError, str, str, str]]:
    """(error, rule, path, message) for every violation, duplicates removed."""
    seen: set[tuple[str, str]] = set()
    for error in _validator(schema_name).iter_errors(data):
        for rule, path, message in _translate(error, base, words):
            if (path, message) not in seen:
                seen.add((path, message))
                yield error, rule, path, message


def _join(base: str, parts: Iterable[str | int]) -> str:
    path = base
    for part in parts:
        path = child_path(path, part)
    return path


def _translate(error: ValidationError, base: str, words: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """The (rule, path, message) issues one jsonschema error stands for."""
    path = _join(base, error.absolute_path)
    kind = str(error.validator)
    value: Any = error.validator_value
    instance = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    hint = f"; {schema['x-hint']}" if "x-hint" in schema else ""

    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        return [
            ("unknown_field", child_path(path, key), _unknown_field(key, allowed))
            for key in instance
            if key not in allowed
        ]
    if kind == "required" and isinstance(instance, dict):
        where = words["root"] if path == base else f"under {path.removeprefix('$.')}"
        return [
            ("missing_field", child_path(path, key), f"required field {key!r} is missing; add it {where}")
            for key in value
            if key not in instance
        ]
    if kind == "type":
        expected = " or ".join(words.get(name, name) for name in ([value] if isinstance(value, str) else value))
        got = f"{_describe(instance, words)}{_type_hint(value, instance, words)}"
        return [("wrong_type", path, f"expected {expected}, got {got}")]
    if kind == "enum":
        choices = ", ".join(str(choice) for choice in value)
        got = f"{_show(instance)}{_suggest_value(instance, value)}"
        return [("bad_value", path, f"must be one of: {choices}; got {got}")]
    if kind == "const":
        return [("bad_value", path, f"must be {_show(value)}; got {_show(instance)}")]
    if kind in _BOUNDS:
        return [("out_of_range", path, f"must be {_BOUNDS[kind]} {value}; got {_show(instance)}")]
    if kind in ("minLength", "minProperties") and value == 1:
        return [("bad_value", path, f"must not be empty{hint}")]
    if kind == "pattern":
        return [("bad_value", path, f"{_show(instance)} is not allowed here{hint or f'; it must match {value}'}")]
    if kind == "uniqueItems" and isinstance(instance, list):
        dup = next((item for i, item in enumerate(instance) if item in instance[:i]), None)
        return [("bad_value", path, f"{_show(dup)} is listed more than once; list each only once")]
    if kind == "oneOf" and "x-exactly-one" in schema:
        # A non-mapping already has its wrong_type issue; "valid under each" would be noise.
        if not isinstance(instance, dict):
            return []
        return [("bad_matcher", path, _exactly_one(schema["x-exactly-one"], instance))]
    if kind in ("oneOf", "anyOf") and error.context:
        from jsonschema.exceptions import best_match

        inner = best_match([error])
        if inner is not None and inner is not error:
            return _translate(inner, base, words)
    return [("schema", path, f"{error.message}{hint}")]


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` was most likely meant to be, or ``None``: an exact match
    after snake-casing (``maxTokens`` → ``max_tokens``) or case-folding, else the
    closest by :func:`difflib.get_close_matches`."""
    options = list(choices)
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", word).replace("-", "_").lower()
    for option in options:
        if option.lower() in (word.lower(), snake):
            return option
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_field(key: str, allowed: list[str]) -> str:
    match = suggest(key, allowed)
    if match is not None:
        return f"unknown field {key!r}; did you mean {match!r}?"
    if allowed:
        return f"unknown field {key!r}; allowed here: {', '.join(allowed)}"
    return f"unknown field {key!r}; remove it"


def _suggest_value(instance: Any, choices: Iterable[Any]) -> str:
    if not isinstance(instance, str):
        return ""
    match = suggest(instance, [str(choice) for choice in choices])
    return f" — did you mean {match!r}?" if match is not None else ""


def _exactly_one(keys: list[str], instance: Mapping[str, Any]) -> str:
    present = [key for key in keys if key in instance]
    names = ", ".join(keys)
    if not present:
        return f"a matcher needs one of {names}; add one, e.g. `id: refund-terms`"
    return f"a matcher takes exactly one of {names}, found {' and '.join(present)}; split it into separate matchers"


def _show(value: Any) -> str:
    """A value as it would be written: strings quoted (and shortened), null/true/false."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float)) else type(value).__name__


def _describe(value: Any, words: Mapping[str, str]) -> str:
    if isinstance(value, (dict, list)):
        word = words["object" if isinstance(value, dict) else "array"]
        return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {_show(value)}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    return f"string {_show(value)}" if isinstance(value, str) else type(value).__name__


def _type_hint(expected: Any, instance: Any, words: Mapping[str, str]) -> str:
    names = {expected} if isinstance(expected, str) else set(expected)
    if isinstance(instance, str) and names & {"integer", "number"}:
        if re.fullmatch(r"[-+]?[0-9]+(\.[0-9]+)?", instance):
            return "; remove the quotes"
        if re.fullmatch(r"[-+]?[0-9][0-9_]*", instance):
            return f"; write it without underscores ({instance.replace('_', '')})"
    if "string" in names and isinstance(instance, (bool, int, float)) and instance is not None:
        quote = words["quote"]
        return f"; quote it ({quote}{_show(instance)}{quote})"
    return ""


def matcher_label(kind: str, value: Any) -> str:
    """A pinned/blocked selector for messages: ``id 'refund-terms'``, ``glob 'legal-*'``,
    ``metadata {kind: 'disclaimer', pii: true}``."""
    if kind == "metadata":
        return "metadata {" + ", ".join(f"{key}: {_show(item)}" for key, item in sorted(value.items())) + "}"
    return f"{kind} {_show(value)}"
