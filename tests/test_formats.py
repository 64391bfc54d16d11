"""Tests for engine.retrieval.formats, corpus and build: real structure from Markdown, RST
and HTML, gzip, ids with the path below the corpus root, and every skipped file reported
(issue 15, part 2). The fixture corpus is tests/fixtures/corpus15."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from engine.errors import CandidateError
from engine.retrieval.build import build_in_memory
from engine.retrieval.corpus import MAX_DOCUMENT_BYTES, SourceFile, decode, doc_ids, walk
from engine.retrieval.formats import format_of, parse_html, parse_markdown, parse_rst
from engine.retrieval.index import HierarchicalIndex, IndexLevel, build_nodes

CORPUS = Path(__file__).parent / "fixtures" / "corpus15"


@pytest.fixture(scope="module")
def built() -> object:
    return build_in_memory([CORPUS])


def texts(index: HierarchicalIndex, doc: str, level: IndexLevel) -> list[str]:
    return [n.content for n in index.nodes.values() if n.doc_id == doc and n.level is level]


def test_format_of_reads_the_suffix_under_gz() -> None:
    assert [format_of(n) for n in ("a.md", "b.RST.gz", "c.htm", "d.txt.gz", "e.json", "f.gz", ".md", "x.md.zip")] \
        == ["markdown", "rst", "html", "text", None, None, None, None]


# --------------------------------------------------------------------------- regressions of issue 15


def test_regression_rst_directives_are_not_indexed_as_text(built: object) -> None:
    """The pip docs gave 35 tokens of RST directives for a question about the cache."""
    index = built.index  # type: ignore[attr-defined]
    doc = "guide/caching.rst"
    every = "\n".join(n.content for n in index.nodes.values() if n.doc_id == doc)
    for markup in (".. ", "versionadded", "code-block", "toctree", ":maxdepth:", "secret-page", ":ref:",
                   "_caching:", "A comment", "=====", "``", ":command:"):
        assert markup not in every, markup
    sections = [(n.node_id, n.title) for n in index.nodes.values() if n.doc_id == doc and n.level is IndexLevel.SECTION]
    assert sections == [(f"{doc}#s1", "Caching"), (f"{doc}#s1.1", "Disabling caching")]
    paragraphs = texts(index, doc, IndexLevel.PARAGRAPH)
    assert paragraphs[1] == "The cache directory is chosen per user."  # a note's text is text
    assert "To stop pip from using the cache, pass --no-cache-dir to any command:" in paragraphs
    assert "$ python -m pip install --no-cache-dir requests" in paragraphs  # code kept whole
    assert "See the configuration guide." in texts(index, doc, IndexLevel.SENTENCE)  # a role keeps its title
    assert index.children(f"{doc}#s1.1/p3")[1].content == "Run pip cache purge to empty it."


def test_regression_gzip_files_are_indexed_not_skipped(built: object) -> None:
    """`.md.gz` files were skipped without a word."""
    index = built.index  # type: ignore[attr-defined]
    assert "guide/intro.md.gz" in index.nodes
    assert index.node("guide/intro.md.gz#s1").title == "Intro"  # a setext heading
    assert index.node("guide/intro.md.gz#s1/p1").content == "The gzip-compressed guide: pip keeps a cache of wheels."
    assert "guide/intro.md.gz" in {r.doc_id for r in built.read}  # type: ignore[attr-defined]


def test_regression_ids_carry_the_path_below_the_corpus_root(built: object) -> None:
    """Ids dropped the folder (`index-4`) and no file path was recorded."""
    docs = [(r.source.path, r.doc_id) for r in built.read]  # type: ignore[attr-defined]
    assert docs == [("api/fs.html", "api/fs.html"), ("empty.md", None), ("guide/caching.rst", "guide/caching.rst"),
                    ("guide/intro.md.gz", "guide/intro.md.gz"), ("latin1.txt", None), ("notes.txt", "notes.txt")]
    assert built.index.node("api/fs.html#s1.1/p2/t1").content == "path: the file name."  # type: ignore[attr-defined]


def test_regression_every_skipped_file_has_its_reason(built: object) -> None:
    reasons = {s.path: s.reason for s in built.skipped}  # type: ignore[attr-defined]
    assert reasons == {
        "empty.md": "empty (only whitespace)",
        "latin1.txt": "not UTF-8 text (byte 3); convert it to UTF-8 first",
        "data.json": "unsupported format (supported: .md, .markdown, .rst, .rest, .html, .htm, .xhtml, .txt, "
                     ".text (each also .gz))",
    }


def test_a_file_past_the_parsers_recursion_limit_is_skipped_with_its_reason(tmp_path: Path) -> None:
    """docutils (and the HTML tree walk) recurse per nesting level: a 400-deep RST block
    quote is the parser's limit, reported as a skipped file; every other error of a
    parser is a bug and propagates (it was caught as "the parser failed")."""
    (tmp_path / "deep.rst").write_text("".join(" " * (2 * i) + f"level {i}\n\n" for i in range(400)))
    (tmp_path / "ok.md").write_text("# Title\n\nSome text.\n")
    built = build_in_memory([tmp_path])
    assert [(s.path, s.reason) for s in built.skipped] == [
        ("deep.rst", "nested too deeply to parse as rst (the parser's recursion limit)")]


def test_a_parser_bug_is_not_a_skipped_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.retrieval.corpus as corpus

    def broken(text: str, fmt: str) -> object:
        raise KeyError("bug")

    monkeypatch.setattr(corpus, "parse", broken)
    (tmp_path / "ok.md").write_text("# Title\n\nSome text.\n")
    with pytest.raises(KeyError):
        build_in_memory([tmp_path])


# --------------------------------------------------------------------------- HTML


def test_html_sections_come_from_headings_and_chrome_is_not_content(built: object) -> None:
    index = built.index  # type: ignore[attr-defined]
    doc = "api/fs.html"
    every = index.node(doc).content
    for chrome in ("Navigation link", "tracking", "color: red", "Copyright footer", "¶", "File system\n#"):
        assert chrome not in every, chrome
    assert [n.title for n in index.nodes.values() if n.doc_id == doc and n.level is IndexLevel.SECTION] \
        == ["File system", "fs.readFile(path)"]
    assert texts(index, doc, IndexLevel.PARAGRAPH) == [
        "The node:fs module enables interacting with the file system. It has callback and promise APIs.",
        "Asynchronously reads the entire contents of a file.",
        "path: the file name.\noptions: an object or a string.",
        "import { readFile } from 'node:fs';\n\nreadFile('/etc/passwd', callback);",
        "Flag | Meaning\nr | read",
        "Loose text in a div.",
    ]
    assert index.children(f"{doc}#s1.1/p3") == () and index.children(f"{doc}#s1.1/p4") == ()


def test_html_without_main_reads_the_body_and_repairs_markup() -> None:
    parsed = parse_html("<p>One <b>bold<p>Two</div><h3>Head</h3>tail text")
    assert parsed.text == "One bold\n\nTwo\n\nHead\n\ntail text"
    assert [(b.heading, b.title) for b in parsed.blocks] == [(0, None), (0, None), (3, "Head"), (0, None)]


# --------------------------------------------------------------------------- Markdown


def test_markdown_structure_comes_from_the_parser() -> None:
    text = ("Title\n=====\n\nBody.\n\n    # indented code\n\n> # quoted heading\n\n- item\n\n  ## in an item\n\n"
            "<!-- YAML\nadded: v1\n-->\n\n<div>\n\n# html block ends at the blank line\n")
    nodes = build_nodes(parse_markdown(text), "d")
    sections = [(n.node_id, n.title) for n in nodes if n.level is IndexLevel.SECTION]
    # setext heading yes; indented code, a quote's or a list item's heading no
    assert sections == [("d#s1", "Title"), ("d#s2", "html block ends at the blank line")]
    assert [n.content for n in nodes if n.parent_id == "d#s1" and n.level is IndexLevel.PARAGRAPH] == [
        "Body.", "# indented code", "> # quoted heading", "- item\n\n  ## in an item", "<div>"]
    for n in nodes:
        assert text[n.start:n.end] == n.content


# --------------------------------------------------------------------------- RST alone


def test_rst_renders_lists_definitions_and_tables_as_blocks() -> None:
    parsed = parse_rst("Top\n===\n\nterm\n   its definition.\n\n#. first\n#. second\n\n.. unknown:: x\n\n   dropped\n")
    assert parsed.text == "Top\n\nterm: its definition.\n\nfirst\nsecond"
    assert [u[0] for u in parsed.blocks[2].units] == ["item", "item"]


# --------------------------------------------------------------------------- reading files


def _source(tmp_path: Path, name: str, data: bytes) -> SourceFile:
    (tmp_path / name).write_bytes(data)
    return SourceFile(str(tmp_path), name, len(data), 0, format_of(name))


def test_decode_gunzips_drops_a_bom_and_normalises_newlines(tmp_path: Path) -> None:
    src = _source(tmp_path, "a.txt.gz", gzip.compress("\ufeffone\r\ntwo\rthree".encode()))
    assert decode(src, (tmp_path / "a.txt.gz").read_bytes()) == "one\ntwo\nthree"


@pytest.mark.parametrize(("data", "reason"), [
    (b"not gzip at all", "not valid gzip (Error -3 while decompressing data: incorrect header check)"),
    (gzip.compress(b"x" * 100, mtime=0)[:-12], "not valid gzip (truncated)"),
    (gzip.compress(b"a\x00b", mtime=0), "binary content (NUL bytes)"),
], ids=["header", "truncated", "nul"])
def test_bad_gzip_is_a_reason_to_skip(tmp_path: Path, data: bytes, reason: str) -> None:
    src = _source(tmp_path, "b.md.gz", data)
    with pytest.raises(ValueError) as err:
        decode(src, data)
    assert str(err.value) == reason


def test_a_gzip_bomb_is_not_read_whole(tmp_path: Path) -> None:
    data = gzip.compress(b" " * (MAX_DOCUMENT_BYTES + 10))
    with pytest.raises(ValueError, match="larger than 64 MiB decompressed"):
        decode(_source(tmp_path, "bomb.txt.gz", data), data)


def test_doc_ids_encode_separators_and_stay_unique_across_roots(tmp_path: Path) -> None:
    files = [SourceFile("/x/one", "my notes#1.md", 1, 0, "markdown"), SourceFile("/x/two", "my notes#1.md", 1, 0, "markdown"),
             SourceFile("/y/two", "my notes#1.md", 1, 0, "markdown")]
    assert doc_ids(files) == ["my%20notes%231.md", "two/my%20notes%231.md", "my%20notes%231.md~2"]


def test_walk_leaves_out_hidden_entries_and_names_missing_paths(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.txt").write_text("ref")
    (tmp_path / ".hidden.md").write_text("x")
    (tmp_path / "a.md").write_text("x")
    found, skipped = walk([tmp_path])
    assert [f.path for f in found] == ["a.md"] and skipped == []
    with pytest.raises(CandidateError) as err:
        walk([tmp_path, tmp_path / "nope"])
    assert (err.value.code, err.value.path) == ("pack.missing_path", "$.paths[1]")
    (tmp_path / "a.md").unlink()
    (tmp_path / "b.json").write_text("{}")
    with pytest.raises(CandidateError) as err:
        walk([tmp_path])
    assert err.value.code == "pack.no_files" and err.value.message.endswith("; 1 other file(s) skipped")
