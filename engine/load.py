"""Text → plain mapping, with the file:line:col of every value.

Policies are YAML. The loader returns plain Python data (dicts, lists, str, int,
float, bool, None) and never constructs arbitrary objects. Candidates files (JSON Lines
or a JSON array) are read by :mod:`engine.candfile`, which shares this module's JSON
paths, issue gathering and :func:`read_text`.

YAML is read at the node level (``yaml.compose`` with PyYAML's ``SafeLoader``); this
module turns nodes into values itself, so that it can record a :class:`Location` for
every JSON path and refuse the classic YAML traps instead of guessing:

* duplicate keys (YAML would silently keep the last value);
* YAML 1.1 booleans (``yes``/``no``/``on``/``off``/``y``/``n`` unquoted): only
  ``true``/``false`` are booleans here;
* plain scalars follow the YAML 1.2 core schema (so ``1e3`` is a number, ``1_000`` and
  ``1:30`` are strings), and a zero-padded integer such as ``010`` (octal in YAML 1.1)
  is refused;
* NaN and infinities, explicit tags (``!!python/...``, ``!!binary``), merge keys
  (``<<``) and non-string keys are refused;
* aliases are allowed, but their expansion is capped (alias bombs), and a recursive
  alias is refused;
* tabs, binary junk, non-UTF-8 bytes, more than one document and files over a size
  limit are refused with a message that says what to do.

Every problem is a :class:`~engine.errors.PolicyError` with a code, a JSON path and a
location.
Problems that do not stop the reading (duplicate keys, booleans, ...) are all
gathered into one error, in document order.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from .errors import EngineError, Location, PolicyError

MAX_POLICY_BYTES = 1024 * 1024
"""Default size limit of a policy file (1 MiB)."""

MAX_ALIAS_NODES = 10_000
"""Most nodes a YAML document may expand to once aliases are followed."""

MAX_DEPTH = 64
#: Integers beyond this are not exact in JSON (IEEE-754 doubles), and the digest is JSON.
MAX_SAFE_INTEGER = 2**53 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
"""Deepest nesting accepted in a policy (a policy needs about 5 levels)."""

MAX_ISSUES = 100
"""At most this many issues are kept in one gathered error (``details['total_issues']``
holds the full count)."""

_E = TypeVar("_E", bound=EngineError)

# --------------------------------------------------------------------------- paths

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_LAST_SEGMENT = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_-]*|\[\d+\]|\['(?:[^'\\]|\\.)*'\])$")


def child_path(parent: str, key: str | int) -> str:
    """The JSON path of ``key`` below ``parent``: ``$.spec.budget``, ``$.spec.pinned[0]``,
    and ``$.metadata['a.b']`` for keys that are not plain identifiers."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if _IDENT.fullmatch(key):
        return f"{parent}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{parent}['{escaped}']"


def parent_path(path: str) -> str | None:
    """The JSON path one level up (``$.a.b`` → ``$.a``); ``None`` for ``$``."""
    match = _LAST_SEGMENT.search(path)
    if path == "$" or match is None:
        return None
    return path[: match.start()]


def nearest_location(
    locations: Mapping[str, Location], path: str, file: str | None = None
) -> Location | None:
    """The location of ``path`` or of its nearest ancestor that has one; failing
    that, the bare ``file`` (or ``None`` when there is no file either)."""
    current: str | None = path
    while current is not None:
        found = locations.get(current)
        if found is not None:
            return found
        current = parent_path(current)
    return Location(file) if file is not None else None


def gather_issues(issues: Sequence[_E]) -> _E:
    """One error carrying all ``issues`` (best first); its own fields are the first's.

    Keeps at most :data:`MAX_ISSUES`; ``details['total_issues']`` has the full count
    when some were dropped."""
    if not issues:
        raise ValueError("gather_issues needs at least one issue")
    if len(issues) == 1:
        return issues[0]
    first = issues[0]
    kept = tuple(issues[:MAX_ISSUES])
    details = dict(first.details)
    if len(issues) > MAX_ISSUES:
        details["total_issues"] = len(issues)
    return type(first)(
        first.code,
        first.message,
        path=first.path,
        location=first.location,
        issues=kept,
        details=details,
    )


# --------------------------------------------------------------------------- YAML


@dataclass(frozen=True, slots=True)
class Loaded:
    """A document read from text: plain ``data``, the :class:`Location` of every JSON
    path in it (a key's location for mapping members, the item's for list items, the
    document start for ``$``), and the ``file`` it came from (``None`` for text)."""

    data: Any
    locations: Mapping[str, Location] = field(default_factory=lambda: MappingProxyType({}))
    file: str | None = None

    def location_of(self, path: str) -> Location | None:
        """Location of ``path`` or of its nearest ancestor that has one."""
        return nearest_location(self.locations, path, self.file)


_PLAIN = "ctxbudget:plain"  # tag for unquoted scalars: resolved here, by YAML 1.2 rules
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUES = frozenset({"true", "True", "TRUE"})
_FALSES = frozenset({"false", "False", "FALSE"})
_YAML11_TRUE = frozenset({"yes", "on", "y"})
_YAML11_FALSE = frozenset({"no", "off", "n"})
_INT = re.compile(r"[-+]?[0-9]+")
_PADDED_INT = re.compile(r"[-+]?0[0-9]+")
_INT_OCT = re.compile(r"0o[0-7]+")
_INT_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_NON_FINITE = re.compile(r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
# What the YAML spec (and PyYAML's reader) refuse as "non-printable": binary junk.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class _Loader(yaml.SafeLoader):
    """SafeLoader whose unquoted scalars keep a neutral tag: :meth:`_Walker.plain`
    resolves them by YAML 1.2 rules instead of PyYAML's YAML 1.1 ones."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


def _loc(file: str | None, mark: Any) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class _Walker:
    """Turns a composed node graph into plain values, recording locations and issues."""

    def __init__(self, file: str | None, max_nodes: int) -> None:
        self.file = file
        self.max_nodes = max_nodes
        self.nodes = 0
        self.active: set[int] = set()
        self.locations: dict[str, Location] = {}
        self.issues: list[PolicyError] = []

    def issue(self, mark: Any, path: str, code: str, message: str) -> None:
        self.issues.append(PolicyError(code, message, path=path, location=_loc(self.file, mark)))

    def value(self, node: Any, path: str, depth: int) -> Any:
        def fatal(code: str, message: str) -> PolicyError:
            return PolicyError(code, message, path=path, location=_loc(self.file, node.start_mark))

        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise fatal("policy.alias_bomb", f"the document expands to more than {self.max_nodes} nodes once "
                        "aliases are followed (an alias bomb?); write the values out instead of nesting aliases")
        if depth > MAX_DEPTH:
            raise fatal("policy.too_deep", f"nesting deeper than {MAX_DEPTH} levels; a policy needs only a few "
                        "— flatten the structure")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            raise fatal("policy.alias_bomb", "this alias refers to a node that contains it (a recursive alias); "
                        "write the value out instead")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self.sequence(node, path, depth)
            return self.mapping(node, path, depth)
        finally:
            self.active.discard(id(node))

    def sequence(self, node: Any, path: str, depth: int) -> list[Any]:
        if node.tag != _SEQ_TAG:
            self.explicit_tag(node, path)
        items = []
        for index, item in enumerate(node.value):
            item_path = child_path(path, index)
            self.locations[item_path] = _loc(self.file, item.start_mark)
            items.append(self.value(item, item_path, depth + 1))
        return items

    def mapping(self, node: Any, path: str, depth: int) -> dict[str, Any]:
        if node.tag != _MAP_TAG:
            self.explicit_tag(node, path)
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, path)
            if key is None:
                continue
            key_path = child_path(path, key)
            if key in first_line:
                self.issue(key_node.start_mark, key_path, "policy.duplicate_key",
                           f"duplicate key {key!r} (first defined at line {first_line[key]}); "
                           "YAML would silently keep the last value — remove one")
                continue
            first_line[key] = key_node.start_mark.line + 1
            self.locations[key_path] = _loc(self.file, key_node.start_mark)
            result[key] = self.value(value_node, key_path, depth + 1)
        return result

    def key(self, node: Any, parent: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.issue(node.start_mark, parent, "policy.non_string_key",
                       "a list or mapping cannot be a key; keys must be plain strings")
            return None
        if node.tag == _PLAIN and node.value == "<<":
            self.issue(node.start_mark, parent, "policy.merge_key",
                       "YAML merge keys ('<<') are not supported; write the keys out, or share "
                       "settings with a base policy and `extends:`")
            return None
        key_path = child_path(parent, node.value)
        key = self.scalar(node, key_path)
        if isinstance(key, str):
            return key
        self.issue(node.start_mark, key_path, "policy.non_string_key",
                   f"key {node.value or '(empty)'} is read as {_yaml_type(key)}; keys must be "
                   f"strings — quote it ('{node.value}')")
        return None

    def scalar(self, node: Any, path: str) -> Any:
        if _SURROGATE.search(node.value):
            self.issue(node.start_mark, path, "policy.bad_string",
                       "the string holds a lone surrogate escape (\\ud800-\\udfff), which is not "
                       "valid Unicode; remove it")
            return ""
        if node.tag == _STR_TAG:
            return node.value
        if node.tag != _PLAIN:
            self.explicit_tag(node, path)
            return node.value
        return self.plain(node, path)

    def plain(self, node: Any, path: str) -> Any:
        """Resolve an unquoted scalar by the YAML 1.2 core schema, refusing traps."""
        text: str = node.value
        if _is_plain_string(text):
            return text
        if text in _NULLS:
            return None
        if text in _TRUES:
            return True
        if text in _FALSES:
            return False
        lowered = text.lower()
        if lowered in _YAML11_TRUE or lowered in _YAML11_FALSE:
            meant = "true" if lowered in _YAML11_TRUE else "false"
            self.issue(node.start_mark, path, "policy.yaml11_boolean",
                       f"'{text}' is read as a boolean by YAML 1.1; quote it ('{text}') or write {meant}")
            return text
        if _PADDED_INT.fullmatch(text):
            self.issue(node.start_mark, path, "policy.ambiguous_number",
                       f"'{text}' is octal in YAML 1.1 but decimal in YAML 1.2; write it without "
                       f"leading zeros ({int(text)}) or quote it ('{text}')")
            return text
        for pattern, digits, base in ((_INT, 0, 10), (_INT_OCT, 2, 8), (_INT_HEX, 2, 16)):
            if pattern.fullmatch(text):
                number = int(text[digits:], base) if len(text) <= 40 else None
                if number is None or abs(number) > MAX_SAFE_INTEGER:
                    self.issue(node.start_mark, path, "policy.number_too_large",
                               f"'{text[:24]}{'...' if len(text) > 24 else ''}' is beyond ±2^53, the "
                               "largest integer JSON keeps exactly; use a smaller number")
                    return text
                return number
        if _NON_FINITE.fullmatch(text) or (_FLOAT.fullmatch(text) and not math.isfinite(float(text))):
            self.issue(node.start_mark, path, "policy.non_finite",
                       f"'{text}' is not a finite number; NaN and infinity are not allowed — write a finite number")
            return text
        if _FLOAT.fullmatch(text):
            return float(text)
        return text

    def explicit_tag(self, node: Any, path: str) -> None:
        tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
        self.issue(node.start_mark, path, "policy.yaml_tag",
                   f"explicit YAML tags such as '{tag}' are not supported; remove the tag "
                   "(quote the value to make it a string)")


def _deepest_opening(text: str) -> tuple[int, int]:
    """Line and column of the bracket where flow nesting first passes MAX_DEPTH (the
    place to look when the YAML parser itself gave up on recursion)."""
    return _bracket_past(text, MAX_DEPTH) or (1, 1)


def _bracket_past(text: str, limit: int) -> tuple[int, int] | None:
    """Line and column of the first ``[``/``{`` at raw bracket depth ``limit + 1``
    (quotes are not parsed), or ``None``."""
    depth = 0
    for offset, ch in enumerate(text):
        if ch in "[{":
            depth += 1
            if depth > limit:
                return _line_col(text, offset)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return None


def _is_plain_string(text: str) -> bool:
    """Whether ``text`` written unquoted reads back as that same string here (not as
    null, a boolean, a number, or a refused YAML 1.1 form)."""
    if text in _NULLS or text in _TRUES or text in _FALSES or text == "<<":
        return False
    if text.lower() in _YAML11_TRUE or text.lower() in _YAML11_FALSE:
        return False
    numeric = (_INT, _PADDED_INT, _INT_OCT, _INT_HEX, _FLOAT, _NON_FINITE)
    return not any(pattern.fullmatch(text) for pattern in numeric)


class _Dumper(yaml.SafeDumper):
    """Writes YAML that this module reads back to the same data."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Quote what would read back as something else; escape line breaks ("\n\n")
    # rather than fold them across lines.
    style = '"' if any(ch in data for ch in "\n\r\t\x85\u2028\u2029") else None if _is_plain_string(data) else "'"
    return dumper.represent_scalar(_STR_TAG, data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """Plain data as block-style YAML with sorted keys; :func:`load_yaml_text` reads
    it back to equal data (strings that would read as anything else are quoted)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, allow_unicode=True, default_flow_style=False, width=88)


def _yaml_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    return "a number"


def load_yaml_text(
    text: str,
    file: str | None = None,
    *,
    max_bytes: int = MAX_POLICY_BYTES,
    max_nodes: int = MAX_ALIAS_NODES,
) -> Loaded:
    """Read one YAML document whose top level is a mapping.

    Args:
        text: the YAML source.
        file: the name used in locations and messages (``None``: ``<input>``).
        max_bytes: size limit of ``text`` encoded as UTF-8 (``policy.too_large``).
        max_nodes: limit of the expanded node count (``policy.alias_bomb``).

    Returns:
        :class:`Loaded` with plain data and the location of every path.

    Raises:
        PolicyError: with every problem found (see the module docstring for codes).
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise _too_large(size, max_bytes, file)
    text = text.removeprefix("\ufeff")
    junk = _NON_PRINTABLE.search(text)
    if junk is not None:
        line, col = _line_col(text, junk.start())
        raise PolicyError(
            "policy.control_character",
            f"control character U+{ord(junk.group()):04X} is not allowed in YAML; the "
            "file looks binary or corrupted — save it as plain UTF-8 text",
            location=Location(file, line, col),
        )
    root = _compose(text, file)
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _PLAIN and root.value in _NULLS):
        raise PolicyError(
            "policy.empty",
            "the file is empty; a policy needs apiVersion, kind, metadata and spec",
            location=Location(file, 1, 1),
        )
    if not isinstance(root, yaml.MappingNode):
        got = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        raise PolicyError(
            "policy.not_a_mapping",
            f"the top level must be a mapping of `key: value` lines, got {got}",
            location=_loc(file, root.start_mark),
        )
    walker = _Walker(file, max_nodes)
    walker.locations["$"] = _loc(file, root.start_mark)
    data = walker.value(root, "$", 0)
    if walker.issues:
        raise gather_issues(walker.issues)
    return Loaded(data, MappingProxyType(walker.locations), file)


#: Raw bracket depth (quotes not parsed) past which a text is refused before PyYAML reads
#: it: PyYAML's scanner is quadratic in flow depth (a 3,000-deep ``[[[…`` took 1.4 s idle
#: and 9 s on a loaded machine), while at this depth it costs milliseconds. Real nesting
#: past MAX_DEPTH is refused anyway; only a string holding this many unclosed brackets
#: could be refused here wrongly.
PRESCAN_DEPTH = 4 * MAX_DEPTH


def _too_deep_brackets(text: str) -> tuple[int, int] | None:
    """Line and column of the bracket where raw flow nesting passes PRESCAN_DEPTH."""
    if text.count("[") + text.count("{") <= PRESCAN_DEPTH:  # the common case, in C
        return None
    return _bracket_past(text, PRESCAN_DEPTH)


def _compose(text: str, file: str | None) -> Any:
    """The root node of the only document in ``text``, or ``None`` when there is none."""
    deep = _too_deep_brackets(text)
    if deep is not None:
        raise PolicyError(
            "policy.too_deep",
            f"the YAML is nested more than {MAX_DEPTH} levels deep; a policy needs only a few levels",
            location=Location(file, deep[0], deep[1]),
        )
    loader = _Loader(text)
    try:
        loader.get_event()  # type: ignore[no-untyped-call]  # STREAM-START
        if loader.check_event(yaml.StreamEndEvent):
            return None
        root = loader.compose_document()
        if not loader.check_event(yaml.StreamEndEvent):
            extra = loader.peek_event()  # type: ignore[no-untyped-call]
            raise PolicyError(
                "policy.multiple_documents",
                "the file holds more than one YAML document ('---'); a policy is one "
                "document — remove the extra '---' and what follows, or split the files",
                location=_loc(file, extra.start_mark),
            )
        return root
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, file) from None
    except yaml.YAMLError as exc:  # unmarked reader errors; the text was screened, so rare
        raise PolicyError("policy.yaml_syntax", f"invalid YAML: {exc}", location=Location(file)) from None
    except RecursionError:
        line, col = _deepest_opening(text)
        raise PolicyError(
            "policy.too_deep",
            "the YAML is nested too deeply to read; a policy needs only a few levels",
            location=Location(file, line, col),
        ) from None
    finally:
        loader.dispose()


def _syntax_error(exc: yaml.MarkedYAMLError, file: str | None) -> PolicyError:
    mark = exc.problem_mark or exc.context_mark
    location = _loc(file, mark) if mark is not None else Location(file)
    problem = exc.problem or "invalid YAML"
    if "'\\t'" in problem:
        return PolicyError(
            "policy.tab_character",
            "tab character where YAML allows only spaces (indentation and separators); "
            "replace the tab with spaces",
            location=location,
        )
    context = f" ({exc.context})" if exc.context else ""
    return PolicyError(
        "policy.yaml_syntax",
        f"invalid YAML: {problem}{context}; check the indentation, colons and quotes here",
        location=location,
    )


def _too_large(size: int, limit: int, file: str | None) -> PolicyError:
    return PolicyError(
        "policy.too_large",
        f"the file is {size} bytes, over the limit of {limit} bytes; a policy should be "
        "small — move shared settings into a base policy (`extends:`) or raise max_bytes",
        location=Location(file),
        details={"size_bytes": size, "limit_bytes": limit},
    )


def read_text(
    path: str | Path | int, error: type[_E], prefix: str, max_bytes: int | None, file: str | None = None
) -> tuple[str, str]:
    """(text, file label) of a UTF-8 file; ``error`` with ``<prefix>.*`` codes otherwise.
    ``path`` may be an open file descriptor (read and closed here: ``extends`` opens bases
    below a folder handle). Shared by the policy and candidates (:mod:`engine.candfile`) readers."""
    file = str(path) if file is None else file
    size = 0
    try:
        with open(path, "rb") as handle:
            raw = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
            if max_bytes is not None and len(raw) > max_bytes:
                size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise error(f"{prefix}.file_not_found", "no such file; check the path", location=Location(file)) from None
    except OSError as exc:
        raise error(
            f"{prefix}.file_unreadable",
            f"cannot read the file ({exc.strerror or exc}); check the path and permissions",
            location=Location(file),
        ) from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise _too_large(size, max_bytes, file)
    try:
        return raw.decode("utf-8-sig"), file
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(
            f"{prefix}.not_utf8",
            f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8",
            location=Location(file, line, col),
        ) from None


def load_yaml_file(
    path: str | Path | int,
    *,
    file: str | None = None,
    max_bytes: int = MAX_POLICY_BYTES,
    max_nodes: int = MAX_ALIAS_NODES,
) -> Loaded:
    """Read a YAML policy file (UTF-8, optional BOM); see :func:`load_yaml_text`.

    Locations name the file as ``file``, by default ``str(path)``. Raises
    :class:`PolicyError` with ``policy.file_not_found``, ``policy.file_unreadable``,
    ``policy.too_large``, ``policy.not_utf8`` or any code of :func:`load_yaml_text`."""
    text, label = read_text(path, PolicyError, "policy", max_bytes, file)
    return load_yaml_text(text, label, max_bytes=max_bytes, max_nodes=max_nodes)
