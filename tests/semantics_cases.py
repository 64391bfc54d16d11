"""The one table of cases that the engine and the verifier must both agree with.

``engine.problem.render`` / ``engine.policy.Matcher`` / ``reduce`` on one side and
``engine.verify`` (its own template reader, matcher and group keys) on the other are
independent code; ``tests/test_semantics.py`` drives every row below through both,
each time also through a full ``allocate``. A row is the definition: when the two
sides disagree with it, the side is wrong.

Templates are read the way ``str.format`` reads them, restricted: ``{{`` and ``}}`` are
literal braces, ``{source_id}``, ``{content}`` and ``{level}`` are the only fields (no
conversion, no format spec, not even an empty one), fields are filled in once (braces
inside the values are text). Metadata values are equal when: both are numbers of equal
value (``1 == 1.0``; booleans are not numbers, ``True`` never equals ``1``), both are
booleans and equal, both are strings and identical, both are null, or both are lists
(tuples count as lists) / mappings whose elements are equal under this same rule. Globs
are ``fnmatch`` patterns matched case-sensitively on every platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TemplateCase:
    name: str
    template: str
    content: str
    rendered: str
    source_id: str = "doc-1"
    level: str = "PARAGRAPH"


TEMPLATES = [
    TemplateCase("content only", "{content}", "hello", "hello"),
    TemplateCase("id prefix", "[{source_id}] {content}", "hello", "[doc-1] hello"),
    TemplateCase("every field", "<{level}:{source_id}>\n{content}\n", "hi", "<PARAGRAPH:doc-1>\nhi\n"),
    TemplateCase("literal braces around a field", "{{{content}}}", "hello", "{hello}"),
    TemplateCase("an escaped field stays text", "{{content}} {content}", "hello", "{content} hello"),
    TemplateCase("JSON-looking template", '{{"id": "{source_id}"}} {content}', "x", '{"id": "doc-1"} x'),
    TemplateCase("doubled braces twice", "{{{{{content}}}}}", "hello", "{{hello}}"),
    TemplateCase("closing brace first", "}}{content}{{", "hello", "}hello{"),
    TemplateCase("a field written twice", "{content}|{content}", "ab", "ab|ab"),
    TemplateCase("braces in the content are text", "{content}", "{level} {{x}} }", "{level} {{x}} }"),
    TemplateCase("a field name in the content is not filled", "[{level}] {content}", "{source_id}",
                 "[PARAGRAPH] {source_id}"),
    TemplateCase("braces in the id are text", "[{source_id}] {content}", "x", "[a{b}] x", source_id="a{b}"),
    TemplateCase("empty content", "> {content} <", "", ">  <"),
    TemplateCase("non-ASCII", "« {source_id} » {content}", "été 🙂", "« doc-1 » été 🙂"),
    TemplateCase("a custom level", "{level}: {content}", "x", "CHUNK: x", level="CHUNK"),
    TemplateCase("percent signs are text", "100% {content} %s %(content)s %%", "x%s", "100% x%s %s %(content)s %%"),
]


@dataclass(frozen=True)
class BadTemplate:
    """A template a policy may not use: the policy is rejected with ``code``;
    ``renders`` says whether the verifier's reader still accepts its syntax (only the
    missing-``{content}`` rule is a policy rule rather than syntax)."""

    template: str
    code: str
    renders: bool = False


BAD_TEMPLATES = [
    BadTemplate("{content:}", "policy.semantic.template_placeholder"),
    BadTemplate("{content!r}", "policy.semantic.template_placeholder"),
    BadTemplate("{content:>10}", "policy.semantic.template_placeholder"),
    BadTemplate("{0} {content}", "policy.semantic.template_placeholder"),
    BadTemplate("{} {content}", "policy.semantic.template_placeholder"),
    BadTemplate("{ content} {content}", "policy.semantic.template_placeholder"),
    BadTemplate("{content.upper}", "policy.semantic.template_placeholder"),
    BadTemplate("{content[0]}", "policy.semantic.template_placeholder"),
    BadTemplate("{title} {content}", "policy.semantic.template_placeholder"),
    BadTemplate("{content", "policy.semantic.template_syntax"),
    BadTemplate("{content} }", "policy.semantic.template_syntax"),
    BadTemplate("{ {content}", "policy.semantic.template_syntax"),
    BadTemplate("[{source_id}]", "policy.semantic.template_missing_content", renders=True),
]


@dataclass(frozen=True)
class PinCase:
    """A ``metadata`` pin (a policy value: string, number, boolean or null) against a
    candidate's metadata."""

    name: str
    pin: dict[str, Any]
    metadata: dict[str, Any]
    match: bool


PINS = [
    PinCase("int pin, float value (issue 10)", {"rank": 1}, {"rank": 1.0}, True),
    PinCase("float pin, int value", {"rank": 1.0}, {"rank": 1}, True),
    PinCase("negative zero is zero", {"rank": 0}, {"rank": -0.0}, True),
    PinCase("2**53 - 1 as int and float", {"n": 2**53 - 1}, {"n": float(2**53 - 1)}, True),
    PinCase("large ints exactly", {"n": 2**53 - 1}, {"n": 2**53 - 2}, False),
    PinCase("different numbers", {"rank": 1}, {"rank": 2}, False),
    PinCase("no tolerance on floats", {"score": 0.3}, {"score": 0.1 + 0.2}, False),
    PinCase("number is not its string", {"rank": 1}, {"rank": "1"}, False),
    PinCase("string is not its number", {"rank": "1"}, {"rank": 1}, False),
    PinCase("true is not 1", {"flag": True}, {"flag": 1}, False),
    PinCase("1 is not true", {"flag": 1}, {"flag": True}, False),
    PinCase("1.0 is not true", {"flag": 1.0}, {"flag": True}, False),
    PinCase("false is not 0", {"flag": False}, {"flag": 0}, False),
    PinCase("0 is not false", {"flag": 0}, {"flag": False}, False),
    PinCase("true is true", {"flag": True}, {"flag": True}, True),
    PinCase("false is false", {"flag": False}, {"flag": False}, True),
    PinCase("true is not false", {"flag": True}, {"flag": False}, False),
    PinCase("true is not 'true'", {"flag": True}, {"flag": "true"}, False),
    PinCase("strings exactly", {"kind": "legal"}, {"kind": "legal"}, True),
    PinCase("strings are case-sensitive", {"kind": "legal"}, {"kind": "Legal"}, False),
    PinCase("strings are not trimmed", {"kind": "legal"}, {"kind": "legal "}, False),
    PinCase("null is null", {"kind": None}, {"kind": None}, True),
    PinCase("null is not a missing key", {"kind": None}, {}, False),
    PinCase("null is not 'null'", {"kind": None}, {"kind": "null"}, False),
    PinCase("null is not 0", {"kind": None}, {"kind": 0}, False),
    PinCase("null is not false", {"kind": None}, {"kind": False}, False),
    PinCase("a scalar is not a list of it", {"tags": "a"}, {"tags": ["a"]}, False),
    PinCase("a scalar is not a mapping", {"tags": "a"}, {"tags": {"a": 1}}, False),
    PinCase("every key must match", {"kind": "a", "rank": 2}, {"kind": "a", "rank": 2.0, "x": 1}, True),
    PinCase("a missing key fails", {"kind": "a", "rank": 2}, {"kind": "a"}, False),
    PinCase("one key differing fails", {"kind": "a", "rank": 2}, {"kind": "a", "rank": 3}, False),
]


@dataclass(frozen=True)
class GlobCase:
    glob: str
    source_id: str
    match: bool


GLOBS = [
    GlobCase("legal-*", "legal-1", True),
    GlobCase("legal-*", "legal-", True),
    GlobCase("legal-*", "Legal-1", False),
    GlobCase("LEGAL-*", "legal-1", False),
    GlobCase("legal-*", "xlegal-1", False),
    GlobCase("*#p1", "doc/a#p1", True),
    GlobCase("doc?", "doc1", True),
    GlobCase("doc?", "doc12", False),
    GlobCase("doc[12]", "doc2", True),
    GlobCase("doc[!12]", "doc2", False),
    GlobCase("doc[!12]", "doc3", True),
    GlobCase("a*b", "a/x/b", True),
    GlobCase("[*]", "*", True),
    GlobCase("[*]", "x", False),
]


@dataclass(frozen=True)
class GroupCase:
    """Two candidates' values of the ``group_by: metadata`` field (``MISSING``: the key is
    absent): same source or not, under the equality above."""

    name: str
    a: Any
    b: Any
    same: bool


MISSING = object()

GROUPS = [
    GroupCase("equal strings", "acme", "acme", True),
    GroupCase("different strings", "acme", "Acme", False),
    GroupCase("int and float of one value", 7, 7.0, True),
    GroupCase("different numbers", 7, 8, False),
    GroupCase("number and its string", 7, "7", False),
    GroupCase("true and 1", True, 1, False),
    GroupCase("true and 'True'", True, "True", False),
    GroupCase("false and 0", False, 0, False),
    GroupCase("null and a missing key", None, MISSING, True),
    GroupCase("null and '<missing>'", None, "<missing>", False),
    GroupCase("a string that looks like a key", "<7>", 7, False),
    GroupCase("lists equal element-wise", ["a", 1], ["a", 1.0], True),
    GroupCase("list and tuple", ["a", 1], ("a", 1), True),
    GroupCase("lists keep their order", ["a", "b"], ["b", "a"], False),
    GroupCase("booleans inside lists", [True], [1], False),
    GroupCase("mappings equal by key", {"x": 1, "y": "a"}, {"y": "a", "x": 1.0}, True),
    GroupCase("mappings with a boolean", {"x": True}, {"x": 1}, False),
    GroupCase("mappings with another key", {"x": 1}, {"x": 1, "y": 2}, False),
]


@dataclass(frozen=True)
class PreferParentCase:
    """``prefer_parent_ratio`` with ``children`` eligible children: the most children
    that may go in (k is too many once k / children >= ratio)."""

    ratio: float
    children: int
    allowed: int


PREFER_PARENT = [
    PreferParentCase(0.5, 1, 0),
    PreferParentCase(0.5, 2, 0),
    PreferParentCase(0.5, 3, 1),
    PreferParentCase(0.5, 4, 1),
    PreferParentCase(0.6, 5, 2),
    PreferParentCase(0.7, 10, 6),
    PreferParentCase(0.28, 25, 6),  # 0.28 * 25 is 7.000000000000001 in floating point
    PreferParentCase(0.56, 25, 13),
    PreferParentCase(1.0, 4, 3),
    PreferParentCase(0.01, 10, 0),
]


@dataclass(frozen=True)
class ShingleCase:
    """The near-duplicate rule's reading of a text: ``n``-word shingles after NFKC and
    case folding; words are runs of ``str.isalnum`` characters (``_`` separates)."""

    name: str
    text: str
    n: int
    shingles: frozenset[str]


SHINGLES = [
    ShingleCase("plain words", "The quick brown fox", 3, frozenset({"the quick brown", "quick brown fox"})),
    ShingleCase("punctuation and case", "THE quick, brown... FOX!", 3,
                frozenset({"the quick brown", "quick brown fox"})),
    ShingleCase("underscore separates", "snake_case name", 2, frozenset({"snake case", "case name"})),
    ShingleCase("digits are words", "top 10 list", 3, frozenset({"top 10 list"})),
    ShingleCase("fewer words than n: one shingle", "two words", 3, frozenset({"two words"})),
    ShingleCase("no words: no shingle", " ... !! ", 3, frozenset()),
    ShingleCase("empty text", "", 2, frozenset()),
    ShingleCase("NFKC: ligature and full-width", "ﬁne ＡＢＣ", 1, frozenset({"fine", "abc"})),
    ShingleCase("case folding: sharp s", "Straße STRASSE", 1, frozenset({"strasse"})),
    ShingleCase("accents stay letters", "café olé", 2, frozenset({"café olé"})),
    ShingleCase("repeats collapse into a set", "a b a b a b", 2, frozenset({"a b", "b a"})),
]
