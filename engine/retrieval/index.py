"""The hierarchical index: a document split into sections, paragraphs and sentences.

What goes in: document text (Markdown or plain text) and a ``doc_id``. What comes out:
frozen :class:`Node` values, one per DOCUMENT, SECTION, PARAGRAPH and SENTENCE, each
with exact character offsets into the original text (``text[node.start:node.end] ==
node.content`` always holds) and a link to its parent.

Splitting rules
---------------
* DOCUMENT: the whole text, verbatim (``start == 0``, ``end == len(text)``).
* SECTION: one per ATX heading (``#`` .. ``######``, at most 3 spaces of indent, then a
  space or the end of the line; ``#tag`` is not a heading). A section runs from its
  heading line to the next heading of the same or a higher level, so a ``##`` section
  nested under a ``#`` one is the ``#`` section's child and its text is part of the
  parent's content too. A section's ``title`` is the heading text without the ``#``
  marks. Setext headings (underlined with ``===``) are not recognised.
* PARAGRAPH: the blank-line separated blocks of text that belong directly to a document
  or section (text before the first heading belongs to the document). The heading line
  is not a paragraph. A fenced code block (three or more backticks or tildes) is one
  paragraph even with blank lines inside, and a ``#`` line inside it is not a heading;
  an unclosed fence runs to the end of the document, as in CommonMark. Fences indented
  by four or more spaces are not recognised.
* SENTENCE: prose paragraphs are split with ``pysbd``; a single newline inside a
  paragraph is a soft wrap, so it does not end a sentence. List items (``-``, ``*``,
  ``+``, ``1.`` or ``1)``) are never split: each item, with its continuation lines, is
  one sentence (prose lines before the first item are split as prose). Fenced code
  blocks and tables (every line starts with ``|``) have no sentences: the paragraph is
  the smallest unit, because a sentence splitter cuts code and table rows at random.

Nodes never start or end with whitespace (except the DOCUMENT node, which is verbatim),
and blocks or sentences that are only whitespace are not nodes.

Node ids
--------
Readable and stable: the same text and ``doc_id`` always give the same ids::

    doc-001                 DOCUMENT  (the doc_id itself)
    doc-001#s2              SECTION   second top-level section
    doc-001#s2.1            SECTION   first sub-section of it (numbered among siblings,
                                      whatever the heading levels are)
    doc-001/p1              PARAGRAPH first paragraph directly under the document
    doc-001#s2.1/p3         PARAGRAPH third paragraph directly under section 2.1
    doc-001#s2.1/p3/t2      SENTENCE  second sentence of that paragraph

All numbers are 1-based. ``doc_id`` may not contain ``#``, ``/`` or whitespace, so ids
of different documents can never collide.

``Node.order`` is the node's position in a pre-order walk of the whole index (documents
in the order they were indexed, then parents before children, children in text order),
so sorting selected nodes by ``order`` gives reading order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import Enum

import pysbd

from ..errors import CandidateError


class IndexLevel(Enum):
    """The granularity of a node. Values are the strings candidates carry in ``level``."""

    DOCUMENT = "DOCUMENT"
    SECTION = "SECTION"
    PARAGRAPH = "PARAGRAPH"
    SENTENCE = "SENTENCE"


@dataclass(frozen=True, slots=True)
class Node:
    """One indexed unit of text.

    ``content == document_text[start:end]`` exactly; ``parent_id`` is ``None`` only for
    DOCUMENT nodes; ``order`` is the index-wide reading-order position; ``title`` is the
    heading text for SECTION nodes and ``None`` otherwise.
    """

    node_id: str
    doc_id: str
    level: IndexLevel
    content: str
    parent_id: str | None
    start: int
    end: int
    order: int
    title: str | None = None


# ATX heading: up to 3 spaces, 1-6 '#', then whitespace or end of line. The optional
# closing run of '#' must be preceded by whitespace (CommonMark), so "C#" stays intact.
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_TABLE_ROW = re.compile(r"^[ \t]*\|")
_FORBIDDEN_IN_DOC_ID = re.compile(r"[#/\s]")

# pysbd keeps per-call state on the Segmenter (``original_text``), so the index owns one
# and never shares it across threads through a module global.
_SEGMENTER_ARGS = {"language": "en", "clean": False, "char_span": True}


@dataclass(frozen=True, slots=True)
class _Line:
    """One line of the document: ``text`` without its line break, ``start`` offset."""

    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True, slots=True)
class _Block:
    """A paragraph-to-be: its lines and its kind ("prose", "code" or "table")."""

    lines: tuple[_Line, ...]
    kind: str


def _split_lines(text: str) -> list[_Line]:
    lines: list[_Line] = []
    pos = 0
    for raw in text.splitlines(keepends=True):
        body = raw.rstrip("\r\n")
        lines.append(_Line(body, pos))
        pos += len(raw)
    return lines


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` past leading and trailing whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _fence_closes(line: str, fence: str) -> bool:
    """A closing fence: same character, at least as long, nothing after but spaces."""
    stripped = line.lstrip(" ")
    if len(line) - len(stripped) > 3:
        return False
    run = len(stripped) - len(stripped.lstrip(fence[0]))
    return run >= len(fence) and not stripped[run:].strip()


def _fence_opens(line: str) -> str | None:
    """The fence string (e.g. "```") if ``line`` opens a fenced code block."""
    m = _FENCE_OPEN.match(line)
    if m is None:
        return None
    fence, info = m.group(1), m.group(2)
    if fence[0] == "`" and "`" in info:  # CommonMark: backtick info strings have no backticks
        return None
    return fence


@dataclass(slots=True)
class _OpenSection:
    """A section whose end is not known yet (mutable while scanning, never exported)."""

    node_id: str
    parent_id: str
    heading_level: int
    start: int
    title: str
    slot: int  # where its placeholder sits in the builder's node list
    children: int = 0


class _DocumentBuilder:
    """Turns one document's text into nodes; used once per ``index_document`` call."""

    def __init__(self, text: str, doc_id: str, segmenter: pysbd.Segmenter, markdown: bool):
        self.text = text
        self.doc_id = doc_id
        self.segmenter = segmenter
        self.markdown = markdown
        # Appended in reading order: a section's placeholder goes in before its content.
        self.nodes: list[Node] = []
        self.paragraph_counts: dict[str, int] = {}
        self.top_sections = 0

    def build(self) -> list[Node]:
        text = self.text
        self.nodes.append(Node(self.doc_id, self.doc_id, IndexLevel.DOCUMENT, text, None, 0, len(text), 0))
        stack: list[_OpenSection] = []
        run: list[_Line] = []  # lines of the current container since the last heading
        fence: str | None = None
        for line in _split_lines(text):
            if fence is not None:
                run.append(line)
                if _fence_closes(line.text, fence):
                    fence = None
                continue
            if self.markdown:
                fence = _fence_opens(line.text)
                heading = None if fence is not None else _HEADING.match(line.text)
                if heading is not None:
                    self._emit_paragraphs(run, stack[-1].node_id if stack else self.doc_id)
                    run = []
                    level = len(heading.group(1))
                    while stack and stack[-1].heading_level >= level:
                        self._close_section(stack.pop(), line.start)
                    stack.append(self._open_section(stack, level, line, heading.group(2) or ""))
                    continue
            run.append(line)
        self._emit_paragraphs(run, stack[-1].node_id if stack else self.doc_id)
        while stack:
            self._close_section(stack.pop(), len(text))
        return self.nodes

    def _open_section(self, stack: list[_OpenSection], level: int, line: _Line, title: str) -> _OpenSection:
        if stack:
            parent = stack[-1]
            parent.children += 1
            node_id = f"{parent.node_id}.{parent.children}"
            parent_id = parent.node_id
        else:
            self.top_sections += 1
            node_id = f"{self.doc_id}#s{self.top_sections}"
            parent_id = self.doc_id
        start = line.start + (len(line.text) - len(line.text.lstrip(" ")))
        section = _OpenSection(node_id, parent_id, level, start, title.strip(), len(self.nodes))
        # A placeholder keeps the section before its paragraphs in reading order; the
        # real node (with its end) replaces it when the section closes.
        self.nodes.append(Node(node_id, self.doc_id, IndexLevel.SECTION, "", parent_id, start, start, 0, section.title))
        return section

    def _close_section(self, section: _OpenSection, end: int) -> None:
        start, end = _trim(self.text, section.start, end)
        self.nodes[section.slot] = Node(
            section.node_id, self.doc_id, IndexLevel.SECTION, self.text[start:end],
            section.parent_id, start, end, 0, section.title,
        )

    def _emit_paragraphs(self, lines: list[_Line], parent_id: str) -> None:
        for block in self._blocks(lines):
            start, end = _trim(self.text, block.lines[0].start, block.lines[-1].end)
            if start == end:
                continue
            count = self.paragraph_counts.get(parent_id, 0) + 1
            self.paragraph_counts[parent_id] = count
            pid = f"{parent_id}/p{count}"
            self.nodes.append(Node(pid, self.doc_id, IndexLevel.PARAGRAPH, self.text[start:end], parent_id, start, end, 0))
            if block.kind == "prose":
                for j, (s, e) in enumerate(self._sentence_spans(block), start=1):
                    self.nodes.append(Node(f"{pid}/t{j}", self.doc_id, IndexLevel.SENTENCE, self.text[s:e], pid, s, e, 0))

    def _blocks(self, lines: list[_Line]) -> Iterator[_Block]:
        """Blank-line separated blocks; a fenced code block is always a block of its own."""
        current: list[_Line] = []
        fence: str | None = None
        for line in lines:
            if fence is not None:
                current.append(line)
                if _fence_closes(line.text, fence):
                    yield _Block(tuple(current), "code")
                    current, fence = [], None
                continue
            opened = _fence_opens(line.text) if self.markdown else None
            if opened is not None or not line.text.strip():
                if current:
                    yield self._prose_or_table(current)
                current = [line] if opened is not None else []
                fence = opened
                continue
            current.append(line)
        if current:
            yield _Block(tuple(current), "code") if fence is not None else self._prose_or_table(current)

    def _prose_or_table(self, lines: list[_Line]) -> _Block:
        is_table = self.markdown and all(_TABLE_ROW.match(x.text) for x in lines)
        return _Block(tuple(lines), "table" if is_table else "prose")

    def _sentence_spans(self, block: _Block) -> list[tuple[int, int]]:
        """Absolute ``(start, end)`` of each sentence: prose via pysbd, list items whole."""
        spans: list[tuple[int, int]] = []
        prose: list[_Line] = []
        item: list[_Line] = []
        for line in block.lines:
            if self.markdown and _LIST_ITEM.match(line.text):
                if item:
                    spans.append((item[0].start, item[-1].end))
                elif prose:  # the prose lines before the first item come first
                    spans.extend(self._pysbd_spans(prose[0].start, prose[-1].end))
                    prose = []
                item = [line]
            elif item:
                item.append(line)  # lazy continuation: it belongs to the open item
            else:
                prose.append(line)
        if prose:
            spans.extend(self._pysbd_spans(prose[0].start, prose[-1].end))
        if item:
            spans.append((item[0].start, item[-1].end))
        out = []
        for s, e in spans:
            s, e = _trim(self.text, s, e)
            if s < e:
                out.append((s, e))
        return out

    def _pysbd_spans(self, start: int, end: int) -> list[tuple[int, int]]:
        # Newlines inside a paragraph are soft wraps; pysbd would end a sentence at each
        # one. Replacing them by spaces keeps every offset valid (same length).
        chunk = self.text[start:end]
        flat = chunk.replace("\r", " ").replace("\n", " ")
        # pysbd re-finds each sentence in the input to compute spans and silently drops
        # one it cannot find; using only its start offsets as cut points (kept if
        # strictly increasing) means every character still lands in some sentence.
        cuts = [0]
        for span in self.segmenter.segment(flat):
            if cuts[-1] < span.start < len(flat):
                cuts.append(span.start)
        cuts.append(len(flat))
        return [(start + a, start + b) for a, b in zip(cuts, cuts[1:])]


class HierarchicalIndex:
    """Documents split into a DOCUMENT → SECTION → PARAGRAPH → SENTENCE tree.

    ``nodes`` maps node id to :class:`Node` in reading order (treat it as read-only).
    Adding documents is the only mutation; nodes themselves are frozen.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self._children: dict[str, list[str]] = {}
        self._documents: list[str] = []
        self._segmenter = pysbd.Segmenter(**_SEGMENTER_ARGS)

    def index_document(self, content: str, doc_id: str, *, markdown: bool = True) -> list[str]:
        """Split ``content`` into nodes and add them under ``doc_id``.

        Args:
            content: the document text, Markdown (default) or plain text.
            doc_id: unique, non-empty, without ``#``, ``/`` or whitespace.
            markdown: ``False`` treats the text as plain text (no headings, fences,
                lists or tables; only blank-line paragraphs and sentences).

        Returns:
            The new node ids in reading order, the document id first.

        Raises:
            CandidateError: ``index.bad_doc_id``, ``index.duplicate_doc``,
                ``index.bad_content`` or ``index.empty_document``.
        """
        if not isinstance(doc_id, str) or not doc_id or _FORBIDDEN_IN_DOC_ID.search(doc_id):
            raise CandidateError(
                "index.bad_doc_id",
                f"doc_id must be a non-empty string without '#', '/' or whitespace, got {doc_id!r} "
                "(these characters separate the parts of node ids; use e.g. 'billing-refunds')",
                path="$.doc_id",
            )
        if doc_id in self.nodes:
            raise CandidateError(
                "index.duplicate_doc",
                f"document {doc_id!r} is already indexed; every document needs a unique doc_id",
                path="$.doc_id",
            )
        if not isinstance(content, str):
            raise CandidateError(
                "index.bad_content",
                f"document {doc_id!r}: content must be a string, got {type(content).__name__}",
                path="$.content",
            )
        if not content.strip():
            raise CandidateError(
                "index.empty_document",
                f"document {doc_id!r} is empty or only whitespace; skip it instead of indexing it",
                path="$.content",
            )
        built = _DocumentBuilder(content, doc_id, self._segmenter, markdown).build()
        base = len(self.nodes)
        ids = []
        for i, node in enumerate(built):
            # The builder's orders are placeholders; the real one counts index-wide.
            node = replace(node, order=base + i)
            self.nodes[node.node_id] = node
            self._children[node.node_id] = []
            if node.parent_id is not None:
                self._children[node.parent_id].append(node.node_id)
            ids.append(node.node_id)
        self._documents.append(doc_id)
        return ids

    def node(self, node_id: str) -> Node:
        """The node with this id. Raises ``CandidateError`` (``index.unknown_node``)."""
        node = self.nodes.get(node_id)
        if node is None:
            raise CandidateError(
                "index.unknown_node",
                f"no node {node_id!r} in the index (ids look like 'doc-001#s1.2/p3')",
                path="$.node_id",
            )
        return node

    def children(self, node_id: str) -> tuple[Node, ...]:
        """The direct children of a node, in reading order (empty for a leaf)."""
        self.node(node_id)
        return tuple(self.nodes[c] for c in self._children[node_id])

    def ancestors(self, node_id: str) -> tuple[Node, ...]:
        """The parent, grandparent, ... up to and including the DOCUMENT node."""
        node = self.node(node_id)
        out = []
        while node.parent_id is not None:
            node = self.nodes[node.parent_id]
            out.append(node)
        return tuple(out)

    def documents(self) -> tuple[Node, ...]:
        """The DOCUMENT nodes, in the order they were indexed."""
        return tuple(self.nodes[d] for d in self._documents)
