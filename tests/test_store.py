"""Tests for engine.retrieval.store and `ctxbudget index build` / `pack --index` (issue 15,
part 1): the persistent index answers as `pack PATH` does, updates incrementally, and
every missing, corrupt, mismatched or stale index is a clear error."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.errors import CandidateError
from engine.retrieval import build as build_mod
from engine.retrieval import store as store_mod
from engine.retrieval.build import build_in_memory
from engine.retrieval.convert import search_rows
from engine.retrieval.search import SemanticSearch
from engine.retrieval.store import FORMAT_VERSION, build_index, load_for_pack, load_index
from packcases import run, write_policy

FIXTURE = Path(__file__).parent / "fixtures" / "corpus15"
QUERIES = ("How do I stop pip from using the cache?", "read the entire contents of a file", "plain notes",
           "gzip guide wheels")


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    shutil.copytree(FIXTURE, docs)
    return docs


def test_a_loaded_index_ranks_exactly_as_the_in_memory_one(corpus: Path, tmp_path: Path) -> None:
    build_index([corpus], tmp_path / "ix")
    loaded = load_for_pack(tmp_path / "ix")
    fresh = build_in_memory([corpus])
    a, b = loaded.searcher(), SemanticSearch(fresh.index)  # type: ignore[misc]
    for q in QUERIES:
        ra, rb = a.search(q, top_k=20), b.search(q, top_k=20)
        assert ra == rb and ra, q
        assert search_rows(ra, loaded.index) == search_rows(rb, fresh.index)
    assert list(loaded.index.nodes) == list(fresh.index.nodes)
    assert list(loaded.index.nodes.values()) == list(fresh.index.nodes.values())
    ix = loaded.index
    assert [d.node_id for d in ix.documents()] == [d.node_id for d in fresh.index.documents()]
    assert ix.children("guide/caching.rst#s1.1") == fresh.index.children("guide/caching.rst#s1.1")
    assert ix.ancestors("guide/caching.rst#s1.1/p1/t1") == fresh.index.ancestors("guide/caching.rst#s1.1/p1/t1")
    with pytest.raises(CandidateError, match="no node 'nope' in the index"):
        ix.node("nope")


def test_the_manifest_records_corpus_files_settings_and_versions(corpus: Path, tmp_path: Path) -> None:
    build_index([corpus], tmp_path / "ix")
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert (m["format"], m["format_version"]) == ("ctxbudget-index", FORMAT_VERSION)
    assert m["engine_version"] and m["roots"] == [str(corpus)]
    caching = next(f for f in m["files"] if f["path"] == "guide/caching.rst")
    data = (corpus / "guide" / "caching.rst").read_bytes()
    assert (caching["size"], caching["sha256"], caching["format"], caching["doc_id"]) == (
        len(data), hashlib.sha256(data).hexdigest(), "rst", "guide/caching.rst")
    assert {f["path"]: f["doc_id"] for f in m["files"]}["empty.md"] is None
    assert sorted(s["path"] for s in m["skipped"]) == ["data.json", "empty.md", "latin1.txt"]
    assert m["settings"]["levels"] == ["SECTION", "PARAGRAPH", "SENTENCE"]
    analysis = m["settings"]["analyzer"]
    assert {"tokenizer", "stopwords", "stemmer", "bm25", "calibration", "probe"} <= set(analysis)
    assert set(analysis["bm25"]) == {"method", "k1", "b"} and analysis["tokenizer"]["library"] == "ctxbudget"
    assert {"cach", "refund", "run", "server", "read", "file"} <= set(analysis["probe"])


def test_regression_pack_index_does_not_reindex_per_query(corpus: Path, tmp_path: Path, monkeypatch: Any,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Every query re-indexed the whole corpus (12-44 s over the Node.js docs)."""
    policy = write_policy(tmp_path)
    code, out_path, _ = run(capsys, "pack", "--policy", policy, "--query", QUERIES[0], str(corpus))
    assert run(capsys, "index", "build", str(corpus), "--out", str(tmp_path / "ix"))[0] == 0

    def no(*_a: Any, **_k: Any) -> None:
        raise AssertionError("pack --index parsed, indexed or tokenized a document")

    for target, name in ((build_mod, "read_document"), (build_mod, "build_in_memory"), (store_mod, "read_document"),
                         (SemanticSearch, "__init__")):
        monkeypatch.setattr(target, name, no)
    code, out, err = run(capsys, "pack", "--policy", policy, "--query", QUERIES[0], "--index", str(tmp_path / "ix"))
    assert code == 0 and out == out_path
    assert "4 files indexed (3 skipped)" in err


def test_pack_index_takes_require_context_and_refuses_hybrid_without_embeddings(corpus: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    policy, ix = write_policy(tmp_path), str(tmp_path / "ix")
    assert run(capsys, "index", "build", str(corpus), "--out", ix)[0] == 0
    code, out, err = run(capsys, "pack", "--policy", policy, "--query", "zebra xylophone", "--index", ix,
                         "--require-context")
    assert code == 8 and "pack.no_context" in err and "no indexed node holds any term of the query" in err
    code, out, err = run(capsys, "pack", "--policy", policy, "--query", "cache", "--index", ix,
                         "--scorer", "hybrid")
    assert code == 2 and out == ""
    assert (f"pack.index_scorer: {ix}: $.scorer: scorer 'hybrid' needs embeddings in the index, and {ix} keeps "
            f"only BM25 state; build it with `ctxbudget index build PATH... --out {ix} --scorer hybrid`") in err
    code, _, err = run(capsys, "pack", "--policy", policy, "--query", "cache", "--index", ix, "--scorer", "bm25")
    assert code == 0 and "search results" in err


def test_incremental_update_parses_only_changed_and_added_files(corpus: Path, tmp_path: Path,
                                                                monkeypatch: Any) -> None:
    first = build_index([corpus], tmp_path / "ix")
    assert (len(first.added), first.changed, first.removed, first.unchanged) == (6, (), (), ())
    (corpus / "notes.txt").write_text("Plain notes, rewritten. Refunds take five days.\n")
    (corpus / "guide" / "new.md").write_text("# New\n\nA new page about refunds.\n")
    (corpus / "api" / "fs.html").unlink()
    parsed: list[str] = []
    real = store_mod.read_document

    def counting(source: Any, doc: str) -> Any:
        parsed.append(source.path)
        return real(source, doc)

    monkeypatch.setattr(store_mod, "read_document", counting)
    report = build_index([corpus], tmp_path / "ix")
    assert parsed == ["guide/new.md", "notes.txt"]
    assert (report.added, report.changed, report.removed) == (("guide/new.md",), ("notes.txt",), ("api/fs.html",))
    assert report.unchanged == ("empty.md", "guide/caching.rst", "guide/intro.md.gz", "latin1.txt")
    loaded, fresh = load_for_pack(tmp_path / "ix"), build_in_memory([corpus])
    assert list(loaded.index.nodes.values()) == list(fresh.index.nodes.values())
    q = "refunds"
    assert loaded.searcher().search(q, top_k=10) == SemanticSearch(fresh.index).search(q, top_k=10)  # type: ignore[misc]
    again = build_index([corpus], tmp_path / "ix")
    assert (again.added, again.changed, again.removed, len(again.unchanged)) == ((), (), (), 6)


def test_index_build_cli_reports_what_changed(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ix = str(tmp_path / "ix")
    code, out, err = run(capsys, "index", "build", str(corpus), "--out", ix)
    assert code == 0 and out == ""
    assert f"index {ix}: 4 documents, " in err and "; 6 added, 0 changed, 0 removed, 0 unchanged; " in err
    assert "skipped 3 file(s): 1 empty, 1 not UTF-8 text, 1 unsupported format" in err
    (corpus / "notes.txt").write_text("Changed.\n")
    code, out, err = run(capsys, "index", "build", str(corpus), "--out", ix, "--verbose")
    assert code == 0 and out == "changed  notes.txt\n"
    assert "0 added, 1 changed, 0 removed, 5 unchanged" in err
    code, out, _ = run(capsys, "index", "build", str(corpus), "--out", ix, "--json")
    data = json.loads(out)
    assert (data["added"], data["changed"], data["removed"], data["unchanged"]) == ([], [], [], 6)
    assert [s["path"] for s in data["skipped"]] == ["empty.md", "latin1.txt", "data.json"]


def test_pack_index_records_the_corpus_as_pack_path_does(corpus: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path, "  budget: {max_tokens: 300}\n  audit: {store_content: true}\n")
    build_index([corpus], tmp_path / "ix")
    recs = []
    for where in ([str(corpus)], ["--index", str(tmp_path / "ix")]):
        log = tmp_path / f"log{len(recs)}.jsonl"
        assert run(capsys, "pack", "--policy", policy, "--query", "cache", *where, "--audit-log", str(log))[0] == 0
        recs.append(json.loads(log.read_text().splitlines()[0]))
    a, b = (r["record"] if "record" in r else r for r in recs)
    assert b["corpus"]["files"] == a["corpus"]["files"]
    assert b["input"]["items"] == a["input"]["items"]


# --------------------------------------------------------------------------- errors


def test_pack_takes_paths_or_an_index(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path)
    for extra in ([], [str(corpus), "--index", str(tmp_path)]):
        code, _, err = run(capsys, "pack", "--policy", policy, "--query", "x", *extra)
        assert code == 2
        assert ("give the files or folders to index (PATH...) or a prebuilt index (--index INDEX), "
                "not both and not neither") in err


def test_a_missing_index_says_how_to_build_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "pack", "--policy", write_policy(tmp_path), "--query", "x", "--index",
                       str(tmp_path / "none"))
    assert code == 2
    assert err == (f"error: index.missing: {tmp_path / 'none'}: $.index: no index at {tmp_path / 'none'}; "
                   f"build it with `ctxbudget index build PATH... --out {tmp_path / 'none'}`\n")


@pytest.mark.parametrize(("damage", "code", "message"), [
    (lambda ix: (ix / "manifest.json").write_text("{not json"), "index.corrupt", "cannot be read as JSON"),
    (lambda ix: (ix / "manifest.json").write_text('{"format": "other"}'), "index.corrupt",
     "is not a ctxbudget index manifest"),
    (lambda ix: (ix / "nodes.npy").write_bytes(b"garbage"), "index.corrupt", "a part of the index cannot be read"),
    (lambda ix: (ix / "manifest.json").unlink(), "index.missing", "is not a ctxbudget index (no manifest.json)"),
], ids=["json", "format", "nodes", "no-manifest"])
def test_a_corrupt_index_is_named_with_the_fix(corpus: Path, tmp_path: Path, damage: Any, code: str,
                                               message: str) -> None:
    ix = tmp_path / "ix"
    build_index([corpus], ix)
    damage(ix)
    with pytest.raises(CandidateError) as err:
        load_index(ix)
    assert err.value.code == code and message in err.value.message
    assert err.value.path == "$.index" and str(err.value.location) == str(ix)
    assert f"`ctxbudget index build PATH... --out {ix}`" in err.value.message


def test_an_index_of_another_format_version_or_analyzer_is_refused_then_rebuilt(
        corpus: Path, tmp_path: Path, monkeypatch: Any) -> None:
    ix = tmp_path / "ix"
    build_index([corpus], ix)
    m = json.loads((ix / "manifest.json").read_text())
    m["format_version"] = FORMAT_VERSION + 1
    (ix / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CandidateError) as err:
        load_index(ix)
    assert err.value.code == "index.version_mismatch"
    assert f"index format {FORMAT_VERSION + 1} (written by ctxbudget" in err.value.message
    report = build_index([corpus], ix)
    assert report.rebuilt_because and report.rebuilt_because.startswith("index.version_mismatch")
    assert len(report.added) == 6
    monkeypatch.setattr(store_mod, "analyzer_settings", lambda: {"stemmer": "snowball-en"})
    with pytest.raises(CandidateError) as err:
        load_index(ix)
    assert err.value.code == "index.settings_mismatch"
    assert "the index was built with other settings (analyzer: " in err.value.message


def test_a_stale_index_names_the_changed_files(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ix = tmp_path / "ix"
    build_index([corpus], ix)
    (corpus / "notes.txt").write_text("Edited after the build.\n")
    (corpus / "guide" / "caching.rst").unlink()
    code, _, err = run(capsys, "pack", "--policy", write_policy(tmp_path), "--query", "cache", "--index", str(ix))
    assert code == 2
    assert (f"index.stale: {ix}: $.index: 2 file(s) changed since the index was built: "
            f"{corpus}/guide/caching.rst (missing), {corpus}/notes.txt (changed); "
            f"update it with `ctxbudget index build {corpus} --out {ix}`") in err


def test_build_never_overwrites_a_folder_that_is_not_an_index(corpus: Path, tmp_path: Path) -> None:
    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(CandidateError) as err:
        build_index([corpus], other)
    assert err.value.code == "index.not_an_index"
    assert err.value.message == (f"{other} exists and is not a ctxbudget index (no manifest.json); give --out a "
                                 "new folder or an existing index; nothing was written")
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_analyze_many_is_the_per_text_analysis(monkeypatch: Any) -> None:
    from engine.retrieval import analyzer
    from engine.retrieval.search import tokenize

    texts = ["How do I stop pip from using the cache?", "", "  ", "Caching: wheels, builds.", "the of and"]
    assert analyzer.analyze_many(texts) == [tokenize(t) if t.strip() else [] for t in texts]
    # camelCase identifiers are split in the batch as in one text alone
    odd = texts + ["see readFileSync and existsSync here"]
    assert analyzer.analyze_many(odd) == [tokenize(t) if t.strip() else [] for t in odd]
    assert {"read", "file", "sync", "exist"} <= set(analyzer.analyze_many(odd)[-1])
    assert analyzer.analyze_many([]) == []


def test_node_terms_are_the_terms_of_each_node_text(corpus: Path) -> None:
    from engine.retrieval.search import tokenize
    from engine.retrieval.store import node_terms

    index = build_in_memory([corpus]).index
    terms = node_terms(index)
    for node in index.nodes.values():
        if node.node_id in terms:
            assert sorted(terms[node.node_id]) == sorted(tokenize(node.content)), node.node_id


def test_an_analysis_that_changes_without_a_setting_is_still_noticed(corpus: Path, tmp_path: Path,
                                                                     monkeypatch: Any) -> None:
    from engine.retrieval import analyzer

    ix = tmp_path / "ix"
    build_index([corpus], ix)
    # The stemmer silently does nothing: no setting names that, the probe's terms change.
    monkeypatch.setattr(analyzer, "_stemmer", lambda language: lambda words: list(words))
    with pytest.raises(CandidateError) as err:
        load_index(ix)
    assert err.value.code == "index.settings_mismatch"
    old, now = err.value.message.split("; now ")
    assert '"probe": ["cach", "refund"' in old and '"probe": ["caching", "refunds"' in now


def test_a_query_against_a_stored_index_reads_postings_without_bm25s(corpus: Path, tmp_path: Path) -> None:
    """pack --index answers from the memory-mapped postings: the query path imports
    neither bm25s nor its progress bars, and makes node objects only for what it returns."""
    import subprocess
    import sys

    ix = tmp_path / "ix"
    build_index([corpus], ix)
    code = ("import sys\n"
            "from engine.retrieval.store import load_for_pack\n"
            f"built = load_for_pack({str(ix)!r})\n"
            "s = built.searcher()\n"
            "hits = s.search('How do I stop pip from using the cache?', top_k=3)\n"
            "assert hits and hits[0].relevance_score > 0, hits\n"
            "assert len(built.index._made) < len(built.index), (len(built.index._made), len(built.index))\n"
            "print(sorted(m for m in ('bm25s', 'tqdm') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_postings_that_do_not_fit_together_are_a_corrupt_index(corpus: Path, tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build_index([corpus], ix)
    terms = ix / "levels" / "PARAGRAPH" / "terms.txt"
    terms.write_text("\n".join(terms.read_text(encoding="utf-8").split("\n")[1:]), encoding="utf-8")
    with pytest.raises(CandidateError) as err:
        load_for_pack(ix).searcher()
    assert err.value.code == "index.corrupt"
    assert "the BM25 state cannot be read" in err.value.message and "do not fit together" in err.value.message
    assert "rebuild it with `ctxbudget index build PATH... --out" in err.value.message


def test_saved_postings_score_bit_for_bit_as_built(tmp_path: Path) -> None:
    from engine.retrieval import bm25

    corpus = [["refund", "annual", "refund"], [], ["plan"], ["annual", "plan", "plan", "zeta"]]
    built = bm25.build(corpus)
    assert built is not None and bm25.build([[], []]) is None
    bm25.save(built, tmp_path)
    loaded = bm25.load(tmp_path)
    assert [loaded.column(t) for t in ("annual", "plan", "refund", "zeta", "nope")] == [0, 1, 2, 3, None]
    assert loaded.holders(1).tolist() == [2, 3] and loaded.df(0) == 2
    for cols in ([0], [1, 2], [2, 1, 0, 3]):
        assert loaded.scores(cols, 1.5, 0.75).tolist() == built.scores(cols, 1.5, 0.75).tolist()
    assert built.scores([2], 1.5, 0.75)[1] == 0.0 and built.avgdl == 2.0


def test_the_stemmer_version_in_the_settings_is_the_installed_distribution_s() -> None:
    """The version is read from the dist-info folder beside the module (no importlib.metadata
    scan per query); it must be the one importlib.metadata reports."""
    from importlib import metadata

    from engine.retrieval.analyzer import DEFAULT_ANALYZER, _version

    assert _version("PyStemmer", "Stemmer") == metadata.version("PyStemmer")
    assert DEFAULT_ANALYZER.settings()["stemmer"]["version"] == metadata.version("PyStemmer")
    assert _version("PyStemmer", "json") == metadata.version("PyStemmer")  # no dist-info there: the fallback


def test_built_postings_are_those_of_the_in_memory_search(corpus: Path) -> None:
    """A build lays terms out as id ranges (no per-node lists); the postings must be
    those SemanticSearch builds from each node's terms with its heading weights."""
    from engine.retrieval import bm25
    from engine.retrieval.search import DEFAULT_ANALYZER, with_headings
    from engine.retrieval.store import _level_states

    (corpus / "guide" / "deep.md").write_text("# Top\n\nIntro words.\n\n## Mid **bold** title\n\nMid text. More "
                                              "text.\n\n### Low\n\n- item one\n- item two readFile\n\n# \n\nUntitled.\n")
    index = build_in_memory([corpus]).index
    states = _level_states(index)
    assert [lv.value for lv, _, _ in states] == ["SECTION", "PARAGRAPH", "SENTENCE"]
    for level, nodes, got in states:
        assert nodes == [n for n in index.nodes.values() if n.level is level]
        terms = [DEFAULT_ANALYZER.terms(n.content) for n in nodes]
        want = bm25.build(with_headings(nodes, terms, index, DEFAULT_ANALYZER))
        assert got is not None and want is not None
        assert list(got.terms._terms) == sorted(want.terms, key=want.terms.__getitem__)
        for name in ("indptr", "indices", "tf", "lengths"):
            assert getattr(got, name).tolist() == getattr(want, name).tolist(), (level, name)
        assert (got.n, got.avgdl) == (want.n, want.avgdl)
