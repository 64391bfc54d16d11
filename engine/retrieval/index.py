"""The hierarchical index: a document split into sections, paragraphs and sentences.

What goes in: document text and its format (Markdown, reStructuredText, HTML or plain
text; see :mod:`engine.retrieval.formats`) and a ``doc_id``. What comes out: frozen
:class:`Node` values, one per DOCUMENT, SECTION, PARAGRAPH and SENTENCE, each with exact
character offsets into the document's text (``text[node.start:node.end] ==
node.content`` always holds, where ``text`` is the DOCUMENT node's content: the source
for Markdown and plain text, the rendering of the parsed document for RST and HTML) and a
link to its parent.

Splitting rules
---------------
* DOCUMENT: the whole text, verbatim (``start == 0``, ``end == len(text)``).
* SECTION: one per heading the format's parser finds (Markdown ATX and setext headings,
  RST sections, HTML ``h1``-``h6``). A section runs from its heading to the next heading
  of the same or a higher level, so a ``##`` section nested under a ``#`` one is the
  ``#`` section's child and its text is part of the parent's content too. A section's
  ``title`` is the heading text without its markup.
* PARAGRAPH: the paragraph blocks that belong directly to a document or section (text
  before the first heading belongs to the document); the heading is not a paragraph. A
  code block or a table is one paragraph even with blank lines inside.
* SENTENCE: prose is split with ``sentencex`` (Wikimedia's rule-based segmenter, which
  keeps abbreviations such as "e.g." and "p.m." and decimals whole); a single newline
  inside a paragraph is a soft wrap, so it does not end a sentence. List items are never
  split: each item, with its continuation lines, is one sentence. Code blocks and tables
  have no sentences: the paragraph is the smallest unit, because a sentence splitter cuts
  code and table rows at random.

Nodes never start or end with whitespace (except the DOCUMENT node, which is verbatim),
and blocks or sentences that are only whitespace are not nodes.

Node ids
--------
Readable and stable: the same text and ``doc_id`` always give the same ids::

    guide/doc-001.md                 DOCUMENT  (the doc_id itself)
    guide/doc-001.md#s2              SECTION   second top-level section
    guide/doc-001.md#s2.1            SECTION   first sub-section of it (numbered among
                                               siblings, whatever the heading levels are)
    guide/doc-001.md/p1              PARAGRAPH first paragraph directly under the document
    guide/doc-001.md#s2.1/p3         PARAGRAPH third paragraph directly under section 2.1
    guide/doc-001.md#s2.1/p3/t2      SENTENCE  second sentence of that paragraph

All numbers are 1-based. ``doc_id`` is free text without ``#`` or whitespace; it may hold
``/`` (``pack`` uses the file's path below the corpus root), but not at its ends or twice
in a row, and a document whose node ids would collide with nodes already in the index is
rejected (``index.duplicate_node``).

``Node.order`` is the node's position in a pre-order walk of the whole index (documents
in the order they were indexed, then parents before children, children in text order),
so sorting selected nodes by ``order`` gives reading order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..errors import CandidateError
from .formats import FORMATS, Block, Parsed, parse, trim


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


def _bad_doc_id(doc_id: object) -> bool:
    if not isinstance(doc_id, str) or not doc_id or doc_id.startswith("/") or doc_id.endswith("/"):
        return True
    return "#" in doc_id or "//" in doc_id or any(ch.isspace() for ch in doc_id)


def sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of the prose ``text[start:end]`` (sentencex),
    trimmed; every non-space character lands in exactly one sentence."""
    import sentencex

    # Newlines inside a paragraph are soft wraps; the segmenter would end a sentence at
    # each one. Replacing them by spaces keeps every offset valid (same length).
    flat = text[start:end].replace("\r", " ").replace("\n", " ")
    if not any(ch in flat for ch in ".!?\u3002\uff01\uff1f"):
        pieces = [flat]  # no sentence mark: one sentence, whatever the segmenter would say
    else:
        pieces = list(sentencex.segment("en", flat))
    out: list[tuple[int, int]] = []
    pos = 0
    for piece in pieces:
        at = flat.find(piece, pos) if piece else -1
        if at < 0:  # not a substring (never seen): the rest is one sentence
            break
        s, e = trim(text, start + at, start + at + len(piece))
        if s < e:
            out.append((s, e))
        pos = at + len(piece)
    if flat[pos:].strip():  # anything the pieces did not cover joins the last sentence
        s, e = trim(text, start + pos, end)
        out[-1:] = [(out[-1][0] if out else s, e)]
    return out


@dataclass(slots=True)
class _OpenSection:
    """A section whose end is not known yet (mutable while building, never exported)."""

    node_id: str
    parent_id: str
    heading_level: int
    start: int
    title: str
    slot: int  # where its placeholder sits in the builder's node list
    children: int = 0


def build_nodes(parsed: Parsed, doc_id: str) -> list[Node]:
    """The nodes of one parsed document in reading order (``order`` counts from 0)."""
    text = parsed.text
    nodes: list[Node] = [Node(doc_id, doc_id, IndexLevel.DOCUMENT, text, None, 0, len(text), 0)]
    paragraph_counts: dict[str, int] = {}
    stack: list[_OpenSection] = []
    top = 0

    def close(section: _OpenSection, end: int) -> None:
        s, e = trim(text, section.start, end)
        nodes[section.slot] = Node(section.node_id, doc_id, IndexLevel.SECTION, text[s:e],
                                   section.parent_id, s, e, 0, section.title)

    for block in parsed.blocks:
        if block.heading:
            while stack and stack[-1].heading_level >= block.heading:
                close(stack.pop(), block.start)
            if stack:
                parent = stack[-1]
                parent.children += 1
                node_id, parent_id = f"{parent.node_id}.{parent.children}", parent.node_id
            else:
                top += 1
                node_id, parent_id = f"{doc_id}#s{top}", doc_id
            title = (block.title or "").strip()
            stack.append(_OpenSection(node_id, parent_id, block.heading, block.start, title, len(nodes)))
            # A placeholder keeps the section before its paragraphs in reading order; the
            # real node (with its end) replaces it when the section closes.
            nodes.append(Node(node_id, doc_id, IndexLevel.SECTION, "", parent_id, block.start, block.start, 0, title))
            continue
        _paragraph(text, doc_id, block, stack[-1].node_id if stack else doc_id, paragraph_counts, nodes)
    while stack:
        close(stack.pop(), len(text))
    return nodes


def _paragraph(text: str, doc_id: str, block: Block, parent_id: str, counts: dict[str, int],
               nodes: list[Node]) -> None:
    start, end = trim(text, block.start, block.end)
    if start == end:
        return
    count = counts.get(parent_id, 0) + 1
    counts[parent_id] = count
    pid = f"{parent_id}/p{count}"
    nodes.append(Node(pid, doc_id, IndexLevel.PARAGRAPH, text[start:end], parent_id, start, end, 0))
    spans: list[tuple[int, int]] = []
    for kind, s, e in block.units:
        if kind == "item":
            s, e = trim(text, s, e)
            if s < e:
                spans.append((s, e))
        else:
            spans += sentence_spans(text, s, e)
    for j, (s, e) in enumerate(spans, start=1):
        nodes.append(Node(f"{pid}/t{j}", doc_id, IndexLevel.SENTENCE, text[s:e], pid, s, e, 0))


class HierarchicalIndex:
    """Documents split into a DOCUMENT → SECTION → PARAGRAPH → SENTENCE tree.

    ``nodes`` maps node id to :class:`Node` in reading order (treat it as read-only).
    Adding documents is the only mutation; nodes themselves are frozen.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self._children: dict[str, list[str]] = {}
        self._documents: list[str] = []

    def index_document(self, content: str, doc_id: str, *, markdown: bool = True,
                       format: str | None = None) -> list[str]:
        """Parse ``content`` and add its nodes under ``doc_id``.

        Args:
            content: the document text.
            doc_id: unique, non-empty, without ``#`` or whitespace (see the module doc).
            markdown: ``False`` treats the text as plain text (no headings, fences,
                lists or tables; only blank-line paragraphs and sentences).
            format: ``"markdown"``, ``"rst"``, ``"html"`` or ``"text"``; overrides
                ``markdown`` when given.

        Returns:
            The new node ids in reading order, the document id first.

        Raises:
            CandidateError: ``index.bad_doc_id``, ``index.duplicate_doc``,
                ``index.duplicate_node``, ``index.bad_content``, ``index.bad_format``
                or ``index.empty_document``.
        """
        self._check_doc_id(doc_id)
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
        fmt = format if format is not None else ("markdown" if markdown else "text")
        if fmt not in FORMATS:
            raise CandidateError("index.bad_format",
                                 f"unknown format {fmt!r}; use one of {', '.join(map(repr, FORMATS))}",
                                 path="$.format")
        return self.add_nodes(build_nodes(parse(content, fmt), doc_id), doc_id)

    def index_parsed(self, parsed: Parsed, doc_id: str) -> list[str]:
        """Add the nodes of an already parsed document (see :mod:`engine.retrieval.formats`)."""
        self._check_doc_id(doc_id)
        return self.add_nodes(build_nodes(parsed, doc_id), doc_id)

    def _check_doc_id(self, doc_id: Any) -> None:
        if _bad_doc_id(doc_id):
            raise CandidateError(
                "index.bad_doc_id",
                f"doc_id must be a non-empty string without '#' or whitespace, and no '/' at its ends "
                f"or twice in a row, got {doc_id!r} (these characters separate the parts of node ids; "
                "use e.g. 'billing/refunds.md')",
                path="$.doc_id",
            )
        taken = self.nodes.get(doc_id)
        if taken is not None and taken.level is IndexLevel.DOCUMENT:
            raise CandidateError(
                "index.duplicate_doc",
                f"document {doc_id!r} is already indexed; every document needs a unique doc_id",
                path="$.doc_id",
            )

    def add_nodes(self, built: list[Node], doc_id: str) -> list[str]:
        """Add one document's nodes (from :func:`build_nodes`, DOCUMENT node first);
        ``order`` is renumbered index-wide. Nothing is added if an id is taken."""
        clash = [n.node_id for n in built if n.node_id in self.nodes]
        if clash:
            raise CandidateError(
                "index.duplicate_node",
                f"document {doc_id!r} would add node ids the index already has: "
                f"{', '.join(map(repr, clash[:5]))}; give the document another doc_id",
                path="$.doc_id",
            )
        base = len(self.nodes)
        ids = []
        for i, n in enumerate(built):
            # The builder's orders are placeholders; the real one counts index-wide.
            node = n if n.order == base + i else Node(n.node_id, n.doc_id, n.level, n.content, n.parent_id,
                                                       n.start, n.end, base + i, n.title)
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
