"""Document formats → the block structure the hierarchical index is built from.

What goes in: the text of one document and its format. What comes out: a
:class:`Parsed` value, the document's ``text`` (the string every node of the document
slices) and its ``blocks`` in reading order: headings, which open sections, and
paragraph blocks, with the units a paragraph splits into sentences.

Formats and their parsers
-------------------------
``markdown`` (``.md``, ``.markdown``)
    markdown-it-py's CommonMark block parser (plus GFM tables): ATX and setext headings,
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
_MARKDOWN: Any = None


def _markdown_parser() -> Any:
    global _MARKDOWN
    if _MARKDOWN is None:
        from markdown_it import MarkdownIt

        md = MarkdownIt("commonmark").enable("table")
        # Only the block structure is needed: inline parsing (emphasis, links) is most of
        # markdown-it's time and changes no line range.
        md.disable(["inline", "text_join"], ignoreInvalid=True)
        _MARKDOWN = md
    return _MARKDOWN


def _line_starts(text: str) -> list[int]:
    # markdown-it counts lines split at \r\n, \r and \n (its normalize rule), as here.
    starts = [0]
    starts += [m.end() for m in _NEWLINE.finditer(text)]
    return starts


def parse_markdown(text: str) -> Parsed:
    """Markdown blocks from markdown-it's token stream (see the module docstring)."""
    tokens = _markdown_parser().parse(text)
    starts = _line_starts(text)

    def span(first: int, last: int) -> tuple[int, int]:
        """Characters of source lines ``[first, last)``, without the final line break."""
        end = starts[last] if last < len(starts) else len(text)
        return trim(text, starts[first], end)

    # (kind, first line, last line, units, title): kind "heading<n>", "prose", "atomic"
    pieces: list[tuple[str, int, int, tuple[Unit, ...], str | None]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        close = _closing(tokens, i)
        if tok.level != 0 or tok.map is None:
            i = close + 1
            continue
        first, last = tok.map
        if tok.type == "heading_open":
            title = tokens[i + 1].content.strip() if i + 1 < len(tokens) else ""
            pieces.append((f"heading{int(tok.tag[1:])}", first, last, (), title))
        elif tok.type in ("bullet_list_open", "ordered_list_open"):
            items = [t.map for t in tokens[i + 1:close] if t.type == "list_item_open" and t.level == 1 and t.map]
            tight = all(t.hidden for t in tokens[i + 1:close] if t.type == "paragraph_open")
            if tight:
                units = tuple(("item", *span(a, b)) for a, b in items)
                pieces.append(("prose", first, last, units, None))
            else:
                pieces += [("loose", a, b, (("prose", *span(a, b)),), None) for a, b in items]
        elif tok.type in ("paragraph_open", "blockquote_open"):
            pieces.append(("prose", first, last, (("prose", *span(first, last)),), None))
        elif tok.type == "html_block" and _only_comment(tok.content):
            pass  # an HTML comment (<!-- YAML added: v1 -->) is markup, not text
        elif tok.type in ("fence", "code_block", "html_block", "table_open"):
            pieces.append(("atomic", first, last, (), None))
        # hr and link reference definitions are not text.
        i = close + 1
    return Parsed(text, tuple(_merge_markdown(text, pieces, span)), "markdown")


_COMMENTS = re.compile(r"<!--.*?-->", re.S)


def _only_comment(html: str) -> bool:
    return html.strip().startswith("<!--") and not _COMMENTS.sub("", html).strip()


def _adjacent(text: str, span: Any, prev: tuple[str, int, int, tuple[Unit, ...], str | None],
              first: int) -> bool:
    """No blank line between the last text of ``prev`` and line ``first``."""
    _s, prev_end = span(prev[1], prev[2])
    next_start, _e = span(first, first + 1)
    return prev_end >= next_start or len(_NEWLINE.findall(text, prev_end, next_start)) < 2


def _closing(tokens: Sequence[Any], i: int) -> int:
    """Index of the token closing ``tokens[i]`` (``i`` itself for a self-contained one)."""
    if tokens[i].nesting != 1:
        return i
    depth = 0
    for j in range(i, len(tokens)):
        depth += tokens[j].nesting
        if depth == 0:
            return j
    return len(tokens) - 1


def _merge_markdown(text: str, pieces: list[tuple[str, int, int, tuple[Unit, ...], str | None]],
                    span: Any) -> Iterator[Block]:
    """Blocks from pieces: prose pieces the source writes on adjacent lines are one
    paragraph (as a reader sees it), code, tables and HTML stand alone."""
    run: list[tuple[str, int, int, tuple[Unit, ...], str | None]] = []

    def flush() -> Iterator[Block]:
        if run:
            start, end = span(run[0][1], run[-1][2])
            if start < end:
                yield Block(start, end, units=tuple(u for p in run for u in p[3] if u[1] < u[2]))
            run.clear()

    for piece in pieces:
        kind, first, last, units, title = piece
        if kind.startswith("heading"):
            yield from flush()
            start, end = span(first, last)
            yield Block(start, end, heading=int(kind[7:]), title=title or "")
        elif kind == "prose" and run and run[-1][0] == "prose" and _adjacent(text, span, run[-1], first):
            run.append(piece)
        else:
            yield from flush()
            if kind == "atomic":
                start, end = span(first, last)
                if start < end:
                    yield Block(start, end)
            else:
                run.append(("prose" if kind == "prose" else "loose", first, last, units, title))
    yield from flush()


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
