"""A decision record against ``schemas/audit.schema.json``, fast enough for big records.

What goes in: a record (a mapping). What comes out: the best-ranked schema error as
``(JSON path, message)``, or None — the same verdict and message as jsonschema over the
whole record. The per-item arrays (``input.items``, ``items``: one row per candidate)
are checked row by row with a test compiled from their schemas; only a row that test
rejects goes to jsonschema, for its message (jsonschema alone takes seconds on 10,000
rows).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from operator import itemgetter
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from ..schema import load_schema

_SIMPLE = {"type", "minLength", "minimum", "maximum", "enum", "pattern", "description"}
Row = Callable[[Any], bool]


#: The exact Python types of a parsed JSON value of each schema type (subclasses, and
#: floats with an integral value for "integer", go to jsonschema: the checks are conservative).
_EXACT: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
    "object": (dict,), "array": (list,), "null": (type(None),)}


def _value_check(schema: Mapping[str, Any]) -> Row | None:
    """A predicate for one property schema (type, minLength, minimum, enum, pattern),
    or None when the schema uses anything else. Conservative: True only when jsonschema
    accepts the value too (the exact types of parsed JSON; an enum value of the same
    type, as jsonschema tells True from 1)."""
    if not set(schema) <= _SIMPLE:
        return None
    names = schema.get("type")
    kinds = None if names is None else frozenset(
        t for n in ([names] if isinstance(names, str) else names) for t in _EXACT[n])
    enum = schema.get("enum")
    pairs = None
    if enum is not None:
        try:
            pairs = frozenset((type(e), e) for e in enum)
        except TypeError:  # an unhashable member: compared one by one
            pairs = None
    pattern = re.compile(schema["pattern"]).search if "pattern" in schema else None
    min_length, minimum, maximum = schema.get("minLength", 0), schema.get("minimum"), schema.get("maximum")
    if (kinds is not None and enum is None and pattern is None and not min_length and minimum is None
            and maximum is None):
        return lambda value: type(value) in kinds  # the common case: a type only

    def check(value: Any) -> bool:
        t = type(value)
        if kinds is not None and t not in kinds:
            return False
        if enum is not None:
            try:
                known = (t, value) in pairs if pairs is not None else None
            except TypeError:
                known = None
            if known is None:
                known = any(value == e and t is type(e) for e in enum)
            if not known:
                return False
        if t is str:
            if len(value) < min_length or (pattern is not None and not pattern(value)):
                return False
        elif kinds is None and isinstance(value, str):
            return False  # a str subclass: jsonschema's call
        if minimum is not None and (t is int or t is float) and value < minimum:
            return False
        if maximum is not None and (t is int or t is float) and value > maximum:
            return False
        return kinds is not None or t in (int, float, str, bool, dict, list, type(None))

    return check


def _row_check(schema: Mapping[str, Any]) -> Row | None:
    """A conservative test compiled from an item schema: True only when jsonschema
    would accept the row too (rows it rejects go to jsonschema for the message)."""
    if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
        return None
    checks = {k: _value_check(v) for k, v in schema.get("properties", {}).items()}
    if None in checks.values():
        return None
    required = frozenset(schema.get("required", ()))

    def fast(row: Any) -> bool:
        return (isinstance(row, dict) and required.issubset(row)
                and all(k in checks and checks[k](v) for k, v in row.items()))  # type: ignore[misc]

    return fast


_COMPILED = _SIMPLE | {"properties", "required", "additionalProperties", "items", "maxLength",
                       "maxProperties", "propertyNames", "title", "format", "$schema", "$id", "$defs"}
_LOCAL_REF = re.compile(r"#/\$defs/([A-Za-z0-9_]+)\Z")


def _compile(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Row:
    """A conservative predicate for ``schema``: True only when jsonschema accepts the
    value too. Compiled: type, enum, pattern, minLength, maxLength, minimum, properties,
    required, additionalProperties, items, maxProperties, propertyNames and a
    local ``$ref`` to ``$defs`` (``format`` is an annotation, as for the
    validators here, which check no formats); the other keywords of a schema (anyOf,
    $ref, if/then, ...) are checked by a jsonschema validator of their own, built once."""
    if not isinstance(schema, Mapping) or "patternProperties" in schema or any(
            k.startswith("unevaluated") for k in schema):
        return Draft202012Validator(schema if not isinstance(schema, Mapping) else {"$defs": defs, **schema}).is_valid
    ref = _LOCAL_REF.match(str(schema.get("$ref", "")))
    if ref and ref.group(1) in defs and set(schema) <= {"$ref", "description", "title"}:
        target = defs[ref.group(1)]
        if target is not schema and "$ref" not in target:
            return _compile(target, defs)
    rest = {k: v for k, v in schema.items() if k not in _COMPILED}
    if rest:
        # Keywords are independent (``if``/``then``/``else`` go together): the compiled
        # ones here, anyOf/allOf/const/dependentRequired/if-then-else compiled by
        # :func:`_applicators`, the others (oneOf, $ref, ...) by a validator of their own.
        compiled = _compile({k: v for k, v in schema.items() if k in _COMPILED}, defs)
        tests, rest = _applicators(rest, defs)
        if rest:
            tests.append(Draft202012Validator({"$defs": defs, **rest}).is_valid)
        return lambda value: compiled(value) and all(t(value) for t in tests)
    value_check = _value_check({k: v for k, v in schema.items() if k in _SIMPLE})
    assert value_check is not None  # only _SIMPLE keywords were passed
    if set(schema) <= _SIMPLE | {"title", "format", "$schema", "$id", "$defs"}:
        return value_check
    max_length = schema.get("maxLength")
    props = {k: _compile(v, defs) for k, v in schema.get("properties", {}).items()}
    required = frozenset(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    extra_check = None if isinstance(extra, bool) else _compile(extra, defs)
    item_check = _compile(schema["items"], defs) if "items" in schema else None
    rows_check = _columns(schema["items"], defs) if "items" in schema else None
    max_props = schema.get("maxProperties")
    name_check = _compile(schema["propertyNames"], defs) if "propertyNames" in schema else None

    def check(value: Any) -> bool:
        if not value_check(value):
            return False
        if max_length is not None and isinstance(value, str) and len(value) > max_length:
            return False
        if isinstance(value, dict):
            if not required.issubset(value) or (max_props is not None and len(value) > max_props):
                return False
            if name_check is not None and not all(map(name_check, value)):
                return False
            for k, v in value.items():
                known = props.get(k)
                if known is not None:
                    if not known(v):
                        return False
                elif extra is False or (extra_check is not None and not extra_check(v)):
                    return False
        elif item_check is not None and isinstance(value, list):
            return (rows_check is not None and rows_check(value)) or all(map(item_check, value))
        return True

    return check


_CONST_TYPES = (str, int, float, bool, type(None))


def _const(want: Any) -> Row | None:
    """``const`` of a string, number, boolean or null: True only for a value of the same
    exact type that equals it (jsonschema accepts that too; anything else goes to
    :func:`_decide`'s caller or is a conservative no)."""
    if type(want) not in _CONST_TYPES:
        return None
    kind = type(want)
    return lambda value: type(value) is kind and value == want


def _decide(schema: Any) -> Callable[[Any], bool | None] | None:
    """An *exact* verdict (True, False, or None: not sure) for the condition of an
    ``if``: only ``{"properties": {key: {"const": c}}}`` (c a string, boolean or null),
    the form the record schema uses; None (the schema) for any other condition."""
    if not isinstance(schema, Mapping) or set(schema) != {"properties"}:
        return None
    props = schema["properties"]
    if not isinstance(props, Mapping) or len(props) != 1:
        return None
    (key, sub), = props.items()
    if not isinstance(sub, Mapping) or set(sub) != {"const"} or type(sub["const"]) not in (str, bool, type(None)):
        return None
    want = sub["const"]
    plain = (str, int, float, bool, type(None), dict, list)

    def decide(value: Any) -> bool | None:
        if type(value) is not dict:
            return None if isinstance(value, dict) else True  # properties apply to objects only
        if key not in value:
            return True
        got = value[key]
        if type(got) not in plain:
            return None  # a subclass: jsonschema's call
        if type(want) is str or want is None:
            return type(got) is type(want) and got == want
        return type(got) is bool and got is want  # jsonschema tells True from 1

    return decide


def _applicators(rest: Mapping[str, Any], defs: Mapping[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    """Conservative tests for the keywords of ``rest`` this module compiles — ``anyOf``
    (some branch accepts), ``allOf`` (every one does), ``const``, ``dependentRequired``
    and ``if``/``then``/``else`` with a condition :func:`_decide` decides — and the
    keywords left for jsonschema."""
    tests: list[Row] = []
    left = dict(rest)
    if isinstance(left.get("anyOf"), list) and left["anyOf"]:
        branches = [_compile(b, defs) for b in left.pop("anyOf")]
        tests.append(lambda value: any(b(value) for b in branches))
    if isinstance(left.get("allOf"), list):
        parts = [_compile(b, defs) for b in left.pop("allOf")]
        tests.append(lambda value: all(b(value) for b in parts))
    if "const" in left and (const := _const(left["const"])) is not None:
        del left["const"]
        tests.append(const)
    deps = left.get("dependentRequired")
    if isinstance(deps, Mapping) and all(isinstance(v, list) for v in deps.values()):
        del left["dependentRequired"]
        pairs = [(k, tuple(v)) for k, v in deps.items()]
        tests.append(lambda value: not isinstance(value, dict) or all(
            all(d in value for d in need) for k, need in pairs if k in value))
    if "if" in left and (decide := _decide(left["if"])) is not None:
        cond = {k: left.pop(k) for k in ("if", "then", "else") if k in left}
        then = _compile(cond["then"], defs) if "then" in cond else None
        other = _compile(cond["else"], defs) if "else" in cond else None
        exact = Draft202012Validator({"$defs": defs, **cond}).is_valid

        def conditional(value: Any) -> bool:
            verdict = decide(value)
            if verdict is None:
                return exact(value)
            branch = then if verdict else other
            return branch is None or branch(value)

        tests.append(conditional)
    return tests, left


_FLAT_ROW = {"type", "properties", "required", "additionalProperties", "description", "title"}


def _column_check(schema: Mapping[str, Any]) -> Row | None:
    """A conservative test of a whole column (the values one property takes over the rows
    of an array) against a property schema of ``type``/``enum`` and ``minLength``,
    ``minimum``, ``pattern``: True only when :func:`_value_check` is True for every
    value; None when the schema is not of that kind. Whole-column expressions (types as a
    set, the enum as a set of (type, value) pairs, lengths by one ``min``), so a column
    costs a few C-level passes."""
    if not set(schema) <= _SIMPLE or ("type" not in schema and "enum" not in schema):
        return None
    names = schema.get("type")
    kinds = None if names is None else frozenset(
        t for n in ([names] if isinstance(names, str) else names) for t in _EXACT[n])
    pairs = None
    if "enum" in schema:
        try:
            pairs = frozenset((type(e), e) for e in schema["enum"])
        except TypeError:
            return None
    pattern = re.compile(schema["pattern"]).search if "pattern" in schema else None
    min_length, minimum, maximum = schema.get("minLength", 0), schema.get("minimum"), schema.get("maximum")

    def check(column: Any) -> bool:
        types = set(map(type, column))
        if kinds is not None and not types <= kinds:
            return False
        if pairs is not None:
            try:
                if not set(zip(map(type, column), column)) <= pairs:
                    return False
            except TypeError:  # an unhashable value: not a member
                return False
        if (pattern is not None or min_length) and str in types:
            strings = column if types == {str} else [v for v in column if type(v) is str]
            if min(map(len, strings)) < min_length or (pattern is not None and not all(map(pattern, strings))):
                return False
        if minimum is not None and types & {int, float}:
            if any(v < minimum for v in column if type(v) is int or type(v) is float):
                return False
        if maximum is not None and types & {int, float}:
            if any(v > maximum for v in column if type(v) is int or type(v) is float):
                return False
        return True

    return check


def _columns(schema: Any, defs: Mapping[str, Any]) -> Row | None:
    """For an array of flat objects (an item schema of ``type: object``, properties that
    :func:`_column_check` compiles, ``required`` and ``additionalProperties: false``,
    such as the per-candidate rows of a record): a test of the whole array column by
    column, True only when the row test of :func:`_compile` accepts every row; None for
    any other item schema. (A rejected array is tried row by row, then by jsonschema.)"""
    ref = _LOCAL_REF.match(str(schema.get("$ref", ""))) if isinstance(schema, Mapping) else None
    if ref and ref.group(1) in defs and set(schema) <= {"$ref", "description", "title"}:
        schema = defs[ref.group(1)]
    if (not isinstance(schema, Mapping) or not set(schema) <= _FLAT_ROW or schema.get("type") != "object"
            or schema.get("additionalProperties") is not False or not isinstance(schema.get("properties"), Mapping)):
        return None
    checks = {k: _column_check(v) for k, v in schema["properties"].items()}
    if None in checks.values():
        return None
    required, known = frozenset(schema.get("required", ())), frozenset(checks)
    by_column = [(k, c, k in required) for k, c in checks.items()]

    def rows_ok(rows: Any) -> bool:
        if not set(map(type, rows)) <= {dict}:
            return False
        if not all(required <= keys <= known for keys in set(map(frozenset, rows))):
            return False
        for key, check, always in by_column:
            column = list(map(itemgetter(key), rows)) if always else [r[key] for r in rows if key in r]
            if column and not check(column):  # type: ignore[misc]
                return False
        return True

    return rows_ok


@lru_cache(maxsize=1)
def _record_check() -> Row:
    """:func:`_compile` of the whole record schema, the per-item arrays by their row
    tests (built once per process)."""
    root = load_schema("audit.schema.json")
    return _compile(root, root.get("$defs", {}))


@lru_cache(maxsize=1)
def _validators() -> tuple[Draft202012Validator, Draft202012Validator, Row | None,
                           Draft202012Validator, Row | None]:
    root = load_schema("audit.schema.json")
    inp = {"$defs": root.get("$defs", {}), **root["$defs"]["input_item"]}
    item = root["properties"]["items"]["items"]
    return (Draft202012Validator(root), Draft202012Validator(inp), _row_check(inp),
            Draft202012Validator(item), _row_check(item))


def schema_error(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """The best-ranked schema error as (JSON path, message), or None. The per-item
    arrays are checked row by row with a compiled test (jsonschema on 10,000 rows costs
    seconds); the rest of the record by jsonschema itself."""
    if _record_check()(record):
        return None  # the compiled check accepts only what jsonschema accepts
    whole, inp_v, inp_fast, item_v, item_fast = _validators()
    inp = record.get("input")
    rows = inp.get("items") if isinstance(inp, Mapping) else None
    items = record.get("items")
    skeleton = dict(record)
    if isinstance(rows, list):
        skeleton["input"] = {**inp, "items": []}  # type: ignore[dict-item]
    if isinstance(items, list):
        skeleton["items"] = []
    error = best_match(whole.iter_errors(skeleton))
    if error is not None:
        return _where("$", error.absolute_path), error.message
    for base, array, validator, fast in (("$.input.items", rows, inp_v, inp_fast),
                                         ("$.items", items, item_v, item_fast)):
        for k, row in enumerate(array if isinstance(array, list) else ()):
            if fast is not None and fast(row):
                continue
            error = best_match(validator.iter_errors(row))
            if error is not None:
                return _where(f"{base}[{k}]", error.absolute_path), error.message
    return None


def _where(base: str, parts: Iterable[Any]) -> str:
    return base + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
