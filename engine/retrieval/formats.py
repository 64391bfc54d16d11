"""Document formats → the block structure the hierarchical index is built from.

What goes in: the text of one document and its format. What comes out: a
:class:`Parsed` value, the document's ``text`` (the string every node of the document
slices) and its ``blocks`` in reading order: headings, which open sections, and
paragraph blocks, with the units a paragraph splits into sentences.

Formats and their parsers
-------------------------
``markdown`` (``.md``, ``.markdown``)
    pulldown-cmark's CommonMark parser (plus GFM tables), through ``pyromark``: a
    compiled parser, about 13 times markdown-it-py's block pass. ATX and setext headings,
    fenced and indented code, lists, block quotes, HTML blocks and tables come from the
    parser, not from regular expressions. ``text`` is the source itself, so offsets are
    offsets into the file. Blocks the source writes without a blank line between them
    (a lead-in line and its tight list) are one paragraph; code, tables and HTML blocks
    are paragraphs of their own and have no sentences (an HTML block that is only a
    comment is not text); a loose list (items separated by blank lines) gives one
    paragraph per item. Headings inside lists or quotes are text.
``rst`` (``.rst``, ``.rest``)
    docutils parses the file into its doctree (no file inclusion, no raw passthrough, no
    messages printed). Sections and titles come from the doctree; paragraphs, list
    items, literal blocks, tables and definition lists are blocks; directives docutils
    does not know (Sphinx's ``toctree``, ``versionadded``...), comments, targets and
    substitution definitions are not text and are dropped, and so is every parser
    message. Sphinx roles docutils does not know (``:ref:`Caching <caching>```) keep
    only their title (``Caching``). ``text`` is a rendering: each block's text, blank
    lines between, a heading as its title line.
``html`` (``.html``, ``.htm``, ``.xhtml``)
    selectolax's Lexbor engine, a real HTML5 parser (it repairs broken markup as
    browsers do) and the fastest of the maintained Python HTML parsers. ``h1``-``h6``
    are headings (a trailing permalink mark ``#`` or ``¶`` is not part of the title),
    ``p`` and loose text are prose, ``ul``/``ol`` are lists (each ``li`` a sentence),
    ``pre`` is code, ``table`` is one block of ``|``-separated rows. ``script``,
    ``style``, ``nav``, ``header``, ``footer`` and the like are not content. When a
    ``main`` element exists, only it is read. ``text`` is a rendering, as for ``rst``.
``text`` (``.txt``, ``.text`` and any other text)
    Blank-line separated paragraphs and their sentences; no headings.

Any of them may be gzip-compressed (``.md.gz``...): :func:`format_of` names the format
from the suffix under ``.gz``; decompressing is the reader's job (engine.retrieval.corpus).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

#: Suffix (lower case, without ``.gz``) → format name.
SUFFIX_FORMATS = {
    ".md": "markdown", ".markdown": "markdown",
    ".rst": "rst", ".rest": "rst",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".txt": "text", ".text": "text",
}
FORMATS = ("markdown", "rst", "html", "text")

# A unit of a paragraph: ("prose", start, end) is split into sentences, ("item", start,
# end) is one sentence whole (a list item).
Unit = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class Block:
    """A heading (``heading`` = its level, 1 for the outermost) or a paragraph
    (``heading == 0``) spanning ``text[start:end]``. A paragraph's ``units`` say how it
    splits into sentences; a paragraph without units (code, a table) has no sentences."""

    start: int
    end: int
    heading: int = 0
    title: str | None = None
    units: tuple[Unit, ...] = ()


@dataclass(frozen=True, slots=True)
class Parsed:
    """One document: the ``text`` its nodes slice and its ``blocks`` in reading order."""

    text: str
    blocks: tuple[Block, ...]
    format: str


def format_of(name: str) -> str | None:
    """The format of a file name (``guide.rst.gz`` → ``"rst"``), or ``None``."""
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    dot = lower.rfind(".")
    return SUFFIX_FORMATS.get(lower[dot:]) if dot > 0 and "/" not in lower[dot:] else None


def parse(text: str, fmt: str) -> Parsed:
    """``text`` in format ``fmt`` (one of :data:`FORMATS`) as blocks."""
    if fmt == "markdown":
        return parse_markdown(text)
    if fmt == "rst":
        return parse_rst(text)
    if fmt == "html":
        return parse_html(text)
    if fmt == "text":
        return parse_text(text)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- plain text

_BLANK_RUNS = re.compile(r"(?:[ \t]*(?:\r\n|\r|\n)){2,}")


def parse_text(text: str) -> Parsed:
    """Blank-line separated paragraphs, each split into sentences."""
    blocks = []
    pos = 0
    for m in _BLANK_RUNS.finditer(text):
        blocks += _prose_block(text, pos, m.start())
        pos = m.end()
    blocks += _prose_block(text, pos, len(text))
    return Parsed(text, tuple(blocks), "text")


def _prose_block(text: str, start: int, end: int) -> list[Block]:
    start, end = trim(text, start, end)
    return [Block(start, end, units=(("prose", start, end),))] if start < end else []


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` past leading and trailing whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# --------------------------------------------------------------------------- Markdown

_NEWLINE = re.compile(r"\r\n|\r|\n")
_COMMENTS = re.compile(r"<!--.*?-->", re.S)


def _only_comment(html: str) -> bool:
    return html.strip().startswith("<!--") and not _COMMENTS.sub("", html).strip()


def _char_offsets(text: str, data: bytes, offsets: set[int]) -> dict[int, int]:
    """UTF-8 byte offsets (on character boundaries) → character offsets into ``text``."""
    if len(data) == len(text):  # ASCII: the same
        return {b: b for b in offsets}
    out, chars, prev = {}, 0, 0
    for b in sorted(offsets):
        chars += len(data[prev:b].decode("utf-8", errors="replace"))
        out[b] = chars
        prev = b
    return out


def _name(payload: Any) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict):
        return str(next(iter(payload)))
    return str(payload)


def parse_markdown(text: str) -> Parsed:
    """Markdown blocks from pulldown-cmark's event stream (see the module docstring)."""
    import pyromark

    data = text.encode("utf-8")
    # (kind, start byte, end byte, [(unit kind, start, end)], title); kind "heading<n>",
    # "prose" (may join the prose before it), "loose" (a loose list item) or "atomic".
    pieces: list[tuple[str, int, int, list[tuple[str, int, int]], str | None]] = []
    depth = 0
    top = ""  # the top-level block being read
    payload: Any = None
    start = end = 0
    title: list[str] = []
    items: list[tuple[int, int]] = []
    loose = False
    # One pass, and as little as possible per event: most events are inline text.
    for event, rng in pyromark.events_with_range(text, options=pyromark.Options.ENABLE_TABLES):
        if type(event) is not dict:
            continue  # "Rule", "SoftBreak", "HardBreak"
        if "Start" in event:
            if depth == 0:
                payload = event["Start"]
                top, start, end = _name(payload), rng["start"], rng["end"]
                title, items, loose = [], [], False
            elif top == "List":
                if depth == 1:
                    items.append((rng["start"], rng["end"]))
                elif depth == 2 and event["Start"] == "Paragraph":
                    loose = True
            depth += 1
        elif "End" in event:
            depth -= 1
            if depth == 0:
                _top_piece(pieces, data, top, payload, start, end, title, items, loose)
        elif top == "Heading" and ("Text" in event or "Code" in event):
            title.append(str(event.get("Text", event.get("Code", ""))))
    offsets = {o for p in pieces for o in (p[1], p[2])} | {o for p in pieces for u in p[3] for o in u[1:]}
    to_char = _char_offsets(text, data, offsets)
    chars = [(k, to_char[a], to_char[b], [(u, to_char[x], to_char[y]) for u, x, y in units], t)
             for k, a, b, units, t in pieces]
    return Parsed(text, tuple(_merge_markdown(text, chars)), "markdown")


def _top_piece(pieces: list[tuple[str, int, int, list[tuple[str, int, int]], str | None]], data: bytes,
               top: str, payload: Any, start: int, end: int, title: list[str],
               items: list[tuple[int, int]], loose: bool) -> None:
    """The piece of one top-level block (headings inside lists or quotes are not sections)."""
    if top == "Heading":
        level = int(str(payload["Heading"]["level"]).lstrip("H"))
        pieces.append((f"heading{level}", start, end, [], "".join(title)))
    elif top == "List":
        if loose:
            pieces += [("loose", a, b, [("prose", a, b)], None) for a, b in items]
        else:
            pieces.append(("prose", start, end, [("item", a, b) for a, b in items], None))
    elif top in ("Paragraph", "BlockQuote"):
        pieces.append(("prose", start, end, [("prose", start, end)], None))
    elif top == "HtmlBlock" and _only_comment(data[start:end].decode("utf-8", errors="replace")):
        pass  # an HTML comment (<!-- YAML added: v1 -->) is markup, not text
    elif top in ("CodeBlock", "HtmlBlock", "Table"):
        pieces.append(("atomic", start, end, [], None))
    # footnote definitions and the like are not text here


def _merge_markdown(text: str, pieces: list[tuple[str, int, int, list[tuple[str, int, int]], str | None]]
                    ) -> Iterator[Block]:
    """Blocks from pieces: prose pieces the source writes without a blank line between
    them are one paragraph (as a reader sees it); code, tables and HTML stand alone."""
    run: list[tuple[str, int, int, list[tuple[str, int, int]], str | None]] = []

    def flush() -> Iterator[Block]:
        if run:
            start, end = trim(text, run[0][1], run[-1][2])
            if start < end:
                units = tuple((u, *trim(text, a, b)) for p in run for u, a, b in p[3])
                yield Block(start, end, units=tuple(u for u in units if u[1] < u[2]))
            run.clear()

    for piece in pieces:
        kind, first, last, _units, title = piece
        if kind.startswith("heading"):
            yield from flush()
            start, end = trim(text, first, last)
            yield Block(start, end, heading=int(kind[7:]), title=(title or "").strip())
        elif kind == "prose" and run and run[-1][0] == "prose" and _adjacent(text, run[-1][2], first):
            run.append(piece)
        else:
            yield from flush()
            if kind == "atomic":
                start, end = trim(text, first, last)
                if start < end:
                    yield Block(start, end)
            else:
                run.append(piece)
    yield from flush()


def _adjacent(text: str, prev_end: int, next_start: int) -> bool:
    """No blank line between ``prev_end`` and ``next_start``."""
    end = trim(text, 0, prev_end)[1]
    return len(_NEWLINE.findall(text, end, max(end, next_start))) < 2


# --------------------------------------------------------------------------- rendering


class _Renderer:
    """Builds the ``text`` of a rendered format (RST, HTML) and its blocks."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.blocks: list[Block] = []

    def _add(self, text: str) -> int:
        if self.parts:
            self.parts.append("\n\n")
            self.length += 2
        start = self.length
        self.parts.append(text)
        self.length += len(text)
        return start

    def heading(self, level: int, title: str) -> None:
        title = " ".join(title.split())
        if title:
            start = self._add(title)
            self.blocks.append(Block(start, start + len(title), heading=level, title=title))

    def prose(self, text: str) -> None:
        text = text.strip()
        if text:
            start = self._add(text)
            self.blocks.append(Block(start, start + len(text), units=(("prose", start, start + len(text)),)))

    def items(self, items: Sequence[str]) -> None:
        items = [" ".join(x.split()) for x in items]
        items = [x for x in items if x]
        if not items:
            return
        start = self._add("\n".join(items))
        units, pos = [], start
        for x in items:
            units.append(("item", pos, pos + len(x)))
            pos += len(x) + 1
        self.blocks.append(Block(start, pos - 1, units=tuple(units)))

    def atomic(self, text: str) -> None:
        text = text.strip()
        if text:
            start = self._add(text)
            self.blocks.append(Block(start, start + len(text)))

    def done(self, fmt: str) -> Parsed:
        return Parsed("".join(self.parts), tuple(self.blocks), fmt)


# --------------------------------------------------------------------------- reStructuredText

# A role docutils does not know stays as its source, ":ref:`Title <target>`": keep the
# title (or the target when there is none).
_UNKNOWN_ROLE = re.compile(r":[\w.+:-]+:`([^`<]*?)\s*(?:<([^`>]*)>)?`")

_RST_SETTINGS = {
    "report_level": 5, "halt_level": 5, "warning_stream": False, "traceback": True,
    "file_insertion_enabled": False, "raw_enabled": False, "doctitle_xform": False,
    "sectsubtitle_xform": False, "docinfo_xform": False, "smart_quotes": False,
    "input_encoding": "unicode", "_disable_config": True, "embed_stylesheet": False,
    "syntax_highlight": "none", "line_length_limit": 1_000_000,
}


def _role_text(m: re.Match[str]) -> str:
    return m.group(1) or m.group(2) or ""


def _rst_text(node: Any) -> str:
    return _UNKNOWN_ROLE.sub(_role_text, _rst_astext(node))


def _rst_astext(node: Any) -> str:
    from docutils import nodes

    if isinstance(node, (nodes.system_message, nodes.comment, nodes.target, nodes.substitution_definition,
                         nodes.raw, nodes.footnote_reference, nodes.citation_reference)):
        return ""
    if isinstance(node, nodes.Text):
        return str(node)
    return "".join(_rst_astext(c) for c in node.children)


def parse_rst(text: str) -> Parsed:
    """reStructuredText blocks from docutils' doctree (see the module docstring)."""
    from docutils.core import publish_doctree

    doctree = publish_doctree(text, settings_overrides=dict(_RST_SETTINGS))
    out = _Renderer()
    _rst_walk(doctree, 0, out)
    return out.done("rst")


def _rst_walk(node: Any, depth: int, out: _Renderer) -> None:
    from docutils import nodes

    for child in node.children:
        if isinstance(child, (nodes.system_message, nodes.comment, nodes.target, nodes.substitution_definition,
                              nodes.raw, nodes.pending, nodes.transition, nodes.docinfo, nodes.Text,
                              nodes.meta if hasattr(nodes, "meta") else nodes.pending)):
            continue
        if isinstance(child, nodes.section):
            titles = [c for c in child.children if isinstance(c, nodes.title)]
            out.heading(depth + 1, _rst_text(titles[0]) if titles else "")
            _rst_walk(child, depth + 1, out)
        elif isinstance(child, (nodes.title, nodes.subtitle)):
            continue  # a section's title is its heading; a topic's or admonition's is not text
        elif isinstance(child, (nodes.paragraph, nodes.line_block, nodes.caption, nodes.attribution,
                                nodes.rubric)):
            out.prose(_rst_text(child))
        elif isinstance(child, (nodes.bullet_list, nodes.enumerated_list)):
            out.items([_rst_text(item) for item in child.children if isinstance(item, nodes.list_item)])
        elif isinstance(child, (nodes.literal_block, nodes.doctest_block, nodes.math_block)):
            out.atomic(child.astext())
        elif isinstance(child, nodes.table):
            out.atomic("\n".join(" | ".join(" ".join(_rst_text(e).split()) for e in row.children)
                                 for row in child.findall(nodes.row)))
        elif isinstance(child, (nodes.definition_list_item, nodes.field, nodes.option_list_item)):
            head, *rest = child.children or [None]
            body = " ".join(_rst_text(r) for r in rest)
            out.prose(f"{' '.join(_rst_text(head).split()) if head is not None else ''}: {body}"
                      if body.strip() else _rst_text(child))
        else:  # containers: admonitions, block quotes, topics, definition and field lists...
            _rst_walk(child, depth, out)


# --------------------------------------------------------------------------- HTML

_HTML_SKIP = frozenset({
    "script", "style", "noscript", "template", "nav", "header", "footer", "svg", "button", "form",
    "select", "option", "iframe", "object", "canvas", "head", "title", "meta", "link", "input",
    "textarea", "-comment", "!doctype",
})
_HTML_INLINE = frozenset({
    "a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "del", "dfn", "em", "i", "ins", "kbd",
    "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup", "time", "u", "var", "wbr",
    "img", "label", "font", "tt", "big", "strike", "nobr",
})
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_PERMALINK = " \t\n#¶§"


def parse_html(text: str) -> Parsed:
    """HTML blocks from selectolax's Lexbor DOM (see the module docstring)."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(text)
    root = tree.css_first("main") or tree.body or tree.root
    out = _Renderer()
    if root is not None:
        _html_walk(root, out)
    return out.done("html")


def _html_walk(el: Any, out: _Renderer) -> None:
    inline: list[str] = []

    def flush() -> None:
        if inline:
            out.prose(" ".join("".join(inline).split()))
            inline.clear()

    for child in el.iter(include_text=True):
        tag = child.tag
        if tag == "-text":
            inline.append(child.text_content or "")
            continue
        if tag in _HTML_SKIP or (child.attributes.get("role") == "navigation"):
            continue
        if tag in _HTML_INLINE:
            inline.append(child.text(deep=True))
            continue
        if tag == "br":
            inline.append(" ")
            continue
        flush()
        if tag in _HEADINGS:
            out.heading(_HEADINGS[tag], " ".join(child.text(deep=True).split()).rstrip(_PERMALINK))
        elif tag == "p":
            out.prose(" ".join(child.text(deep=True).split()))
        elif tag == "pre":
            out.atomic(child.text(deep=True))
        elif tag in ("ul", "ol"):
            out.items([li.text(deep=True) for li in child.iter() if li.tag == "li"])
        elif tag == "table":
            rows = [" | ".join(" ".join(cell.text(deep=True).split()) for cell in tr.iter()
                               if cell.tag in ("td", "th")) for tr in child.css("tr")]
            out.atomic("\n".join(r for r in rows if r.strip(" |")))
        elif tag == "hr":
            continue
        else:
            _html_walk(child, out)
    flush()
