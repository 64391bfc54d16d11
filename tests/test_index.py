"""Tests for engine.index: structure, offsets, ids and errors of the hierarchical index."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import CandidateError
from engine.retrieval.index import HierarchicalIndex, IndexLevel, Node

FIXTURE = Path(__file__).parent / "fixtures" / "handbook.md"
CORPUS = Path(__file__).parent.parent / "examples" / "corpus"
HANDBOOK = FIXTURE.read_text(encoding="utf-8")

ALLOWED_PARENT = {
    IndexLevel.SECTION: {IndexLevel.DOCUMENT, IndexLevel.SECTION},
    IndexLevel.PARAGRAPH: {IndexLevel.DOCUMENT, IndexLevel.SECTION},
    IndexLevel.SENTENCE: {IndexLevel.PARAGRAPH},
}


@pytest.fixture(scope="module")
def handbook() -> HierarchicalIndex:
    index = HierarchicalIndex()
    index.index_document(HANDBOOK, "handbook")
    return index


def check_invariants(index: HierarchicalIndex) -> None:
    """What must hold for every node of every index, whatever the input."""
    texts = {d.doc_id: d.content for d in index.documents()}
    orders = [n.order for n in index.nodes.values()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    for node in index.nodes.values():
        text = texts[node.doc_id]
        assert text[node.start:node.end] == node.content, node.node_id
        if node.level is IndexLevel.DOCUMENT:
            assert node.parent_id is None and node.node_id == node.doc_id
            assert (node.start, node.end) == (0, len(text))
            continue
        assert node.content and node.content == node.content.strip(), node.node_id
        parent = index.nodes[node.parent_id]
        assert parent.level in ALLOWED_PARENT[node.level], node.node_id
        assert parent.doc_id == node.doc_id
        assert parent.start <= node.start <= node.end <= parent.end
        assert parent.order < node.order
        assert node.node_id.startswith(parent.node_id)
        assert (node.title is not None) == (node.level is IndexLevel.SECTION)
    for node in index.nodes.values():
        kids = index.children(node.node_id)
        # Children are in text order and never overlap.
        for a, b in zip(kids, kids[1:]):
            assert a.end <= b.start and a.order < b.order


def test_every_node_is_an_exact_slice_of_its_document(handbook: HierarchicalIndex) -> None:
    check_invariants(handbook)
    assert len(handbook.nodes) == 39


def test_levels_are_counted_as_written(handbook: HierarchicalIndex) -> None:
    counts = {lv: 0 for lv in IndexLevel}
    for node in handbook.nodes.values():
        counts[node.level] += 1
    assert counts == {
        IndexLevel.DOCUMENT: 1,
        IndexLevel.SECTION: 7,
        IndexLevel.PARAGRAPH: 11,
        IndexLevel.SENTENCE: 20,
    }
    assert IndexLevel.SECTION.value == "SECTION"
    assert [lv.value for lv in IndexLevel] == ["DOCUMENT", "SECTION", "PARAGRAPH", "SENTENCE"]


def test_nested_headings_make_nested_sections(handbook: HierarchicalIndex) -> None:
    sections = [
        (n.node_id, n.title, n.parent_id)
        for n in handbook.nodes.values()
        if n.level is IndexLevel.SECTION
    ]
    assert sections == [
        ("handbook#s1", "Working at Acme", "handbook"),
        ("handbook#s1.1", "Hours", "handbook#s1"),
        ("handbook#s1.1.1", "Remote work", "handbook#s1.1"),
        ("handbook#s1.2", "Expenses", "handbook#s1"),
        # "# Appendix #": the closing hashes are not part of the title.
        ("handbook#s2", "Appendix", "handbook"),
        # "####" directly under "#": the nearest enclosing heading is the parent.
        ("handbook#s2.1", "Contacts", "handbook#s2"),
        ("handbook#s2.2", "Glossary", "handbook#s2"),
    ]


def test_a_section_runs_to_the_next_heading_of_its_level_or_higher(handbook: HierarchicalIndex) -> None:
    hours = handbook.node("handbook#s1.1")
    assert hours.content.startswith("## Hours\n\nCore hours")
    # It contains its sub-section and stops before the next "##".
    assert hours.content.endswith("Tell your team in the #general channel.")
    top = handbook.node("handbook#s1")
    assert top.content.endswith("| Meal | $45.50 |")
    assert handbook.node("handbook#s2").content.endswith("Sensor: a device that measures something.")


def test_text_before_the_first_heading_belongs_to_the_document(handbook: HierarchicalIndex) -> None:
    first = handbook.node("handbook/p1")
    assert first.parent_id == "handbook" and first.level is IndexLevel.PARAGRAPH
    assert first.content == "Welcome to the Acme handbook. Read it before your first day."
    assert [c.node_id for c in handbook.children("handbook")] == ["handbook/p1", "handbook#s1", "handbook#s2"]


def test_heading_lines_are_not_paragraphs(handbook: HierarchicalIndex) -> None:
    heading = re.compile(r"^ {0,3}#{1,6}(\s|$)")
    paragraphs = [n for n in handbook.nodes.values() if n.level is IndexLevel.PARAGRAPH]
    assert not [p.node_id for p in paragraphs if heading.match(p.content)]
    # "#nothashtag" has no space after '#', so it is text, not a heading.
    assert handbook.node("handbook#s2/p1").content == "#nothashtag is not a heading either."


def test_a_fenced_code_block_is_one_paragraph_without_sentences(handbook: HierarchicalIndex) -> None:
    code = handbook.node("handbook#s1.2/p3")
    assert code.content == (
        "```python\n"
        "# not a heading: this is a comment\n"
        "def reimburse(amount):\n"
        "\n"
        "    return round(amount, 2)\n"
        "```"
    )
    assert handbook.children(code.node_id) == ()
    assert "not a heading: this is a comment" not in {n.title for n in handbook.nodes.values()}


def test_a_table_is_one_paragraph_without_sentences(handbook: HierarchicalIndex) -> None:
    table = handbook.node("handbook#s1.2/p4")
    assert table.content == "| Item | Limit |\n|------|-------|\n| Meal | $45.50 |"
    assert handbook.children(table.node_id) == ()


def test_list_items_are_single_sentences_after_the_prose_that_leads_in(handbook: HierarchicalIndex) -> None:
    sentences = [n.content for n in handbook.children("handbook#s1.2/p1")]
    assert sentences == [
        "Submit receipts within 30 days.",
        "You get back what you spent, up to the limits below:",
        "- Travel: economy class only. Book through the portal.",
        "- Meals: up to $45.50 per day\n  when travelling for work.",
        "- Hardware: ask IT first.",
    ]
    numbered = [n.content for n in handbook.children("handbook#s1.2/p2")]
    assert numbered == ["1. Photograph the receipt.", "2. Upload it in the expenses app."]


def test_sentences_survive_abbreviations_and_soft_wraps(handbook: HierarchicalIndex) -> None:
    assert [n.content for n in handbook.children("handbook#s1.1/p1")] == [
        "Core hours are 10 a.m. to 4 p.m. local time.",
        "Outside core hours, work when it suits\nyou.",
        "Dr. Rivera approves exceptions, e.g. for night shifts.",
    ]
    assert [n.content for n in handbook.children("handbook#s1/p1")] == [
        "Acme builds weather sensors.",
        "We are 42 people in two offices,\nand most of us work remotely on Fridays.",
    ]


def test_node_ids_follow_the_documented_scheme(handbook: HierarchicalIndex) -> None:
    pattern = re.compile(r"^handbook(#s\d+(\.\d+)*)?(/p\d+(/t\d+)?)?$")
    assert all(pattern.match(i) for i in handbook.nodes)
    assert handbook.node("handbook#s1.1.1/p1/t2").content == "Tell your team in the #general channel."
    assert handbook.node("handbook#s2.1/p1/t1").content == "Email hr@acme.example for anything else."


def test_order_is_reading_order(handbook: HierarchicalIndex) -> None:
    nodes = sorted(handbook.nodes.values(), key=lambda n: n.order)
    assert [n.order for n in nodes] == list(range(len(nodes)))
    # Pre-order: sorting by order is sorting by start with parents before children.
    assert nodes == sorted(nodes, key=lambda n: (n.start, -n.end, n.level is IndexLevel.SENTENCE))
    leaves = [n for n in nodes if not handbook.children(n.node_id)]
    assert [n.start for n in leaves] == sorted(n.start for n in leaves)


def test_order_continues_across_documents() -> None:
    index = HierarchicalIndex()
    first = index.index_document("One. Two.", "a")
    second = index.index_document("Three.", "b")
    assert [index.node(i).order for i in first + second] == list(range(len(first) + len(second)))
    assert [d.node_id for d in index.documents()] == ["a", "b"]


def test_plain_text_has_paragraphs_and_sentences_only() -> None:
    text = "First paragraph here. It has two sentences.\n\n  \n\t\nSecond paragraph.\n"
    index = HierarchicalIndex()
    ids = index.index_document(text, "notes-1")
    assert ids == [
        "notes-1",
        "notes-1/p1",
        "notes-1/p1/t1",
        "notes-1/p1/t2",
        "notes-1/p2",
        "notes-1/p2/t1",
    ]
    assert index.node("notes-1/p2").content == "Second paragraph."
    assert [n.level for n in map(index.node, ids)] == [
        IndexLevel.DOCUMENT, IndexLevel.PARAGRAPH, IndexLevel.SENTENCE, IndexLevel.SENTENCE,
        IndexLevel.PARAGRAPH, IndexLevel.SENTENCE,
    ]
    check_invariants(index)


def test_markdown_false_reads_hashes_and_fences_as_text() -> None:
    index = HierarchicalIndex()
    index.index_document("# Not a heading\n\n```\na\n\nb\n```\n", "plain", markdown=False)
    levels = [n.level for n in index.nodes.values()]
    assert IndexLevel.SECTION not in levels
    assert [n.content for n in index.children("plain")] == ["# Not a heading", "```\na", "b\n```"]
    check_invariants(index)


def test_crlf_line_endings_keep_offsets_exact() -> None:
    text = "Intro line.\r\n\r\n# Head\r\n\r\nBody one.\r\nBody two.\r\n\r\n## Sub\r\nLast.\r\n"
    index = HierarchicalIndex()
    index.index_document(text, "crlf")
    check_invariants(index)
    assert index.node("crlf#s1").title == "Head"
    assert index.node("crlf#s1.1").content == "## Sub\r\nLast."
    assert [n.content for n in index.children("crlf#s1/p1")] == ["Body one.", "Body two."]


def test_an_unclosed_fence_runs_to_the_end_of_the_document() -> None:
    text = "# A\n\ntext\n\n~~~\ncode\n\n# still code\n"
    index = HierarchicalIndex()
    index.index_document(text, "fence")
    assert [n.node_id for n in index.nodes.values() if n.level is IndexLevel.SECTION] == ["fence#s1"]
    assert index.node("fence#s1/p2").content == "~~~\ncode\n\n# still code"
    check_invariants(index)


def test_index_document_returns_new_ids_in_reading_order(handbook: HierarchicalIndex) -> None:
    index = HierarchicalIndex()
    ids = index.index_document(HANDBOOK, "handbook")
    assert ids == list(handbook.nodes)
    assert ids[0] == "handbook"


def test_indexing_is_deterministic() -> None:
    runs = []
    for _ in range(2):
        index = HierarchicalIndex()
        index.index_document(HANDBOOK, "handbook")
        runs.append(list(index.nodes.values()))
    assert runs[0] == runs[1]


def test_children_ancestors_and_documents(handbook: HierarchicalIndex) -> None:
    assert [n.node_id for n in handbook.ancestors("handbook#s1.1.1/p1/t1")] == [
        "handbook#s1.1.1/p1", "handbook#s1.1.1", "handbook#s1.1", "handbook#s1", "handbook",
    ]
    assert handbook.ancestors("handbook") == ()
    assert [n.node_id for n in handbook.children("handbook#s1.1")] == ["handbook#s1.1/p1", "handbook#s1.1.1"]
    assert [d.node_id for d in handbook.documents()] == ["handbook"]
    assert handbook.documents()[0].content == HANDBOOK


def test_unknown_node_is_a_clear_error(handbook: HierarchicalIndex) -> None:
    with pytest.raises(CandidateError) as err:
        handbook.children("handbook#s9")
    assert err.value.code == "index.unknown_node"
    assert err.value.message == "no node 'handbook#s9' in the index (ids look like 'doc-001#s1.2/p3')"


def test_duplicate_doc_id_is_rejected() -> None:
    index = HierarchicalIndex()
    index.index_document("Hello there.", "doc-001")
    before = dict(index.nodes)
    with pytest.raises(CandidateError) as err:
        index.index_document("Other text.", "doc-001")
    assert err.value.code == "index.duplicate_doc"
    assert err.value.path == "$.doc_id"
    assert err.value.message == "document 'doc-001' is already indexed; every document needs a unique doc_id"
    assert index.nodes == before  # nothing half-added


@pytest.mark.parametrize("doc_id", ["", "/a", "a/", "a//b", "a#b", "a b", None])
def test_doc_ids_that_would_make_ambiguous_node_ids_are_rejected(doc_id: object) -> None:
    with pytest.raises(CandidateError) as err:
        HierarchicalIndex().index_document("Text.", doc_id)  # type: ignore[arg-type]
    assert err.value.code == "index.bad_doc_id"
    assert "without '#' or whitespace, and no '/' at its ends or twice in a row" in err.value.message


def test_doc_ids_may_carry_a_path_and_colliding_node_ids_are_rejected() -> None:
    index = HierarchicalIndex()
    assert index.index_document("Text.", "guide/a")[:2] == ["guide/a", "guide/a/p1"]
    before = dict(index.nodes)
    with pytest.raises(CandidateError) as err:
        index.index_document("Other.", "guide/a/p1")
    assert err.value.code == "index.duplicate_node"
    assert err.value.message == ("document 'guide/a/p1' would add node ids the index already has: "
                                 "'guide/a/p1'; give the document another doc_id")
    assert index.nodes == before


def test_empty_and_non_text_documents_are_rejected() -> None:
    index = HierarchicalIndex()
    with pytest.raises(CandidateError) as err:
        index.index_document(" \n\t\n", "blank")
    assert err.value.code == "index.empty_document"
    assert err.value.message == "document 'blank' is empty or only whitespace; skip it instead of indexing it"
    with pytest.raises(CandidateError) as err:
        index.index_document(b"bytes", "raw")  # type: ignore[arg-type]
    assert err.value.code == "index.bad_content"
    assert index.nodes == {}


def test_the_example_corpus_indexes_cleanly() -> None:
    index = HierarchicalIndex()
    for path in sorted(CORPUS.iterdir()):
        index.index_document(path.read_text(encoding="utf-8"), path.stem, markdown=path.suffix == ".md")
    check_invariants(index)
    assert len(index.documents()) >= 4
    # The one code block in data-export.md stays whole, blank line and '#' comments included.
    code = [n for n in index.nodes.values() if n.content.startswith("```bash")]
    assert len(code) == 1 and "# Poll the job" in code[0].content and index.children(code[0].node_id) == ()


_LINES = st.sampled_from([
    "", "", "   ", "# Title", "## Sub", "### Deep", "#tag text", "```", "~~~~",
    "- item one. two.", "1. first", "  continued line", "| a | b |",
    "Plain sentence. Another one!", "Dr. Who paid $3.50 e.g. today", "wrapped line\r",
])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, max_size=25), st.booleans())
def test_invariants_hold_for_any_markdownish_text(lines: list[str], markdown: bool) -> None:
    text = "\n".join(lines) + "x"  # never empty
    index = HierarchicalIndex()
    index.index_document(text, "doc", markdown=markdown)
    check_invariants(index)
    # Sentences tile their paragraph: only whitespace is left between and around them.
    for node in index.nodes.values():
        if node.level is not IndexLevel.PARAGRAPH:
            continue
        kids = index.children(node.node_id)
        if kids:
            covered = "".join(k.content for k in kids)
            assert re.sub(r"\s", "", covered) == re.sub(r"\s", "", node.content)


def test_node_is_frozen() -> None:
    node = Node("d", "d", IndexLevel.DOCUMENT, "x", None, 0, 1, 0)
    with pytest.raises(AttributeError):
        node.content = "y"  # type: ignore[misc]
